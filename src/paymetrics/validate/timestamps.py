"""Rules on `occurred_at` beyond RFC 3339 syntax."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from paymetrics.events import Reason
from paymetrics.metrics.windows import to_epoch_us
from paymetrics.validate.base import Rule

__all__ = ["OccurredAtRangeRule"]

_LOWEST = to_epoch_us(dt.datetime(1, 1, 1, tzinfo=dt.UTC))
_BEYOND = to_epoch_us(dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)) + 1


class OccurredAtRangeRule(Rule):
    """In UTC, `occurred_at` must fall in years 1 to 9999 (its window then does too).

    `0001-01-01T00:30:00+01:00` is valid RFC 3339 but lies before year 1 in UTC;
    no database or datetime library could store its window.
    """

    name = "occurred_at_range"
    reason = Reason.INVALID_TIMESTAMP

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        us = table["occurred_at"].cast(pa.int64()).to_numpy()
        return np.asarray((us < _LOWEST) | (us >= _BEYOND), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        us = table["occurred_at"].cast(pa.int64())[row].as_py()
        side = "before year 1" if us < _LOWEST else "after year 9999"
        return f"occurred_at: in UTC this instant falls {side}"
