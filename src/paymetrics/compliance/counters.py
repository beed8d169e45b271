"""Rules over additive per-customer period counters (`compliance_counters`).

Each batch adds, per (customer, period), the count and the reporting-currency amount of
its newly stored events that the rule selects; the store returns the totals after the
addition, and the keys whose totals cross the rule's limit raise an alert (once per key:
the alert's unique key keeps later batches from raising it again). Periods are tumbling
and aligned to the UTC epoch (a 1-day period is a UTC calendar day), so the same event
always lands in the same period, whatever batch it arrives in.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance.base import Alert, BatchView, ComplianceRule, ComplianceStore, at_us
from paymetrics.metrics.windows import floor_to_window

__all__ = ["CounterRule"]

UTC_US = pa.timestamp("us", "UTC")
NO_FLOOR = -(2**63)
"""An amount (or count) floor that every total reaches."""


class CounterRule(ComplianceRule):
    subject_type: ClassVar[str] = "customer"

    @property
    @abc.abstractmethod
    def period_seconds(self) -> int: ...

    @abc.abstractmethod
    def selected(self, batch: BatchView) -> npt.NDArray[np.bool_]:
        """Rows the counter counts."""

    @abc.abstractmethod
    def crossed(
        self, count: npt.NDArray[np.int64], amount: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Totals that raise an alert."""

    @property
    @abc.abstractmethod
    def floors(self) -> tuple[int, int]:
        """(count, amount) every total that `crossed` accepts reaches: the store may skip
        returning the others."""

    @abc.abstractmethod
    def measured(self, count: int, amount: int) -> tuple[float, float, str | None]:
        """(measured_value, threshold, currency) of an alert."""

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        rows = np.flatnonzero(self.selected(batch) & batch.has_customer)
        if not len(rows):
            return []
        period = floor_to_window(batch.occurred_us[rows], self.period_seconds)
        if self.uses_amounts:
            amount = np.nan_to_num(batch.reporting_minor[rows]).astype(np.int64)
        else:
            amount = np.zeros(len(rows), dtype=np.int64)
        work = pa.table(
            {
                "subject_id": batch.events["customer_id"].take(pa.array(rows)),
                "period_us": pa.array(period),
                "count": pa.array(np.ones(len(rows), dtype=np.int64)),
                "amount": pa.array(amount),
                "row": pa.array(rows.astype(np.int64)),
            }
        )
        grouped = work.group_by(["subject_id", "period_us"], use_threads=False).aggregate(
            [("count", "sum"), ("amount", "sum")]
        )
        n = grouped.num_rows
        partials = pa.table(
            {
                "rule": pa.array([self.name] * n, pa.string()),
                "subject_type": pa.array([self.subject_type] * n, pa.string()),
                "subject_id": grouped["subject_id"],
                "period_start": grouped["period_us"].cast(UTC_US),
                "period_seconds": pa.array(np.full(n, self.period_seconds, dtype=np.int64)),
                "count": grouped["count_sum"],
                "amount_minor_reporting": grouped["amount_sum"],
            }
        )
        totals = store.add_compliance_counters(partials, self.floors)
        count = np.asarray(totals["count"], dtype=np.int64)
        total = np.asarray(totals["amount_minor_reporting"], dtype=np.int64)
        hit = np.flatnonzero(self.crossed(count, total))
        if not len(hit):
            return []
        crossed = pa.table(
            {
                "subject_id": totals["subject_id"].take(pa.array(hit)),
                "period_us": totals["period_start"].take(pa.array(hit)).cast(pa.int64()),
                "total_count": pa.array(count[hit]),
                "total_amount": pa.array(total[hit]),
            }
        )
        evidence = (
            work.join(crossed, ["subject_id", "period_us"], join_type="inner", use_threads=False)
            .group_by(["subject_id", "period_us", "total_count", "total_amount"], use_threads=False)
            .aggregate([("row", "list")])
        )
        evidence = evidence.take(
            pc.sort_indices(evidence, [("subject_id", "ascending"), ("period_us", "ascending")])
        )
        alerts = []
        for subject, period_us, n_total, amount_total, batch_rows in zip(
            *(
                evidence[c].to_pylist()
                for c in ("subject_id", "period_us", "total_count", "total_amount", "row_list")
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
                    evidence_event_ids=batch.event_ids(np.sort(np.asarray(batch_rows))),
                    evidence={"count": n_total, "amount_minor_reporting": amount_total},
                )
            )
        return alerts
