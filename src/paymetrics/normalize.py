"""Turn decoded events into one Arrow table of normalized columns.

Normalization is what the contract promises downstream: currency and country
upper-case (ASCII only: 'uſd' must not become 'USD'), `occurred_at` in UTC,
`decline_code` = 'unknown' for a decline that gave none, and the 5-minute
`window_start` of each event.
"""

from __future__ import annotations

from operator import attrgetter

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.events import PaymentEvent
from paymetrics.metrics.windows import floor_to_window

__all__ = ["NORMALIZED_SCHEMA", "WINDOW_SECONDS", "normalize"]

WINDOW_SECONDS = 300
UTC_US = pa.timestamp("us", tz="UTC")

NORMALIZED_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("transaction_id", pa.string()),
        ("occurred_at", UTC_US),
        ("merchant_id", pa.string()),
        ("amount_minor", pa.int64()),
        ("currency", pa.string()),
        ("status", pa.string()),
        ("payment_method", pa.string()),
        ("decline_code", pa.string()),
        ("card_network", pa.string()),
        ("latency_ms", pa.float64()),
        ("country", pa.string()),
        ("channel", pa.string()),
        ("customer_id", pa.string()),
        ("schema_version", pa.string()),
        ("pan_exposure", pa.bool_()),
        ("window_start", UTC_US),
        ("source_position", pa.int64()),
        ("message_index", pa.int64()),
    ]
)

_STRING_FIELDS = (
    "event_id",
    "event_type",
    "transaction_id",
    "merchant_id",
    "status",
    "payment_method",
    "card_network",
    "channel",
    "customer_id",
    "schema_version",
)


def _column(events: list[PaymentEvent], name: str) -> list[object]:
    return list(map(attrgetter(name), events))


def normalize(
    events: list[PaymentEvent],
    message_index: npt.NDArray[np.int64],
    positions: npt.NDArray[np.int64],
    pan_counts: npt.NDArray[np.int64],
) -> pa.Table:
    """One row per event, in batch order. `positions`/`pan_counts` are per message."""
    columns: dict[str, pa.Array] = {
        name: pa.array(_column(events, name), pa.string()) for name in _STRING_FIELDS
    }
    occurred = pa.array(_column(events, "occurred_at"), UTC_US)
    columns["occurred_at"] = occurred
    columns["amount_minor"] = pa.array(_column(events, "amount_minor"), pa.int64())
    columns["latency_ms"] = pa.array(_column(events, "latency_ms"), pa.float64())
    columns["currency"] = pc.ascii_upper(pa.array(_column(events, "currency"), pa.string()))
    columns["country"] = pc.ascii_upper(pa.array(_column(events, "country"), pa.string()))
    status = columns["status"]
    decline = pa.array(_column(events, "decline_code"), pa.string())
    columns["decline_code"] = pc.if_else(
        pc.and_(pc.equal(status, "declined"), pc.is_null(decline)), "unknown", decline
    )
    columns["schema_version"] = pc.fill_null(columns["schema_version"], "1")
    epoch_us = occurred.cast(pa.int64()).to_numpy()
    columns["window_start"] = pa.array(floor_to_window(epoch_us, WINDOW_SECONDS)).cast(UTC_US)
    columns["pan_exposure"] = pa.array(pan_counts[message_index] > 0)
    columns["source_position"] = pa.array(positions[message_index])
    columns["message_index"] = pa.array(message_index)
    return pa.Table.from_arrays(
        [columns[f.name] for f in NORMALIZED_SCHEMA], schema=NORMALIZED_SCHEMA
    )
