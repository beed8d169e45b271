"""`daily_aggregate_threshold`: one customer's approved authorizations in one UTC day
sum to more than the threshold (the pattern of a currency transaction report: several
payments that together exceed the reporting amount)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from paymetrics.compliance.base import BatchView
from paymetrics.compliance.counters import CounterRule
from paymetrics.compliance.fx import Fx
from paymetrics.config.model import DailyAggregateRule

__all__ = ["DailyAggregate"]


class DailyAggregate(CounterRule):
    name = "daily_aggregate_threshold"
    settings_class = DailyAggregateRule
    uses_amounts: ClassVar[bool] = True

    def __init__(self, settings: DailyAggregateRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.threshold = self.reporting_threshold(
            settings.threshold.amount, settings.threshold.currency
        )

    @property
    def period_seconds(self) -> int:
        return 86_400

    def selected(self, batch: BatchView) -> npt.NDArray[np.bool_]:
        return batch.approved_authorization & ~np.isnan(batch.reporting_minor)

    def crossed(
        self, count: npt.NDArray[np.int64], amount: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        return amount > self.threshold

    def measured(self, count: int, amount: int) -> tuple[float, float, str | None]:
        return self.to_major(amount), self.to_major(self.threshold), self.fx.reporting_currency
