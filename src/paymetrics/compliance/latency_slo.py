"""`latency_slo`: the p95 authorization latency of a merchant or card network in a
closed 5-minute window is above `p95_ms`.

Each batch adds its new authorizations' latencies to one sketch per (window, subject)
in `aggregate_histograms` (histogram `compliance.latency_ms.<subject>`, the same
mergeable log buckets as `payment_metrics_5m`: within 1 % of the true value), so the
estimate covers every event of the window stored so far, from any batch or worker.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance.base import Alert, BatchView, ComplianceRule, ComplianceStore, at_us
from paymetrics.compliance.fx import Fx
from paymetrics.compliance.windows import closed_windows
from paymetrics.config.model import LatencySloRule
from paymetrics.metrics.sketch import bucket_indices, bucket_values, grouped_quantiles
from paymetrics.normalize import WINDOW_SECONDS

__all__ = ["MIN_SAMPLES", "MIN_STANDARD_ERRORS", "LatencySlo"]

MIN_SAMPLES = 20
"""Windows with fewer latencies of a subject are not judged."""
MIN_STANDARD_ERRORS = 3.0
"""The share of latencies above `p95_ms` must exceed 5 % by this many binomial standard
errors: in a window of 100 authorizations, 7 slow ones (a p95 above the objective) happen
by chance when 2 % of all authorizations time out; a real degradation is far beyond."""


class LatencySlo(ComplianceRule):
    name = "latency_slo"
    settings_class = LatencySloRule

    def __init__(self, settings: LatencySloRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.rule = settings
        self.subject = settings.subject
        self.histogram = f"compliance.latency_ms.{settings.subject}"

    def _add(self, batch: BatchView, store: ComplianceStore) -> None:
        events = batch.events
        if not events.num_rows:
            return
        subject = events[self.subject]
        keep = pc.and_(
            pa.array(batch.authorization),
            pc.and_(pc.is_valid(events["latency_ms"]), pc.is_valid(subject)),
        )
        timed = events.filter(keep)
        if not timed.num_rows:
            return
        values = pc.unique(timed[self.subject])
        names = pa.array(
            [msgspec.json.encode({self.subject: v}).decode() for v in values.to_pylist()],
            pa.string(),
        )
        dims = names.take(pc.index_in(timed[self.subject], value_set=values))
        buckets = (
            pa.table(
                {
                    "window_start": timed["window_start"],
                    "dimensions": dims,
                    "bucket": pa.array(bucket_indices(timed["latency_ms"].to_numpy())),
                }
            )
            .group_by(["window_start", "dimensions", "bucket"], use_threads=False)
            .aggregate([([], "count_all")])
            .rename_columns(["window_start", "dimensions", "bucket", "count"])
        )
        order = [(c, "ascending") for c in ("window_start", "dimensions", "bucket")]
        store.add_sketch_buckets(self.histogram, buckets.take(pc.sort_indices(buckets, order)))

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        self._add(batch, store)
        span = closed_windows(batch)
        if span is None:
            return []
        found = store.read_sketch_buckets(self.histogram, *span)
        if not found.num_rows:
            return []
        keys = found.select(["window_start", "dimensions"])
        groups = keys.group_by(["window_start", "dimensions"], use_threads=False).aggregate([])
        groups = groups.take(
            pc.sort_indices(groups, [("window_start", "ascending"), ("dimensions", "ascending")])
        )
        numbered = groups.append_column("g", pa.array(np.arange(groups.num_rows)))
        located = found.join(numbered, ["window_start", "dimensions"], use_threads=False)
        p95 = grouped_quantiles(
            np.asarray(located["g"], dtype=np.int64),
            np.asarray(located["bucket"], dtype=np.int64),
            np.asarray(located["count"], dtype=np.int64),
            groups.num_rows,
            (0.95,),
        )[:, 0]
        group = np.asarray(located["g"], dtype=np.int64)
        count = np.asarray(located["count"], dtype=np.float64)
        slow = bucket_values(np.asarray(located["bucket"], dtype=np.int64)) > self.rule.p95_ms
        samples = np.bincount(group, weights=count, minlength=groups.num_rows)
        above = np.bincount(group, weights=count * slow, minlength=groups.num_rows)
        needed = 0.05 * samples + MIN_STANDARD_ERRORS * np.sqrt(0.05 * 0.95 * samples)
        breach = (p95 > self.rule.p95_ms) & (samples >= MIN_SAMPLES) & (above >= needed)
        alerts = []
        for g in np.flatnonzero(breach):
            dimensions = str(groups["dimensions"][int(g)].as_py())
            subject_id = str(msgspec.json.decode(dimensions)[self.subject])
            start = int(groups["window_start"][int(g)].as_py())
            alerts.append(
                Alert(
                    rule=self.name,
                    severity=self.severity,
                    subject_type=self.subject,
                    subject_id=subject_id,
                    period_start=at_us(start),
                    period_seconds=WINDOW_SECONDS,
                    measured_value=float(p95[g]),
                    threshold=float(self.rule.p95_ms),
                    evidence={
                        "histogram": self.histogram,
                        "latencies": int(samples[g]),
                        "above_objective": int(above[g]),
                    },
                )
            )
        return alerts
