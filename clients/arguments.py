"""Request arguments the client accepts loosely: enum names or numbers, mappings for messages."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeAlias

from clients.errors import ConvgenRpcError
from convgen.catalog.models import NIL_UUID as _NIL
from convgen.v1 import batch_pb2, common_pb2

# As a template_id: auto-select the template by arc and tier.
NIL_UUID = str(_NIL)

# Enum arguments: the generated value (an int) or its name, full (TIER_EDGE_CASE) or short (edge_case).
TierLike: TypeAlias = int | str
JobStateLike: TypeAlias = int | str
ItemStateLike: TypeAlias = int | str
ErrorPolicyLike: TypeAlias = int | str


def _enum(enum: Any, prefix: str, field_name: str, value: int | str, aliases: Mapping[str, str] | None = None) -> int:
    """An enum number from its number, full name or short lower-case name (e.g. 'edge_case', 'edge-case')."""
    if isinstance(value, int):
        if value not in enum.values():
            raise ConvgenRpcError.invalid_argument(field_name, f"{value} is not a valid {enum.DESCRIPTOR.name}")
        return value
    name = value.strip().lower().replace("-", "_")
    name = (aliases or {}).get(name, name)
    full = name.upper() if name.upper().startswith(prefix) else prefix + name.upper()
    names: list[str] = list(enum.keys())
    if full not in names or full.endswith("_UNSPECIFIED"):
        choices = ", ".join(k.removeprefix(prefix).lower() for k in names if not k.endswith("_UNSPECIFIED"))
        raise ConvgenRpcError.invalid_argument(field_name, f"{value!r} is not one of {choices}")
    number: int = enum.Value(full)
    return number


def tier_value(value: TierLike, field_name: str = "tier") -> common_pb2.Tier.ValueType:
    """A Tier from TIER_* or 'template' / 'scenario' / 'edge_case'."""
    return common_pb2.Tier.ValueType(_enum(common_pb2.Tier, "TIER_", field_name, value))


def job_state_value(value: JobStateLike, field_name: str = "state") -> batch_pb2.BatchJobState.ValueType:
    """A BatchJobState from BATCH_JOB_STATE_* or 'queued' / 'running' (or 'processing') / 'failed' / ..."""
    number = _enum(batch_pb2.BatchJobState, "BATCH_JOB_STATE_", field_name, value, {"processing": "running"})
    return batch_pb2.BatchJobState.ValueType(number)


def item_state_value(value: ItemStateLike, field_name: str = "state") -> batch_pb2.BatchItemState.ValueType:
    """A BatchItemState from BATCH_ITEM_STATE_* or 'queued' / 'processing' / 'completed' / 'failed' / 'cancelled'."""
    number = _enum(batch_pb2.BatchItemState, "BATCH_ITEM_STATE_", field_name, value, {"running": "processing"})
    return batch_pb2.BatchItemState.ValueType(number)


def error_policy_value(value: ErrorPolicyLike, field_name: str = "error_policy") -> batch_pb2.ErrorPolicy.ValueType:
    """An ErrorPolicy from ERROR_POLICY_* or 'continue' / 'stop_on_failure'."""
    number = _enum(batch_pb2.ErrorPolicy, "ERROR_POLICY_", field_name, value, {"stop": "stop_on_failure"})
    return batch_pb2.ErrorPolicy.ValueType(number)


def generation_parameters(
    *,
    persona_id: str,
    emotional_arc_id: str,
    training_topic_id: str,
    tier: TierLike,
    template_id: str = "",
    field_name: str = "parameters",
) -> common_pb2.GenerationParameters:
    """One parameter set; an empty template_id auto-selects a template by arc and tier."""
    return common_pb2.GenerationParameters(
        persona_id=persona_id,
        emotional_arc_id=emotional_arc_id,
        training_topic_id=training_topic_id,
        tier=tier_value(tier, f"{field_name}.tier"),
        template_id=template_id,
    )


def as_parameters(value: common_pb2.GenerationParameters | Mapping[str, Any], index: int) -> Any:
    if isinstance(value, common_pb2.GenerationParameters):
        return value
    return generation_parameters(field_name=f"parameters[{index}]", **dict(value))


def as_combination(value: batch_pb2.Combination | Mapping[str, Any]) -> batch_pb2.Combination:
    if isinstance(value, batch_pb2.Combination):
        return value
    fields = dict(value)
    tier = fields.pop("tier", None)
    combination = batch_pb2.Combination(**fields)
    if tier is not None:
        combination.tier = tier_value(tier, "combination.tier")
    return combination


def is_uuid(value: str) -> bool:
    """True when value parses as a UUID."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
