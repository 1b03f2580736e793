"""Timestamps: the arithmetic conversion agrees with protobuf's own FromDatetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from convgen.rpc.convert import timestamp


def _reference(value: datetime) -> timestamp_pb2.Timestamp:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    return expected


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_aware_datetimes_convert_like_from_datetime(value: datetime) -> None:
    assert timestamp(value) == _reference(value)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_naive_datetimes_are_utc_like_from_datetime(value: datetime) -> None:
    assert timestamp(value) == _reference(value)


def test_before_the_epoch_nanos_stay_non_negative() -> None:
    converted = timestamp(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC))
    assert (converted.seconds, converted.nanos) == (-1, 500_000_000)


def test_none_stays_none() -> None:
    assert timestamp(None) is None
