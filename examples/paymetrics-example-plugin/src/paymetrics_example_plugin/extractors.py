"""`refund_ratio_by_country`: refunds / (captures + refunds) per country and hour."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.metrics.dynamic import PARTIAL_SCHEMA
from paymetrics.metrics.extractors import Extractor

HOUR_US = 3_600_000_000


class RefundRatioByCountry(Extractor):
    """Of the captures and refunds of each country (NULL: unknown) and UTC hour, the
    share that are refunds: `count` = captures + refunds, `numerator` = refunds."""

    name = "refund_ratio_by_country"
    window = 3600
    aggregate = "ratio"

    def extract(self, events: pa.Table) -> pa.Table:
        settled = events.filter(pc.is_in(events["event_type"], pa.array(["capture", "refund"])))
        micros = pc.cast(pc.cast(settled["occurred_at"], pa.timestamp("us", tz="UTC")), pa.int64())
        hour = pc.multiply(pc.divide(micros, HOUR_US), HOUR_US)  # occurred_at >= 1970: floor
        work = pa.table(
            {
                "hour": hour,
                "country": settled["country"],
                "refund": pc.cast(pc.equal(settled["event_type"], "refund"), pa.int64()),
            }
        )
        grouped = work.group_by(["hour", "country"], use_threads=False).aggregate(
            [([], "count_all"), ("refund", "sum")]
        )
        n = grouped.num_rows
        dimensions = [
            json.dumps({"country": c}, separators=(",", ":"), ensure_ascii=False)
            for c in grouped["country"].to_pylist()
        ]
        columns = {
            "metric_name": pa.repeat(pa.scalar(self.name), n),
            "window_start": pc.cast(grouped["hour"], pa.timestamp("us", tz="UTC")),
            "window_seconds": pa.repeat(pa.scalar(self.window, pa.int32()), n),
            "dimensions": pa.array(dimensions, pa.string()),
            "count": grouped["count_all"],
            "value_count": pa.repeat(pa.scalar(0, pa.int64()), n),
            "sum": pa.nulls(n, pa.float64()),
            "min": pa.nulls(n, pa.float64()),
            "max": pa.nulls(n, pa.float64()),
            "numerator": grouped["refund_sum"],
        }
        return pa.table([columns[f.name] for f in PARTIAL_SCHEMA], schema=PARTIAL_SCHEMA)
