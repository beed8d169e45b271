"""Config-defined fixed-bucket histograms (`histograms:`), stored in `aggregate_histograms`.

A histogram counts the non-NULL values of a numeric expression per tumbling UTC window,
per `group_by` group and per bucket. Buckets are given by ascending upper bounds; bucket
`i` holds the values `v` with `bounds[i-1] < v <= bounds[i]` (Prometheus `le`), and the
last bucket, index `len(bounds)`, is `+Inf`. NaN values are not counted. Counts only ever
add, so batches and workers merge by summing them (`histogram_buckets` output is upserted
additively); `cumulative` and `percentile` turn merged counts into what Prometheus shows.

Stored rows use `histogram = "histogram." + name`, so they never mix with the latency
sketches of `payment_metrics_5m` (or any other writer of `aggregate_histograms`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.metrics.dynamic import UTC_US, WINDOWS, RuleError, _dimensions, group_by_problems
from paymetrics.metrics.expressions import Expression, ExpressionError, parse_value
from paymetrics.metrics.windows import floor_to_window

__all__ = [
    "BUCKET_SCHEMA",
    "HISTOGRAM_PREFIX",
    "Histogram",
    "compile_histogram",
    "cumulative",
    "histogram_buckets",
    "percentile",
]

HISTOGRAM_PREFIX = "histogram."
BUCKET_SCHEMA = pa.schema(
    [
        pa.field("histogram", pa.string(), nullable=False),
        pa.field("window_start", UTC_US, nullable=False),
        pa.field("window_seconds", pa.int32(), nullable=False),
        pa.field("dimensions", pa.string(), nullable=False),
        pa.field("bucket", pa.int64(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ]
)
"""One row per (histogram, window, dimensions, bucket) with at least one value."""

_WINDOW = "__paymetrics_window"
_BUCKET = "__paymetrics_bucket"


@dataclass(frozen=True)
class Histogram:
    name: str
    column: Expression
    bounds: tuple[float, ...]
    group_by: tuple[str, ...]
    window_seconds: int

    @property
    def stored_name(self) -> str:
        return HISTOGRAM_PREFIX + self.name


def compile_histogram(
    *,
    name: str,
    column: str,
    buckets: Sequence[float],
    group_by: Sequence[str] = (),
    window: str,
    schema: pa.Schema,
) -> Histogram:
    """Check and compile one histogram; raises RuleError listing every problem."""
    problems: list[tuple[str, str]] = []
    expression = None
    try:
        expression = parse_value(column, schema)
    except ExpressionError as error:
        problems.append(("column", str(error)))
    bounds = tuple(float(b) for b in buckets)
    if not bounds:
        problems.append(("buckets", "give at least one upper bound (+Inf is implied)"))
    elif not all(math.isfinite(b) for b in bounds):
        problems.append(("buckets", "upper bounds must be finite (+Inf is implied)"))
    elif any(a >= b for a, b in itertools.pairwise(bounds)):
        problems.append(("buckets", "upper bounds must be strictly ascending"))
    if window not in WINDOWS:
        problems.append(("window", f"unknown window {window!r}; one of: {', '.join(WINDOWS)}"))
    problems.extend(("group_by", message) for message in group_by_problems(group_by, schema))
    if problems or expression is None:
        raise RuleError(problems)
    return Histogram(name, expression, bounds, tuple(sorted(group_by)), WINDOWS[window])


def histogram_buckets(events: pa.Table, histograms: Sequence[Histogram]) -> pa.Table:
    """Bucket counts (BUCKET_SCHEMA) of `events` for each histogram, vectorized."""
    parts = [BUCKET_SCHEMA.empty_table()]
    if events.num_rows == 0:
        return parts[0]
    epoch_us = pc.cast(pc.cast(events["occurred_at"], UTC_US), pa.int64()).to_numpy()
    for histogram in histograms:
        values = histogram.column.evaluate(events)
        values = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        keep = ~np.isnan(values)  # NULL came through as NaN too
        bucket = np.searchsorted(np.asarray(histogram.bounds), values, side="left")
        window = floor_to_window(epoch_us.astype(np.int64, copy=False), histogram.window_seconds)
        work = events.select(list(histogram.group_by))
        work = work.append_column(_WINDOW, pa.array(window))
        work = work.append_column(_BUCKET, pa.array(bucket.astype(np.int64)))
        work = work.filter(pa.array(keep))
        if work.num_rows == 0:
            continue
        keys = [_WINDOW, *histogram.group_by, _BUCKET]
        grouped = work.group_by(keys, use_threads=False).aggregate([([], "count_all")])
        n = grouped.num_rows
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.repeat(pa.scalar(histogram.stored_name), n),
                    pc.cast(grouped[_WINDOW], pa.int64()).cast(UTC_US),
                    pa.repeat(pa.scalar(histogram.window_seconds, pa.int32()), n),
                    _dimensions(grouped, histogram.group_by),
                    pc.cast(grouped[_BUCKET], pa.int64()),
                    pc.cast(grouped["count_all"], pa.int64()),
                ],
                schema=BUCKET_SCHEMA,
            )
        )
    table = pa.concat_tables(parts)
    order = pc.sort_indices(table, sort_keys=[(f.name, "ascending") for f in BUCKET_SCHEMA][:5])
    return table.take(order)


def cumulative(counts: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Prometheus-style cumulative counts (`le` each bound, then +Inf) of bucket counts."""
    return np.cumsum(np.asarray(counts, dtype=np.int64))


def percentile(bounds: Sequence[float], counts: npt.ArrayLike, q: float) -> float | None:
    """The `q` quantile (0..1) estimated like Prometheus `histogram_quantile`: linear
    interpolation within the bucket holding rank q * total; the first bucket starts at 0
    (or at its bound, if that is negative); a rank in +Inf gives the highest finite bound.
    None without any count."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(bounds)} bounds need {len(bounds) + 1} counts, got {len(counts)}")
    total = int(counts.sum())
    if total == 0:
        return None
    rank = q * total
    running = np.cumsum(counts)
    i = int(np.searchsorted(running, rank, side="left"))
    if i >= len(bounds):
        return float(bounds[-1])
    upper = float(bounds[i])
    lower = float(bounds[i - 1]) if i > 0 else min(0.0, upper)
    below = int(running[i - 1]) if i > 0 else 0
    inside = int(counts[i])
    if inside == 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside
