"""Rules over per-customer period totals: count and reporting-currency amount of the
authorizations a rule selects, per (customer, period).

The totals are not kept as counters: they are computed from the stored events, the
batch's own plus the same customers' earlier authorizations in the same periods
(`BatchView.history`, one indexed read per batch). The stored events are deduplicated by
`event_id` in the same transaction, so a redelivered batch cannot count twice and there
is no second copy of the state to keep consistent; and a read per customer costs a
fraction of an upsert per customer and rule (ADR 0010). Keys whose totals cross the
rule's limit raise an alert (once per key: the alert's unique key keeps later batches
from raising it again). Periods are tumbling and aligned to the UTC epoch (a 1-day
period is a UTC calendar day), so the same event always lands in the same period,
whatever batch it arrives in.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance.base import (
    EVIDENCE_LIMIT,
    Alert,
    BatchView,
    ComplianceRule,
    ComplianceStore,
    at_us,
)
from paymetrics.metrics.windows import floor_to_window

__all__ = ["CounterRule"]

KEY = ["subject_id", "period_us"]
"""A total's key: the customer and the start of the period (µs)."""


class CounterRule(ComplianceRule):
    subject_type: ClassVar[str] = "customer"

    @property
    @abc.abstractmethod
    def period_seconds(self) -> int: ...

    @abc.abstractmethod
    def selected(self, batch: BatchView) -> npt.NDArray[np.bool_]:
        """Rows the rule counts: authorizations only (`BatchView.history` holds no other
        event type)."""

    @abc.abstractmethod
    def crossed(
        self, count: npt.NDArray[np.int64], amount: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Totals that raise an alert."""

    @abc.abstractmethod
    def measured(self, count: int, amount: int) -> tuple[float, float, str | None]:
        """(measured_value, threshold, currency) of an alert."""

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        rows = np.flatnonzero(self.selected(batch) & batch.has_customer)
        if not len(rows):
            return []
        work = self._work(batch, rows)
        history = batch.history
        combined = work
        if history is not None and history.events.num_rows:
            earlier = np.flatnonzero(self.selected(history) & history.has_customer)
            if len(earlier):
                before = self._work(history, earlier).join(
                    work.select(KEY), KEY, join_type="left semi", use_threads=False
                )
                combined = pa.concat_tables([work, before.select(work.column_names)])
        totals = combined.group_by(KEY, use_threads=False).aggregate(
            [("count", "sum"), ("amount", "sum")]
        )
        count = np.asarray(totals["count_sum"], dtype=np.int64)
        total = np.asarray(totals["amount_sum"], dtype=np.int64)
        hit = np.flatnonzero(self.crossed(count, total))
        if not len(hit):
            return []
        crossed = pa.table(
            {
                "subject_id": totals["subject_id"].take(pa.array(hit)),
                "period_us": totals["period_us"].take(pa.array(hit)),
                "total_count": pa.array(count[hit]),
                "total_amount": pa.array(total[hit]),
            }
        )
        # The evidence is every event that makes up the total, earlier batches' included,
        # oldest first (up to EVIDENCE_LIMIT): what an investigator reads first.
        evidence = (
            combined.join(crossed, KEY, join_type="inner", use_threads=False)
            .group_by([*KEY, "total_count", "total_amount"], use_threads=False)
            .aggregate([("occurred_us", "list"), ("event_id", "list")])
        )
        evidence = evidence.take(pc.sort_indices(evidence, [(k, "ascending") for k in KEY]))
        alerts = []
        for subject, period_us, n_total, amount_total, times, ids in zip(
            *(
                evidence[c].to_pylist()
                for c in (
                    "subject_id",
                    "period_us",
                    "total_count",
                    "total_amount",
                    "occurred_us_list",
                    "event_id_list",
                )
            ),
            strict=True,
        ):
            value, threshold, currency = self.measured(n_total, amount_total)
            alerts.append(
                Alert(
                    rule=self.name,
                    severity=self.severity,
                    subject_type=self.subject_type,
                    subject_id=subject,
                    period_start=at_us(period_us),
                    period_seconds=self.period_seconds,
                    measured_value=value,
                    threshold=threshold,
                    currency=currency,
                    evidence_event_ids=[i for _, i in sorted(zip(times, ids, strict=True))][
                        :EVIDENCE_LIMIT
                    ],
                    evidence={"count": n_total, "amount_minor_reporting": amount_total},
                )
            )
        return alerts

    def _work(self, view: BatchView, rows: npt.NDArray[np.intp]) -> pa.Table:
        """(subject_id, period_us, count, amount, occurred_us, event_id) of the selected
        `rows` of `view`."""
        if self.uses_amounts:
            amount = np.nan_to_num(view.reporting_minor[rows]).astype(np.int64)
        else:
            amount = np.zeros(len(rows), dtype=np.int64)
        at = pa.array(rows)
        occurred = view.occurred_us[rows]
        return pa.table(
            {
                "subject_id": view.events["customer_id"].take(at),
                "period_us": pa.array(floor_to_window(occurred, self.period_seconds)),
                "count": pa.array(np.ones(len(rows), dtype=np.int64)),
                "amount": pa.array(amount),
                "occurred_us": pa.array(occurred),
                "event_id": view.events["event_id"].take(at),
            }
        )
