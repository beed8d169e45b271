"""Compliance monitoring: rules judged per batch, inside the batch's transaction.

`Compliance.from_settings(settings.compliance, settings.fx)` builds the enabled rules
(a disabled rule is not built and costs nothing); `Compliance.evaluate` runs them on
the batch's newly stored events and inserts their alerts into `compliance_alerts`,
each (rule, subject, period) at most once. See docs/compliance.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance.base import (
    Alert,
    BatchView,
    ComplianceRule,
    ComplianceStore,
)
from paymetrics.compliance.counters import CounterRule
from paymetrics.compliance.daily_aggregate import DailyAggregate
from paymetrics.compliance.decline_spike import DeclineSpike
from paymetrics.compliance.fx import Fx, minor_unit_exponent
from paymetrics.compliance.large_transaction import LargeTransaction
from paymetrics.compliance.latency_slo import LatencySlo
from paymetrics.compliance.pan_exposure import PanExposure
from paymetrics.compliance.structuring import Structuring
from paymetrics.compliance.velocity import Velocity
from paymetrics.config.model import ComplianceSettings, FxSettings
from paymetrics.metrics.windows import US_PER_SECOND

__all__ = [
    "RULES",
    "Alert",
    "AlertSink",
    "BatchView",
    "Compliance",
    "ComplianceRule",
    "ComplianceStore",
    "Fx",
    "minor_unit_exponent",
    "resolve_compliance_rule",
]

log = logging.getLogger("paymetrics.compliance")

_WARNED: set[str] = set()  # currencies already warned about in this process

RULES: Mapping[str, type[ComplianceRule]] = {
    cls.name: cls
    for cls in (
        LargeTransaction,
        DailyAggregate,
        Structuring,
        Velocity,
        DeclineSpike,
        LatencySlo,
        PanExposure,
    )
}
"""Every compliance rule by name, in evaluation order."""


def resolve_compliance_rule(name: str) -> type[ComplianceRule]:
    """The rule class registered under `name`; the error lists the valid names."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown compliance rule {name!r}; valid rules: {', '.join(RULES)}"
        ) from None


class AlertSink(ComplianceStore, Protocol):
    """A `ComplianceStore` that also stores alerts (the batch's transaction)."""

    def insert_alerts(self, alerts: Sequence[Alert], config_version: int | None) -> int:
        """Insert alerts, ON CONFLICT DO NOTHING on their key; how many were new."""
        ...


@dataclass(frozen=True, slots=True)
class Compliance:
    """The enabled rules of one configuration, ready to judge batches."""

    rules: tuple[ComplianceRule, ...]
    fx: Fx

    @classmethod
    def from_settings(cls, settings: ComplianceSettings, fx: FxSettings) -> Compliance | None:
        """The enabled rules, or None when compliance or every rule is disabled."""
        if not settings.enabled:
            return None
        rates = Fx(fx.reporting_currency, dict(fx.rates))
        rules = tuple(
            RULES[name](getattr(settings, name), rates)
            for name in RULES
            if getattr(settings, name).enabled
        )
        return cls(rules, rates) if rules else None

    @property
    def customer_periods_seconds(self) -> list[int]:
        """The period of each enabled per-customer rule."""
        return [r.period_seconds for r in self.rules if isinstance(r, CounterRule)]

    @property
    def reads_customer_history(self) -> bool:
        """Whether a per-customer rule is on: it reads the customer index."""
        return bool(self.customer_periods_seconds)

    def evaluate(
        self,
        events: pa.Table,
        sink: AlertSink,
        *,
        source_id: str,
        partition: str,
        previous_watermark_us: int | None,
        watermark_us: int | None,
        config_version: int | None = None,
    ) -> int:
        """Judge the batch's newly stored `events`; returns the number of new alerts."""
        batch = BatchView(
            events,
            self.fx,
            source_id=source_id,
            partition=partition,
            previous_watermark_us=previous_watermark_us,
            watermark_us=watermark_us,
        )
        batch.history = self._history(batch, sink)
        alerts: list[Alert] = []
        for rule in self.rules:
            alerts.extend(rule.evaluate(batch, sink))
        if events.num_rows and any(rule.uses_amounts for rule in self.rules):
            missing = batch.unconverted_currencies(batch.authorization)
            if missing:
                new = set(missing) - _WARNED
                _WARNED.update(new)
                (log.warning if new else log.info)(
                    "compliance: %d authorizations of partition %s could not be judged on "
                    "amount: no fx rate to %s for %s",
                    sum(missing.values()),
                    partition,
                    self.fx.reporting_currency,
                    ", ".join(f"{c} ({n})" for c, n in sorted(missing.items())),
                )
        return sink.insert_alerts(alerts, config_version) if alerts else 0

    def _history(self, batch: BatchView, store: ComplianceStore) -> BatchView | None:
        """One read for every per-customer rule: the earlier stored authorizations of the
        batch's customers, from the start of the earliest period any of its
        authorizations falls in (under any rule's period length) to the end of the
        latest."""
        periods = self.customer_periods_seconds
        rows = batch.authorization & batch.has_customer
        if not periods or not rows.any():
            return None
        occurred = batch.occurred_us[rows]
        first, last = int(occurred.min()), int(occurred.max())
        widths = [p * US_PER_SECOND for p in periods]
        start = min(first // w * w for w in widths)
        end = max(last // w * w + w for w in widths)
        customers = pc.unique(batch.events["customer_id"].filter(pa.array(rows)))
        if isinstance(customers, pa.ChunkedArray):
            customers = customers.combine_chunks()
        return BatchView(
            store.earlier_authorizations(customers, start, end),
            self.fx,
            source_id=batch.source_id,
            partition=batch.partition,
            previous_watermark_us=batch.previous_watermark_us,
            watermark_us=batch.watermark_us,
        )
