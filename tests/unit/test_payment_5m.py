"""`paymetrics.metrics.payment_5m.aggregate`: hand-computed rows, and additivity.

Additivity (aggregate(a ++ b) = aggregate(a) + aggregate(b), per key) is what makes
the database upsert exact whatever the batch boundaries.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Final

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from paymetrics.metrics.payment_5m import (
    COUNT_COLUMNS,
    KEY_COLUMNS,
    aggregate,
    dimensions_key,
)
from paymetrics.metrics.sketch import ZERO_BUCKET, bucket_indices
from paymetrics.normalize import NORMALIZED_SCHEMA

UTC: Final = dt.UTC
W1: Final = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
W2: Final = dt.datetime(2024, 3, 1, 12, 5, tzinfo=UTC)
W0: Final = dt.datetime(1969, 12, 31, 23, 55, tzinfo=UTC)


def event(
    window: dt.datetime,
    merchant: str,
    method: str,
    currency: str,
    event_type: str,
    status: str,
    amount: int,
    latency: float | None = None,
) -> dict[str, object]:
    return {
        "event_id": None,  # filled in by `table`
        "event_type": event_type,
        "transaction_id": "t",
        "occurred_at": window + dt.timedelta(seconds=17),
        "merchant_id": merchant,
        "amount_minor": amount,
        "currency": currency,
        "status": status,
        "payment_method": method,
        "decline_code": "unknown" if status == "declined" else None,
        "card_network": None,
        "latency_ms": latency,
        "country": None,
        "channel": None,
        "customer_id": None,
        "schema_version": "1",
        "pan_exposure": False,
        "window_start": window,
        "source_position": 0,
        "message_index": 0,
    }


def table(rows: list[dict[str, object]]) -> pa.Table:
    full = [
        {**row, "event_id": f"e{i}", "source_position": i + 1, "message_index": i}
        for i, row in enumerate(rows)
    ]
    return pa.Table.from_pylist(full, schema=NORMALIZED_SCHEMA)


def dims(merchant: str, method: str, currency: str) -> str:
    return f'{{"currency":"{currency}","merchant_id":"{merchant}","payment_method":"{method}"}}'


def expected_row(
    window: dt.datetime, merchant: str, method: str, currency: str, **counts: object
) -> dict[str, object]:
    row: dict[str, object] = {
        "window_start": window,
        "merchant_id": merchant,
        "payment_method": method,
        "currency": currency,
    }
    row |= {name: 0 for name in COUNT_COLUMNS}
    row |= {"latency_max_ms": None}
    row |= counts
    row["dimensions"] = dims(merchant, method, currency)
    return row


HAND_BUILT: Final = [
    # W1, m1, card, USD: every event type and status
    event(W1, "m1", "card", "USD", "authorization", "approved", 100, 10.0),
    event(W1, "m1", "card", "USD", "authorization", "declined", 50, 20.0),
    event(W1, "m1", "card", "USD", "authorization", "error", 70),
    event(W1, "m1", "card", "USD", "capture", "approved", 90, 999.0),  # latency: auth only
    event(W1, "m1", "card", "USD", "capture", "declined", 40, 888.0),
    event(W1, "m1", "card", "USD", "capture", "error", 30),
    event(W1, "m1", "card", "USD", "refund", "approved", 25),
    event(W1, "m1", "card", "USD", "refund", "declined", 5),
    event(W1, "m1", "card", "USD", "refund", "error", 6),
    event(W1, "m1", "card", "USD", "chargeback", "approved", 60),
    event(W1, "m1", "card", "USD", "chargeback", "error", 7),
    event(W1, "m1", "card", "USD", "chargeback", "declined", 8),
    event(W1, "m1", "card", "USD", "authorization", "approved", 1000, 15.0),
    # other keys
    event(W2, "m1", "card", "USD", "authorization", "approved", 10, 30.0),
    event(W1, "m1", "wallet", "USD", "authorization", "approved", 200, 5.0),
    event(W1, "m1", "card", "EUR", "authorization", "approved", 300),
    event(W2, "m0", "card", "USD", "authorization", "approved", 1, 0.0),
    event(W2, "m0", "card", "USD", "capture", "error", 1),
    event(W0, "m9", "bnpl", "JPY", "refund", "approved", 10**15),
]

EXPECTED_ROWS: Final = [
    expected_row(W0, "m9", "bnpl", "JPY", refunds=1, refunded_amount_minor=10**15),
    expected_row(W1, "m1", "card", "EUR", authorizations=1, approved=1, approved_amount_minor=300),
    expected_row(
        W1,
        "m1",
        "card",
        "USD",
        authorizations=4,
        approved=2,
        declined=1,
        errors=1,
        approved_amount_minor=1100,
        captures=1,
        captured_amount_minor=90,
        refunds=1,
        refunded_amount_minor=25,
        chargebacks=1,
        chargeback_amount_minor=60,
        latency_max_ms=20.0,
    ),
    expected_row(
        W1,
        "m1",
        "wallet",
        "USD",
        authorizations=1,
        approved=1,
        approved_amount_minor=200,
        latency_max_ms=5.0,
    ),
    expected_row(
        W2,
        "m0",
        "card",
        "USD",
        authorizations=1,
        approved=1,
        approved_amount_minor=1,
        latency_max_ms=0.0,
    ),
    expected_row(
        W2,
        "m1",
        "card",
        "USD",
        authorizations=1,
        approved=1,
        approved_amount_minor=10,
        latency_max_ms=30.0,
    ),
]


def b(value: float) -> int:
    return int(bucket_indices(np.array([value]))[0])


EXPECTED_BUCKETS: Final = sorted(
    [
        {
            "window_start": W1,
            "dimensions": dims("m1", "card", "USD"),
            "bucket": b(10.0),
            "count": 1,
        },
        {
            "window_start": W1,
            "dimensions": dims("m1", "card", "USD"),
            "bucket": b(15.0),
            "count": 1,
        },
        {
            "window_start": W1,
            "dimensions": dims("m1", "card", "USD"),
            "bucket": b(20.0),
            "count": 1,
        },
        {
            "window_start": W1,
            "dimensions": dims("m1", "wallet", "USD"),
            "bucket": b(5.0),
            "count": 1,
        },
        {
            "window_start": W2,
            "dimensions": dims("m0", "card", "USD"),
            "bucket": ZERO_BUCKET,
            "count": 1,
        },
        {
            "window_start": W2,
            "dimensions": dims("m1", "card", "USD"),
            "bucket": b(30.0),
            "count": 1,
        },
    ],
    key=lambda r: (r["window_start"], r["dimensions"], r["bucket"]),
)


def test_hand_built_rows() -> None:
    partials = aggregate(table(HAND_BUILT))
    assert partials.rows.column_names == [
        *KEY_COLUMNS,
        *COUNT_COLUMNS,
        "latency_max_ms",
        "dimensions",
    ]
    assert partials.rows.to_pylist() == EXPECTED_ROWS


def test_hand_built_rows_in_any_input_order() -> None:
    shuffled = HAND_BUILT[::-1]
    assert aggregate(table(shuffled)).rows.to_pylist() == EXPECTED_ROWS


def test_hand_built_latency_buckets() -> None:
    partials = aggregate(table(HAND_BUILT))
    assert partials.buckets.column_names == ["window_start", "dimensions", "bucket", "count"]
    assert partials.buckets.to_pylist() == EXPECTED_BUCKETS


def test_same_bucket_counts_add() -> None:
    rows = [event(W1, "m", "card", "USD", "authorization", s, 1, 12.0) for s in ("approved",) * 3]
    rows.append(event(W1, "m", "card", "USD", "authorization", "declined", 1, 12.0))
    partials = aggregate(table(rows))
    assert partials.buckets.to_pylist() == [
        {"window_start": W1, "dimensions": dims("m", "card", "USD"), "bucket": b(12.0), "count": 4}
    ]


def test_non_approved_captures_refunds_chargebacks_count_nothing() -> None:
    rows = [
        event(W1, "m", "card", "USD", kind, status, 5, 1.0)
        for kind in ("capture", "refund", "chargeback")
        for status in ("declined", "error")
    ]
    partials = aggregate(table(rows))
    assert partials.rows.to_pylist() == [expected_row(W1, "m", "card", "USD")]
    assert partials.buckets.num_rows == 0


def test_dimensions_key_is_canonical_json() -> None:
    assert dimensions_key("m_42", "card", "EUR") == dims("m_42", "card", "EUR")
    assert dimensions_key('m"1', "card", "EUR") == (
        '{"currency":"EUR","merchant_id":"m\\"1","payment_method":"card"}'
    )


def test_empty_batch() -> None:
    partials = aggregate(NORMALIZED_SCHEMA.empty_table())
    assert partials.rows.num_rows == 0
    assert partials.buckets.num_rows == 0


# --------------------------------------------------------------------------- additivity

random_event = st.builds(
    event,
    window=st.sampled_from([W0, W1, W2]),
    merchant=st.sampled_from(["m1", "m2", "ß"]),
    method=st.sampled_from(["card", "wallet"]),
    currency=st.sampled_from(["USD", "EUR"]),
    event_type=st.sampled_from(["authorization", "capture", "refund", "chargeback"]),
    status=st.sampled_from(["approved", "declined", "error"]),
    amount=st.integers(0, 10**15),
    latency=st.one_of(
        st.none(), st.just(0.0), st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False)
    ),
)


def by_key(rows: pa.Table) -> dict[tuple, dict[str, object]]:
    out = {}
    for row in rows.to_pylist():
        key = tuple(row[k] for k in KEY_COLUMNS)
        assert key not in out, f"key {key} twice"
        out[key] = row
    return out


def bucket_counts(buckets: pa.Table) -> dict[tuple, int]:
    out: dict[tuple, int] = defaultdict(int)
    for row in buckets.to_pylist():
        out[(row["window_start"], row["dimensions"], row["bucket"])] += row["count"]
    return dict(out)


def _max(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


@settings(max_examples=80, deadline=None)
@given(events=st.lists(random_event, max_size=40), data=st.data())
def test_aggregate_is_additive(events: list[dict[str, object]], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(events)), label="cut")
    whole = aggregate(table(events))
    left = aggregate(table(events[:cut]))
    right = aggregate(table(events[cut:]))

    combined: dict[tuple, dict[str, object]] = {}
    for part in (by_key(left.rows), by_key(right.rows)):
        for key, row in part.items():
            if key not in combined:
                combined[key] = dict(row)
                continue
            acc = combined[key]
            for name in COUNT_COLUMNS:
                acc[name] += row[name]
            acc["latency_max_ms"] = _max(acc["latency_max_ms"], row["latency_max_ms"])
            assert acc["dimensions"] == row["dimensions"]
    assert by_key(whole.rows) == combined
    keys = [tuple(r[k] for k in KEY_COLUMNS) for r in whole.rows.to_pylist()]
    assert keys == sorted(keys)

    parts = bucket_counts(left.buckets)
    for key, count in bucket_counts(right.buckets).items():
        parts[key] = parts.get(key, 0) + count
    assert bucket_counts(whole.buckets) == parts

    # and the totals are those of the events themselves
    approved = [e for e in events if e["status"] == "approved"]
    auths = [e for e in events if e["event_type"] == "authorization"]
    totals = {name: sum(r[name] for r in whole.rows.to_pylist()) for name in COUNT_COLUMNS}
    assert totals["authorizations"] == len(auths)
    assert totals["approved_amount_minor"] == sum(
        e["amount_minor"] for e in approved if e["event_type"] == "authorization"
    )
    assert totals["captured_amount_minor"] == sum(
        e["amount_minor"] for e in approved if e["event_type"] == "capture"
    )
    assert totals["refunds"] == sum(1 for e in approved if e["event_type"] == "refund")
    assert totals["chargeback_amount_minor"] == sum(
        e["amount_minor"] for e in approved if e["event_type"] == "chargeback"
    )
    timed = sum(1 for e in auths if e["latency_ms"] is not None)
    assert sum(bucket_counts(whole.buckets).values()) == timed
