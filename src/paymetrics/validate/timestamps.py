"""Rules on `occurred_at` beyond RFC 3339 syntax."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from paymetrics.events import Reason
from paymetrics.metrics.windows import to_epoch_us
from paymetrics.validate.base import Rule

__all__ = ["OccurredAtRangeRule"]

_LOWEST = to_epoch_us(dt.datetime(1, 1, 1, tzinfo=dt.UTC))
_BEYOND = to_epoch_us(dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)) + 1


class OccurredAtRangeParams(BaseModel):
    """Optional bounds, e.g. the platform's go-live date: fixed instants, never "now"."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    earliest: AwareDatetime | None = None
    """Events before this instant are invalid (inclusive bound)."""
    latest: AwareDatetime | None = None
    """Events at or after this instant are invalid (exclusive bound)."""

    @model_validator(mode="after")
    def _ordered(self) -> OccurredAtRangeParams:
        if self.earliest and self.latest and self.earliest >= self.latest:
            raise ValueError("earliest must be before latest")
        return self


class OccurredAtRangeRule(Rule):
    """In UTC, `occurred_at` must fall in years 1 to 9999 (its window then does too),
    and within the configured `earliest`/`latest` bounds when set.

    `0001-01-01T00:30:00+01:00` is valid RFC 3339 but lies before year 1 in UTC;
    no database or datetime library could store its window.
    """

    name = "occurred_at_range"
    reason = Reason.INVALID_TIMESTAMP
    Params = OccurredAtRangeParams

    def _bounds(self) -> tuple[int, int]:
        params = self.params
        assert isinstance(params, OccurredAtRangeParams)
        low = _LOWEST if params.earliest is None else max(_LOWEST, to_epoch_us(params.earliest))
        high = _BEYOND if params.latest is None else min(_BEYOND, to_epoch_us(params.latest))
        return low, high

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        us = table["occurred_at"].cast(pa.int64()).to_numpy()
        low, high = self._bounds()
        return np.asarray((us < low) | (us >= high), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        us = table["occurred_at"].cast(pa.int64())[row].as_py()
        low, _ = self._bounds()
        if us < _LOWEST:
            return "occurred_at: in UTC this instant falls before year 1"
        if us >= _BEYOND:
            return "occurred_at: in UTC this instant falls after year 9999"
        params = self.params
        assert isinstance(params, OccurredAtRangeParams)
        if us < low:
            return f"occurred_at: before the configured earliest instant {params.earliest}"
        return f"occurred_at: at or after the configured latest instant {params.latest}"
