"""Checks that the cached prompt prefixes are long enough to be cached at all, and warns naming the template.

Below the model's minimum cacheable length the API caches nothing and says nothing: every call then pays the
whole prompt at the input price. The check runs at start and whenever the catalog changes, on the prefixes the
calls put cache breakpoints after: the output contract alone, and the contract with a template's shared part.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from convgen.catalog.models import ConversationSubject, PromptTemplate
from convgen.catalog.repository import CatalogSnapshot
from convgen.catalog.templates import render
from convgen.errors import ConvgenError
from convgen.pricing import PriceTable
from generation_service.conversation_format import SYSTEM_PROMPT
from generation_service.model.port import ModelClient

logger = logging.getLogger(__name__)

CONTRACT = "the output contract (system prompt)"
# The smallest user message count_tokens accepts, to count the system prompt alone.
_EMPTY_USER = "."


@dataclass(frozen=True)
class ShortPrefix:
    """A cached prefix shorter than the model caches: what it is, its length and the model's minimum."""

    prefix: str
    tokens: int
    minimum: int


class CachePrefixCheck:
    """Counts each cached prefix (count_tokens, or the offline model's own count) against the model's minimum."""

    def __init__(self, model: ModelClient, prices: PriceTable) -> None:
        self._model = model
        self._prices = prices
        self._checked: dict[str, str] = {}
        self.short: dict[str, ShortPrefix] = {}

    async def check(self, snapshot: CatalogSnapshot) -> list[ShortPrefix]:
        """Checks the contract and every active template not checked yet in its current text; warns per short one."""
        price = self._prices.price_of(self._model.name)
        if price is None:
            logger.warning(
                "model %s is not in price table %s: its minimum cacheable prompt length is unknown, so the cached "
                "prefixes are not checked",
                self._model.name,
                self._prices.version,
            )
            return []
        found: list[ShortPrefix] = []
        try:
            if CONTRACT not in self._checked:
                found += await self._check_prefix(CONTRACT, "", price.min_cacheable_tokens)
            for template in sorted(snapshot.templates.values(), key=lambda t: t.template_name):
                shared = _shortest_shared_part(template, snapshot)
                if shared is None or not template.active:
                    continue
                label = f"template {template.template_name!r}"
                if self._checked.get(label) == _digest(shared):
                    continue
                found += await self._check_prefix(label, shared, price.min_cacheable_tokens)
        except ConvgenError as error:
            logger.warning("could not check the cached prompt prefixes against the model's minimum: %s", error.message)
        return found

    async def _check_prefix(self, label: str, shared: str, minimum: int) -> list[ShortPrefix]:
        tokens = await self._model.count_tokens(SYSTEM_PROMPT, shared or _EMPTY_USER)
        self._checked[label] = _digest(shared)
        if tokens >= minimum:
            self.short.pop(label, None)
            return []
        short = ShortPrefix(label, tokens, minimum)
        self.short[label] = short
        what = label if label == CONTRACT else f"the output contract with {label}'s shared part"
        logger.warning(
            "prompt caching will not work for %s: that prefix is %d tokens, and model %s caches prefixes of at "
            "least %d tokens (below that the API caches nothing and says nothing); lengthen it",
            what,
            tokens,
            self._model.name,
            minimum,
            extra={"template": label},
        )
        return [short]


def _shortest_shared_part(template: PromptTemplate, snapshot: CatalogSnapshot) -> str | None:
    """The template's shared part rendered for the persona that makes it shortest (the prefix that matters)."""
    arc = next((a for a in snapshot.arcs.values() if a.arc_key == template.arc_key), None)
    topic = next(iter(snapshot.topics.values()), None)
    if arc is None or topic is None or not snapshot.personas:
        return None
    try:
        renderings = [
            render(template, ConversationSubject(persona, arc, topic, template.tier)).shared
            for persona in snapshot.personas.values()
        ]
    except ConvgenError as error:
        logger.warning("template %r cannot be rendered: %s", template.template_name, error.message)
        return None
    return min(renderings, key=len)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
