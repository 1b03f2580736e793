"""Template auto-selection, the one rule both services apply: arc and tier first, then the arc alone, by name."""

from __future__ import annotations

import uuid

from convgen.catalog.models import PromptTemplate, Tier
from convgen.catalog.selection import select_template


def template(name: str, arc_key: str, tier: Tier, *, active: bool = True) -> PromptTemplate:
    return PromptTemplate(uuid.uuid4(), name, tier, arc_key, "text", (), active)


def test_an_active_template_of_the_arc_and_tier_wins_over_the_arc_alone() -> None:
    templates = [template("a_template", "fear", Tier.TEMPLATE), template("b_scenario", "fear", Tier.SCENARIO)]
    assert select_template(templates, "fear", Tier.SCENARIO) is templates[1]
    assert select_template(templates, "fear", Tier.TEMPLATE) is templates[0]


def test_without_one_at_the_tier_the_first_of_the_arc_by_name_is_used() -> None:
    templates = [template("z_scenario", "fear", Tier.SCENARIO), template("m_template", "fear", Tier.TEMPLATE)]
    assert select_template(templates, "fear", Tier.EDGE_CASE) is templates[1]


def test_inactive_templates_and_other_arcs_are_never_chosen() -> None:
    templates = [
        template("a_edge", "crisis", Tier.EDGE_CASE, active=False),
        template("b_edge", "hostility", Tier.EDGE_CASE),
    ]
    assert select_template(templates, "crisis", Tier.EDGE_CASE) is None
    assert select_template([*templates, template("c_template", "crisis", Tier.TEMPLATE)], "crisis", Tier.EDGE_CASE)
