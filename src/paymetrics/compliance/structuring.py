"""`structuring`: several approved authorizations by one customer, each just below the
reporting threshold, within one period (amounts in [band_low_fraction × threshold,
threshold)): the pattern of splitting a payment to stay under a reporting limit."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from paymetrics.compliance.base import BatchView
from paymetrics.compliance.counters import CounterRule
from paymetrics.compliance.fx import Fx
from paymetrics.config.model import StructuringRule

__all__ = ["Structuring"]


class Structuring(CounterRule):
    name = "structuring"
    settings_class = StructuringRule
    uses_amounts: ClassVar[bool] = True

    def __init__(self, settings: StructuringRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.rule = settings
        self.threshold = self.reporting_threshold(
            settings.threshold.amount, settings.threshold.currency
        )
        self.band_low = self.threshold * settings.band_low_fraction

    @property
    def period_seconds(self) -> int:
        return self.rule.period_seconds

    def selected(self, batch: BatchView) -> npt.NDArray[np.bool_]:
        amount = batch.reporting_minor
        with np.errstate(invalid="ignore"):
            in_band = (amount >= self.band_low) & (amount < self.threshold)
        return batch.approved_authorization & in_band

    def crossed(
        self, count: npt.NDArray[np.int64], amount: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        return count >= self.rule.min_transactions

    def measured(self, count: int, amount: int) -> tuple[float, float, str | None]:
        return float(count), float(self.rule.min_transactions), None
