"""Numeric rules the type system cannot express."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.events import Reason
from paymetrics.validate.base import Rule

__all__ = ["LatencyFiniteRule"]


class LatencyFiniteRule(Rule):
    """`latency_ms` must be finite: a JSON number like 1e400 decodes to infinity."""

    name = "latency_finite"
    reason = Reason.INVALID_VALUE

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        bad = pc.is_inf(table["latency_ms"])
        return np.asarray(pc.fill_null(bad, False), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        return f"latency_ms: {table['latency_ms'][row].as_py()!r} is not a finite number"
