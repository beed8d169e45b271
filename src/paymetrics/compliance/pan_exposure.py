"""`pan_exposure`: an event arrived with a full card number in it (PCI DSS 3.4).

The number was masked before anything was stored; the alert says where the message
came from (source, partition, position) so the sender can be found and fixed. It never
holds the number. Subject: the event_id; period: the event's UTC day.
"""

from __future__ import annotations

import numpy as np

from paymetrics.compliance.base import Alert, BatchView, ComplianceRule, ComplianceStore, at_us
from paymetrics.config.model import ComplianceRuleSettings
from paymetrics.metrics.windows import floor_to_window

__all__ = ["PanExposure"]

DAY_SECONDS = 86_400


class PanExposure(ComplianceRule):
    name = "pan_exposure"
    settings_class = ComplianceRuleSettings

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        del store
        rows = np.flatnonzero(np.asarray(batch.events["pan_exposure"], dtype=bool))
        if not len(rows):
            return []
        events = batch.events.take(rows)
        day = floor_to_window(batch.occurred_us[rows], DAY_SECONDS)
        columns = ("event_id", "source_position", "merchant_id", "event_type")
        return [
            Alert(
                rule=self.name,
                severity=self.severity,
                subject_type="event",
                subject_id=event_id,
                period_start=at_us(int(day[i])),
                period_seconds=DAY_SECONDS,
                measured_value=1.0,
                threshold=1.0,
                evidence_event_ids=[event_id],
                evidence={
                    "source_id": batch.source_id,
                    "partition": batch.partition,
                    "position": position,
                    "merchant_id": merchant,
                    "event_type": event_type,
                },
            )
            for i, (event_id, position, merchant, event_type) in enumerate(
                zip(*(events[c].to_pylist() for c in columns), strict=True)
            )
        ]
