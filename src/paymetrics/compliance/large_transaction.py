"""`large_transaction`: one approved authorization at or above the reporting threshold.

Authorizations, not captures: the approval is when the funds are committed, and a
capture repeats (part of) the same amount, so counting both would report one payment
twice. Subject: the transaction_id; period: the event's UTC day.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from paymetrics.compliance.base import Alert, BatchView, ComplianceRule, ComplianceStore, at_us
from paymetrics.compliance.fx import Fx
from paymetrics.config.model import LargeTransactionRule
from paymetrics.metrics.windows import floor_to_window

__all__ = ["LargeTransaction"]

DAY_SECONDS = 86_400


class LargeTransaction(ComplianceRule):
    name = "large_transaction"
    settings_class = LargeTransactionRule
    uses_amounts: ClassVar[bool] = True

    def __init__(self, settings: LargeTransactionRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.threshold = self.reporting_threshold(
            settings.threshold.amount, settings.threshold.currency
        )

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        del store
        hit = batch.approved_authorization & (batch.reporting_minor >= self.threshold)
        rows = np.flatnonzero(hit)
        if not len(rows):
            return []
        events = batch.events.take(rows)
        day = floor_to_window(batch.occurred_us[rows], DAY_SECONDS)
        amounts = batch.reporting_minor[rows]
        return [
            Alert(
                rule=self.name,
                severity=self.severity,
                subject_type="transaction",
                subject_id=txn,
                period_start=at_us(int(day[i])),
                period_seconds=DAY_SECONDS,
                measured_value=self.to_major(amounts[i]),
                threshold=self.to_major(self.threshold),
                currency=self.fx.reporting_currency,
                evidence_event_ids=[event_id],
                evidence={
                    "source_id": batch.source_id,
                    "partition": batch.partition,
                    "position": position,
                    "merchant_id": merchant,
                    "customer_id": customer,
                    "amount_minor": amount,
                    "currency": currency,
                },
            )
            for i, (txn, event_id, position, merchant, customer, amount, currency) in enumerate(
                zip(
                    *(
                        events[c].to_pylist()
                        for c in (
                            "transaction_id",
                            "event_id",
                            "source_position",
                            "merchant_id",
                            "customer_id",
                            "amount_minor",
                            "currency",
                        )
                    ),
                    strict=True,
                )
            )
        ]
