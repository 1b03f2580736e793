"""Proto conversions both services use: tiers, timestamps, blob locations, token usage and costs."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from convgen.blobs import BlobRef
from convgen.catalog.models import Tier
from convgen.errors import InvalidArgument
from convgen.pricing import CostByKind, TokenUsage
from convgen.v1 import common_pb2

TIER_TO_PROTO: dict[Tier, common_pb2.Tier.ValueType] = {
    Tier.TEMPLATE: common_pb2.TIER_TEMPLATE,
    Tier.SCENARIO: common_pb2.TIER_SCENARIO,
    Tier.EDGE_CASE: common_pb2.TIER_EDGE_CASE,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIER_FROM_PROTO: dict[int, Tier] = {int(v): k for k, v in TIER_TO_PROTO.items()}


def tier_from_proto(field: str, value: int, *, required: bool) -> Tier | None:
    """A Tier from its enum number; unset is an error when required, unknown numbers always are."""
    if value == common_pb2.TIER_UNSPECIFIED:
        if required:
            raise InvalidArgument.for_field(field, "is required (TIER_TEMPLATE, TIER_SCENARIO or TIER_EDGE_CASE)")
        return None
    tier = TIER_FROM_PROTO.get(value)
    if tier is None:
        raise InvalidArgument.for_field(field, f"{value} is not a known Tier")
    return tier


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp, or None."""
    if value is None:
        return None
    # Arithmetic instead of Timestamp.FromDatetime (pure Python, ~4x slower): a 1,000-item page has 2,000 of these.
    # timedelta keeps days floored and seconds/microseconds non-negative, as Timestamp wants.
    delta = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000)


def blob_location(ref: BlobRef) -> common_pb2.BlobLocation:
    """A BlobLocation message."""
    return common_pb2.BlobLocation(bucket=ref.bucket, key=ref.key, uri=ref.uri)


def token_usage(usage: TokenUsage) -> common_pb2.TokenUsage:
    """A TokenUsage message, with the cache writes of each TTL."""
    return common_pb2.TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cache_creation_5m_input_tokens=usage.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens=usage.cache_creation_1h_input_tokens,
    )


def cost_breakdown(cost: CostByKind) -> common_pb2.CostBreakdown:
    """A CostBreakdown message."""
    return common_pb2.CostBreakdown(
        input_usd=float(cost.input),
        output_usd=float(cost.output),
        cache_write_5m_usd=float(cost.cache_write_5m),
        cache_write_1h_usd=float(cost.cache_write_1h),
        cache_read_usd=float(cost.cache_read),
    )
