"""Template auto-selection: the one rule both services apply when a request names no template."""

from __future__ import annotations

from collections.abc import Iterable

from convgen.catalog.models import PromptTemplate, Tier


def select_template(templates: Iterable[PromptTemplate], arc_key: str, tier: Tier) -> PromptTemplate | None:
    """An active template of the arc and tier, else an active one of the arc alone; the first by name."""
    candidates = sorted(
        (t for t in templates if t.active and t.arc_key == arc_key),
        key=lambda t: (t.tier != tier, t.template_name),
    )
    return candidates[0] if candidates else None
