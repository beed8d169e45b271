"""`velocity`: more authorizations (any outcome) by one customer in one period than
`max_authorizations`. Periods are tumbling and aligned to the UTC epoch, not sliding:
a burst that straddles a period boundary is split between two periods (exact, additive
and cheap; a sliding window would need every event's time kept per customer)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from paymetrics.compliance.base import BatchView
from paymetrics.compliance.counters import CounterRule
from paymetrics.compliance.fx import Fx
from paymetrics.config.model import VelocityRule

__all__ = ["Velocity"]


class Velocity(CounterRule):
    name = "velocity"
    settings_class = VelocityRule

    def __init__(self, settings: VelocityRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.rule = settings

    @property
    def period_seconds(self) -> int:
        return self.rule.period_seconds

    def selected(self, batch: BatchView) -> npt.NDArray[np.bool_]:
        return batch.authorization

    def crossed(
        self, count: npt.NDArray[np.int64], amount: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        return count > self.rule.max_authorizations

    def measured(self, count: int, amount: int) -> tuple[float, float, str | None]:
        return float(count), float(self.rule.max_authorizations), None
