"""5-minute event-time windows: `normalize`'s window_start and `metrics.windows` helpers.

The expected window is computed independently with plain datetime arithmetic.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
from typing import Final

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymetrics.decode import Rejects, decode
from paymetrics.events import PaymentEvent
from paymetrics.metrics.windows import floor_to_window, from_epoch_us, to_epoch_us
from paymetrics.normalize import WINDOW_SECONDS, normalize

UTC: Final = dt.UTC
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)
# keep the UTC instant (and its window) inside years 1..9999 whatever the offset
LOW: Final = dt.datetime(1, 1, 2)  # noqa: DTZ001 - st.datetimes bounds are naive
HIGH: Final = dt.datetime(9999, 12, 30, 23, 59, 59, 999999)  # noqa: DTZ001

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
aware = st.datetimes(min_value=LOW, max_value=HIGH, timezones=offsets)


def expected_window(value: dt.datetime) -> dt.datetime:
    """The UTC instant floored to 5 minutes, by datetime arithmetic only."""
    u = value.astimezone(UTC)
    return u.replace(minute=u.minute - u.minute % 5, second=0, microsecond=0)


def event(occurred_at: dt.datetime, i: int = 0) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"e{i}",
        event_type="authorization",
        transaction_id="t",
        occurred_at=occurred_at,
        merchant_id="m",
        amount_minor=1,
        currency="USD",
        status="approved",
        payment_method="card",
    )


def windows_of(values: list[dt.datetime]) -> list[dt.datetime]:
    n = len(values)
    table = normalize(
        [event(v, i) for i, v in enumerate(values)],
        np.arange(n, dtype=np.int64),
        np.arange(1, n + 1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )
    return table["window_start"].to_pylist()


def windows_of_text(texts: list[str]) -> list[dt.datetime]:
    """Through the decoder, as a real message would go."""
    base = {
        "event_id": "e",
        "event_type": "capture",
        "transaction_id": "t",
        "merchant_id": "m",
        "amount_minor": 1,
        "currency": "USD",
        "status": "approved",
        "payment_method": "card",
    }
    messages = [json.dumps({**base, "occurred_at": t}).encode() for t in texts]
    rejects = Rejects()
    sizes = [len(m) for m in messages]
    if "bad_utf8" in inspect.signature(decode).parameters:
        from paymetrics.decode import as_text

        decoded = decode(messages, sizes, as_text(messages)[1], rejects)
    else:  # the earlier signature
        decoded = decode(messages, sizes, rejects)
    assert len(rejects) == 0, rejects.message
    n = len(messages)
    table = normalize(
        decoded.events,
        decoded.index,
        np.arange(1, n + 1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )
    return table["window_start"].to_pylist()


def test_window_is_five_minutes() -> None:
    assert WINDOW_SECONDS == 300


@settings(max_examples=150, deadline=None)
@given(values=st.lists(aware, min_size=1, max_size=20))
def test_window_start_is_utc_instant_floored_to_5_minutes(values: list[dt.datetime]) -> None:
    got = windows_of(values)
    for value, window in zip(values, got, strict=True):
        assert window == expected_window(value)
        assert window.utcoffset() == dt.timedelta(0)
        assert to_epoch_us(window) % (300 * 1_000_000) == 0
        assert window <= value < window + dt.timedelta(minutes=5)


@settings(max_examples=120, deadline=None)
@given(value=aware, other=offsets)
def test_same_instant_in_two_offsets_same_window(value: dt.datetime, other: dt.timezone) -> None:
    moved = value.astimezone(other)
    assert moved == value
    assert windows_of([value, moved]) == [expected_window(value)] * 2
    texts = [value.isoformat(), moved.isoformat()]
    assert windows_of_text(texts) == [expected_window(value)] * 2


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("2024-03-01T12:04:59.999999Z", (2024, 3, 1, 12, 0)),
        ("2024-03-01T12:05:00Z", (2024, 3, 1, 12, 5)),
        ("2024-03-01T13:04:05.123+01:00", (2024, 3, 1, 12, 0)),
        ("2023-12-31T23:59:59.999999Z", (2023, 12, 31, 23, 55)),
        ("2024-01-01T00:00:00Z", (2024, 1, 1, 0, 0)),
        ("2024-01-01T00:00:00+00:01", (2023, 12, 31, 23, 55)),
        ("2023-12-31T23:58:00-00:03", (2024, 1, 1, 0, 0)),
        ("2024-01-01T05:29:59+05:30", (2023, 12, 31, 23, 55)),
        ("2023-12-31T14:00:00-14:00", (2024, 1, 1, 4, 0)),
        ("2024-01-01T13:59:59+14:00", (2023, 12, 31, 23, 55)),
        ("2024-02-29T23:57:00-00:05", (2024, 3, 1, 0, 0)),
        ("1970-01-01T00:00:00Z", (1970, 1, 1, 0, 0)),
        ("1969-12-31T23:59:59.999999Z", (1969, 12, 31, 23, 55)),
        ("1970-01-01T00:02:00+00:03", (1969, 12, 31, 23, 55)),
        ("1969-12-31T23:55:00Z", (1969, 12, 31, 23, 55)),
        ("1969-12-31T23:54:59.999999Z", (1969, 12, 31, 23, 50)),
        ("1900-03-01T00:02:00+00:03", (1900, 2, 28, 23, 55)),
        ("1066-10-14T09:03:00Z", (1066, 10, 14, 9, 0)),
        ("0001-01-02T00:00:00+14:00", (1, 1, 1, 10, 0)),
        ("9999-12-30T23:59:59-14:00", (9999, 12, 31, 13, 55)),
    ],
)
def test_window_boundaries(text: str, window: tuple[int, ...]) -> None:
    assert windows_of_text([text]) == [dt.datetime(*window, tzinfo=UTC)]


def test_occurred_at_stored_in_utc() -> None:
    n = 1
    value = dt.datetime(2024, 1, 1, 5, 29, 59, 5, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    table = normalize(
        [event(value)], np.zeros(n, np.int64), np.ones(n, np.int64), np.zeros(n, np.int64)
    )
    assert table["occurred_at"].to_pylist() == [
        dt.datetime(2023, 12, 31, 23, 59, 59, 5, tzinfo=UTC)
    ]


# --------------------------------------------------------------------------- helpers

MIN_US: Final = to_epoch_us(dt.datetime(1, 1, 1, tzinfo=UTC))
MAX_US: Final = to_epoch_us(dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(us=st.lists(st.integers(MIN_US, MAX_US), max_size=30))
def test_floor_to_window_matches_datetime_arithmetic(us: list[int]) -> None:
    got = floor_to_window(np.asarray(us, dtype=np.int64), 300)
    assert got.dtype == np.int64
    for value, start in zip(us, got.tolist(), strict=True):
        instant = EPOCH + dt.timedelta(microseconds=value)
        expected = expected_window(instant)
        assert start == (expected - EPOCH) // dt.timedelta(microseconds=1)


@pytest.mark.parametrize("seconds", [1, 60, 300, 3600, 86400])
@settings(max_examples=50, deadline=None)
@given(us=st.integers(MIN_US, MAX_US))
def test_floor_to_window_any_width(seconds: int, us: int) -> None:
    start = int(floor_to_window(np.array([us], dtype=np.int64), seconds)[0])
    width = seconds * 1_000_000
    assert start % width == 0
    assert start <= us < start + width


@settings(max_examples=300, deadline=None)
@given(value=st.datetimes(min_value=LOW, max_value=HIGH, timezones=offsets))
def test_to_from_epoch_us_round_trip(value: dt.datetime) -> None:
    us = to_epoch_us(value)
    assert us == (value - EPOCH) // dt.timedelta(microseconds=1)
    back = from_epoch_us(us)
    assert back == value
    assert back.utcoffset() == dt.timedelta(0)
    assert to_epoch_us(back) == us


@settings(max_examples=200, deadline=None)
@given(us=st.integers(MIN_US, MAX_US))
def test_from_to_epoch_us_round_trip(us: int) -> None:
    assert to_epoch_us(from_epoch_us(us)) == us


@pytest.mark.parametrize(
    ("value", "us"),
    [
        (dt.datetime(1970, 1, 1, tzinfo=UTC), 0),
        (dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -1),
        (dt.datetime(1970, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), 0),
        (dt.datetime(2024, 3, 1, 12, tzinfo=UTC), 1_709_294_400_000_000),
    ],
)
def test_to_epoch_us_known_values(value: dt.datetime, us: int) -> None:
    assert to_epoch_us(value) == us
    assert from_epoch_us(us) == value


def test_to_epoch_us_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_epoch_us(dt.datetime(2024, 3, 1, 12))  # noqa: DTZ001 - naive on purpose
