"""Compliance rules: the base class, alerts, the batch they judge and the store they use.

A rule is built from its settings (`paymetrics.config.model.*Rule`) and the FX rates,
and implements one method, `evaluate(batch, store)`, returning `Alert`s. Rules work on
whole columns of the batch's newly stored events (never on redeliveries: an event is
judged in the transaction that stores it, and in no other), plus what they keep in the
store: earlier authorizations of the same customers, latency sketches, the 5-minute
payment metrics.

Every alert is keyed by (rule, subject_type, subject_id, period_start, period_seconds);
the store inserts it with ON CONFLICT DO NOTHING, so a key alerts at most once.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance.fx import Fx
from paymetrics.config.model import ComplianceRuleSettings
from paymetrics.metrics.windows import US_PER_SECOND, floor_to_window, from_epoch_us

__all__ = [
    "EVIDENCE_LIMIT",
    "HISTORY_SCHEMA",
    "Alert",
    "BatchView",
    "ComplianceRule",
    "ComplianceStore",
    "period_starts",
]

EVIDENCE_LIMIT = 20
"""Most event ids kept on one alert."""

HISTORY_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("customer_id", pa.string()),
        ("occurred_at", pa.timestamp("us", "UTC")),
        ("event_type", pa.string()),
        ("status", pa.string()),
        ("amount_minor", pa.int64()),
        ("currency", pa.string()),
    ]
)
"""The columns of `ComplianceStore.earlier_authorizations`: what per-customer rules read."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One row of `compliance_alerts` (id, created_at and config_version set on insert)."""

    rule: str
    severity: str
    subject_type: str
    subject_id: str
    period_start: dt.datetime
    period_seconds: int
    measured_value: float
    threshold: float
    currency: str | None = None
    evidence_event_ids: Sequence[str] = ()
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, dt.datetime, int]:
        return (
            self.rule,
            self.subject_type,
            self.subject_id,
            self.period_start,
            self.period_seconds,
        )


class ComplianceStore(Protocol):
    """What rules need from the batch's transaction (`SqlTransaction` provides it)."""

    def earlier_authorizations(self, customers: pa.Array, start_us: int, end_us: int) -> pa.Table:
        """Authorizations of these customers (`customer_id` values) stored by earlier
        batches (not the one being judged) with start_us <= occurred_at < end_us: the
        `HISTORY_SCHEMA` columns, in any order. What per-customer period rules add the
        batch's own events to: the stored events are the counters, deduplicated by
        `event_id` like everything else."""
        ...

    def add_sketch_buckets(self, histogram: str, buckets: pa.Table) -> None:
        """Add `window_start, dimensions, bucket, count` rows (5-minute windows) to
        `aggregate_histograms` under the histogram name."""
        ...

    def read_sketch_buckets(self, histogram: str, start_us: int, end_us: int) -> pa.Table:
        """Stored buckets of the histogram with start_us <= window_start < end_us."""
        ...

    def read_merchant_windows(self, start_us: int, end_us: int) -> pa.Table:
        """`window_start` (µs), `merchant_id`, `authorizations`, `approved` of
        `payment_metrics_5m`, summed over payment method and currency."""
        ...


def period_starts(epoch_us: npt.NDArray[np.int64], period_seconds: int) -> pa.Array:
    """Start of the tumbling period (aligned to the UTC epoch) of each instant."""
    return pa.array(floor_to_window(epoch_us, period_seconds)).cast(pa.timestamp("us", "UTC"))


class BatchView:
    """The batch's newly stored events and what several rules derive from them."""

    def __init__(
        self,
        events: pa.Table,
        fx: Fx,
        *,
        source_id: str,
        partition: str,
        previous_watermark_us: int | None,
        watermark_us: int | None,
    ) -> None:
        self.events = events
        self.fx = fx
        self.source_id = source_id
        self.partition = partition
        self.previous_watermark_us = previous_watermark_us
        self.watermark_us = watermark_us
        #: Earlier stored authorizations of the batch's customers in the periods its
        #: events fall in (`Compliance.evaluate` sets it when a per-customer rule runs).
        self.history: BatchView | None = None

    @cached_property
    def occurred_us(self) -> npt.NDArray[np.int64]:
        return np.asarray(self.events["occurred_at"].cast(pa.int64()), dtype=np.int64)

    @cached_property
    def authorization(self) -> npt.NDArray[np.bool_]:
        return np.asarray(pc.equal(self.events["event_type"], "authorization"), dtype=bool)

    @cached_property
    def approved_authorization(self) -> npt.NDArray[np.bool_]:
        approved = np.asarray(pc.equal(self.events["status"], "approved"), dtype=bool)
        out: npt.NDArray[np.bool_] = self.authorization & approved
        return out

    @cached_property
    def reporting_minor(self) -> npt.NDArray[np.float64]:
        """`amount_minor` in reporting minor units; NaN where no rate is configured."""
        return self.fx.convert(self.events["amount_minor"], self.events["currency"])

    @cached_property
    def has_customer(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.events["customer_id"].is_valid(), dtype=bool)

    def unconverted(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Rows of `mask` whose amount cannot be converted (no FX rate)."""
        return mask & np.isnan(self.reporting_minor)

    def unconverted_currencies(self, mask: npt.NDArray[np.bool_]) -> dict[str, int]:
        rows = self.unconverted(mask)
        if not rows.any():
            return {}
        counts = pc.value_counts(self.events["currency"].filter(pa.array(rows)))
        return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}

    def event_ids(self, rows: npt.NDArray[np.intp]) -> list[str]:
        ids: list[str] = self.events["event_id"].take(pa.array(rows[:EVIDENCE_LIMIT])).to_pylist()
        return ids


class ComplianceRule(abc.ABC):
    """A compliance rule. Subclasses set `name` and `settings_class`, implement `evaluate`."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ComplianceRuleSettings]]
    #: Whether the rule reads the amounts converted to the reporting currency.
    uses_amounts: ClassVar[bool] = False

    def __init__(self, settings: ComplianceRuleSettings, fx: Fx) -> None:
        if not isinstance(settings, self.settings_class):
            raise TypeError(
                f"{self.name}: settings must be {self.settings_class.__name__}, "
                f"got {type(settings).__name__}"
            )
        self.settings = settings
        self.fx = fx
        self.severity: str = settings.severity

    @abc.abstractmethod
    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        """The alerts this batch raises (duplicates of stored alerts are dropped on insert)."""

    def reporting_threshold(self, amount: Any, currency: str) -> int:
        """A configured threshold in reporting minor units (a rate must exist for it)."""
        minor = self.fx.to_reporting_minor(amount, currency)
        if minor is None:
            raise ValueError(
                f"compliance.{self.name}.threshold is in {currency} but fx.rates has no rate "
                f"for it (reporting currency {self.fx.reporting_currency})"
            )
        return minor

    def to_major(self, minor: float) -> float:
        """Reporting minor units as major units (for `measured_value` and `threshold`)."""
        from paymetrics.compliance.fx import minor_unit_exponent

        return float(minor) / float(10 ** minor_unit_exponent(self.fx.reporting_currency))


def at_us(value: int) -> dt.datetime:
    return from_epoch_us(value)


US_PER_DAY = 86_400 * US_PER_SECOND
