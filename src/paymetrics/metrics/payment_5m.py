"""`payment_metrics_5m`: exact per-window counts and sums, plus latency sketches.

`aggregate` turns the batch's newly stored events into additive partials: one
row per (window_start, merchant_id, payment_method, currency) and one row per
latency sketch bucket. Partials from any number of batches or workers add up to
the same totals, which is what makes the database upsert exact and idempotent
per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.metrics.sketch import bucket_indices

__all__ = [
    "COUNT_COLUMNS",
    "KEY_COLUMNS",
    "LATENCY_HISTOGRAM",
    "Partials",
    "aggregate",
    "dimensions_key",
]

KEY_COLUMNS = ("window_start", "merchant_id", "payment_method", "currency")
DIMENSION_COLUMNS = ("merchant_id", "payment_method", "currency")
COUNT_COLUMNS = (
    "authorizations",
    "approved",
    "declined",
    "errors",
    "approved_amount_minor",
    "captures",
    "captured_amount_minor",
    "refunds",
    "refunded_amount_minor",
    "chargebacks",
    "chargeback_amount_minor",
)
LATENCY_HISTOGRAM = "payment_metrics_5m.latency_ms"
"""The `aggregate_histograms.histogram` name of the latency sketches."""


@dataclass(frozen=True, slots=True)
class Partials:
    """Additive partial aggregates of one batch.

    `rows`: KEY_COLUMNS + COUNT_COLUMNS + latency_max_ms + dimensions.
    `buckets`: window_start, dimensions, bucket, count.
    """

    rows: pa.Table
    buckets: pa.Table


def dimensions_key(merchant_id: str, payment_method: str, currency: str) -> str:
    """Canonical JSON of a metric row's dimensions (keys sorted), as in `aggregate_histograms`."""
    return msgspec.json.encode(
        {"currency": currency, "merchant_id": merchant_id, "payment_method": payment_method}
    ).decode()


def _count(mask: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(mask, pa.int64())


def _amount(mask: pa.ChunkedArray | pa.Array, amount: pa.ChunkedArray) -> pa.Array:
    return pc.if_else(mask, amount, pa.scalar(0, pa.int64()))


def aggregate(events: pa.Table) -> Partials:
    """Partials of `events` (normalized, newly stored) for payment_metrics_5m."""
    event_type = events["event_type"]
    status = events["status"]
    amount = events["amount_minor"]
    approved = pc.equal(status, "approved")
    auth = pc.equal(event_type, "authorization")
    approved_auth = pc.and_(auth, approved)
    capture = pc.and_(pc.equal(event_type, "capture"), approved)
    refund = pc.and_(pc.equal(event_type, "refund"), approved)
    chargeback = pc.and_(pc.equal(event_type, "chargeback"), approved)
    latency = pc.if_else(auth, events["latency_ms"], pa.scalar(None, pa.float64()))
    work = pa.table(
        {
            **{key: events[key] for key in KEY_COLUMNS},
            "authorizations": _count(auth),
            "approved": _count(approved_auth),
            "declined": _count(pc.and_(auth, pc.equal(status, "declined"))),
            "errors": _count(pc.and_(auth, pc.equal(status, "error"))),
            "approved_amount_minor": _amount(approved_auth, amount),
            "captures": _count(capture),
            "captured_amount_minor": _amount(capture, amount),
            "refunds": _count(refund),
            "refunded_amount_minor": _amount(refund, amount),
            "chargebacks": _count(chargeback),
            "chargeback_amount_minor": _amount(chargeback, amount),
            "latency_ms": latency,
        }
    )
    grouped = work.group_by(list(KEY_COLUMNS), use_threads=False).aggregate(
        [(name, "sum") for name in COUNT_COLUMNS] + [("latency_ms", "max")]
    )
    renamed = {"latency_ms_max": "latency_max_ms"} | {f"{n}_sum": n for n in COUNT_COLUMNS}
    grouped = grouped.rename_columns([renamed.get(n, n) for n in grouped.column_names])
    dims = pa.array(
        [
            dimensions_key(m, p, c)
            for m, p, c in zip(
                grouped["merchant_id"].to_pylist(),
                grouped["payment_method"].to_pylist(),
                grouped["currency"].to_pylist(),
                strict=True,
            )
        ],
        pa.string(),
    )
    rows = grouped.select(list(KEY_COLUMNS) + list(COUNT_COLUMNS) + ["latency_max_ms"])
    rows = rows.append_column("dimensions", dims)

    has_latency = pc.fill_null(pc.is_valid(latency), False)
    timed = work.filter(has_latency).select([*KEY_COLUMNS, "latency_ms"])
    bucket = bucket_indices(timed["latency_ms"].to_numpy())
    per_bucket = (
        timed.select(list(KEY_COLUMNS))
        .append_column("bucket", pa.array(bucket))
        .group_by([*KEY_COLUMNS, "bucket"], use_threads=False)
        .aggregate([([], "count_all")])
        .rename_columns([*KEY_COLUMNS, "bucket", "count"])
    )
    buckets = per_bucket.join(
        rows.select([*KEY_COLUMNS, "dimensions"]), keys=list(KEY_COLUMNS), use_threads=False
    ).select(["window_start", "dimensions", "bucket", "count"])
    if buckets.num_rows:
        order = pc.sort_indices(
            buckets,
            sort_keys=[
                ("window_start", "ascending"),
                ("dimensions", "ascending"),
                ("bucket", "ascending"),
            ],
        )
        buckets = buckets.take(order)
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(k, "ascending") for k in KEY_COLUMNS]))
    return Partials(rows=rows, buckets=buckets)
