"""What conversations will cost before any is generated: tokens by kind, realtime and provider-batch prices.

Input tokens come from the model's own count (count_tokens, or the offline model's), taken once for the output
contract and once per template (a tokens-per-character ratio for its renderings). Which calls read the shared
prompt prefixes from the cache follows from the generation order and the concurrency: a call reads a prefix only
when an earlier call with it has answered, i.e. started at least `concurrency` calls before it (and only when the
prefix reaches the model's minimum cacheable length). Output tokens are the average of the template's recent
stored conversations made by the model, or a stated default before there are any.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from convgen.catalog import repository
from convgen.catalog.models import GenerationParameters, PromptTemplate
from convgen.catalog.templates import RenderedTemplate, render
from convgen.db.database import Database
from convgen.pricing import Cost, PriceTable, TokenUsage
from generation_service.catalog_cache import resolve
from generation_service.conversation_format import SYSTEM_PROMPT
from generation_service.model.port import CacheTtl, ModelClient
from generation_service.store import conversations

# Output sizes are averaged over this many of a template's newest conversations.
RECENT_CONVERSATIONS = 200
# A reservation allows for a reply this much longer than the longest one seen.
RESERVATION_MARGIN = Decimal("1.1")
_EMPTY_USER = "."


@dataclass(frozen=True)
class TemplateOutput:
    """The output size assumed for one template's conversations, and how many stored ones it comes from."""

    template_name: str
    output_tokens: int
    observed: int


@dataclass(frozen=True)
class ConversationsEstimate:
    """The estimate of a set of conversations, and what each should reserve of a budget (empty: cost unknown)."""

    items: int
    model: str
    usage: TokenUsage
    cost: Cost
    batch_cost: Cost
    output_basis: list[TemplateOutput]
    reservations: list[Decimal]


@dataclass(frozen=True)
class EstimatorConfig:
    """What estimates need from the settings."""

    prices: PriceTable
    cache_ttl: CacheTtl
    default_output_tokens: int


@dataclass(frozen=True)
class _Prompt:
    """One conversation's prompt, by the parts that cache differently."""

    template: PromptTemplate
    shared_key: tuple[uuid.UUID, str]
    rendered: RenderedTemplate


class ConversationEstimator:
    """Estimates sets of conversations without calling the model for anything but token counts."""

    def __init__(self, db: Database, model: ModelClient, config: EstimatorConfig) -> None:
        self._db = db
        self._model = model
        self._config = config

    async def estimate(self, parameters: Sequence[GenerationParameters], *, concurrency: int) -> ConversationsEstimate:
        """The estimate of generating these conversations in this order, `concurrency` at a time."""
        async with self._db.connection() as conn:
            snapshot = await repository.snapshot(conn)
        prompts = []
        for p in parameters:
            subject, template = resolve(snapshot, p)
            rendered = render(template, subject)
            prompts.append(_Prompt(template, (template.id, rendered.shared), rendered))
        templates = {p.template.id: p.template for p in prompts}
        async with self._db.connection() as conn:
            stats = await conversations.output_stats(
                conn, self._model.name, list(templates), recent=RECENT_CONVERSATIONS
            )
        contract = await self._model.count_tokens(SYSTEM_PROMPT, _EMPTY_USER)
        ratios = await self._tokens_per_character(prompts, contract)
        price = self._config.prices.price_of(self._model.name)
        minimum = price.min_cacheable_tokens if price is not None else 0
        basis = {
            template_id: _output_basis(template, stats.get(template_id), self._config.default_output_tokens)
            for template_id, template in templates.items()
        }
        first_of_group: dict[tuple[uuid.UUID, str], int] = {}
        total = TokenUsage()
        reservations: list[Decimal] = []
        for index, prompt in enumerate(prompts):
            first = first_of_group.setdefault(prompt.shared_key, index)
            ratio = ratios[prompt.template.id]
            shared = round(len(prompt.rendered.shared) * ratio)
            topic = round(len(prompt.rendered.topic) * ratio)
            output = basis[prompt.template.id]
            usage = self._usage(
                contract,
                shared,
                topic,
                output.output_tokens,
                minimum=minimum,
                reads_contract=index >= concurrency,
                reads_shared=first <= index - concurrency,
            )
            total += usage
            reserved = self._usage(
                contract,
                shared,
                topic,
                _reserved_output(stats.get(prompt.template.id), self._config.default_output_tokens),
                minimum=minimum,
                reads_contract=False,
                reads_shared=False,
            )
            cost = self._config.prices.cost(self._model.name, reserved)
            if cost.usd is not None:
                reservations.append(cost.usd)
        realtime = self._config.prices.cost(self._model.name, total)
        batch = self._config.prices.cost(self._model.name, dataclasses.replace(total, service_tier="batch"))
        return ConversationsEstimate(
            items=len(prompts),
            model=self._model.name,
            usage=total,
            cost=realtime,
            batch_cost=batch,
            output_basis=sorted(basis.values(), key=lambda b: b.template_name),
            reservations=reservations if realtime.known else [],
        )

    async def _tokens_per_character(self, prompts: Sequence[_Prompt], contract: int) -> dict[uuid.UUID, float]:
        """Per template, the model's tokens per character of its rendered text, counted on its first prompt."""
        ratios: dict[uuid.UUID, float] = {}
        for prompt in prompts:
            if prompt.template.id in ratios:
                continue
            text = prompt.rendered.shared + prompt.rendered.topic
            counted = await self._model.count_tokens(SYSTEM_PROMPT, text)
            ratios[prompt.template.id] = max(0, counted - contract) / max(1, len(text))
        return ratios

    def _usage(
        self,
        contract: int,
        shared: int,
        topic: int,
        output: int,
        *,
        minimum: int,
        reads_contract: bool,
        reads_shared: bool,
    ) -> TokenUsage:
        """One call's tokens by kind, following the API's cache rules for the two breakpoints."""
        first_cached = contract >= minimum
        second_cached = contract + shared >= minimum
        if reads_shared and second_cached:
            read, written = contract + shared, 0
        elif reads_contract and first_cached:
            read, written = contract, shared
        else:
            read, written = 0, (contract + shared if second_cached else 0)
        one_hour = self._config.cache_ttl == "1h"
        return TokenUsage(
            input_tokens=contract + shared + topic - read - written,
            output_tokens=output,
            cache_creation_5m_input_tokens=0 if one_hour else written,
            cache_creation_1h_input_tokens=written if one_hour else 0,
            cache_read_input_tokens=read,
        )


def _output_basis(template: PromptTemplate, stats: conversations.OutputStats | None, default: int) -> TemplateOutput:
    if stats is None or stats.conversations == 0:
        return TemplateOutput(template.template_name, default, 0)
    return TemplateOutput(template.template_name, round(stats.average), stats.conversations)


def _reserved_output(stats: conversations.OutputStats | None, default: int) -> int:
    """Output tokens a budget reserves: a little over the longest reply seen, or the default."""
    if stats is None or stats.conversations == 0:
        return default
    return math.ceil(Decimal(stats.largest) * RESERVATION_MARGIN)
