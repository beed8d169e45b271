"""Tumbling event-time windows, on int64 microseconds since the epoch (UTC).

Window assignment never looks at the wall clock: an event belongs to the window
of its own `occurred_at`, so a replay of last year's file gives the same windows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

__all__ = ["US_PER_SECOND", "floor_to_window", "from_epoch_us", "to_epoch_us"]

US_PER_SECOND = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def floor_to_window(epoch_us: npt.NDArray[np.int64], window_seconds: int) -> npt.NDArray[np.int64]:
    """Start of the window each instant falls in (floor division, so pre-1970 works too)."""
    width = np.int64(window_seconds * US_PER_SECOND)
    return (epoch_us // width) * width


def to_epoch_us(value: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no UTC offset")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def from_epoch_us(value: int) -> dt.datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + dt.timedelta(microseconds=int(value))
