"""A mergeable relative-error quantile sketch (DDSketch-style log buckets).

A value x > 0 goes to bucket ceil(log_gamma(x)) with gamma = (1 + a) / (1 - a);
every value in a bucket is within relative error `a` of the bucket's
representative 2 * gamma^i / (gamma + 1). Buckets are plain (index, count)
pairs, so sketches from any number of batches or workers merge by adding
counts: that is what lets `aggregate_histograms` be an additive upsert.
Zero (and anything below `MIN_VALUE`) goes to the dedicated bucket `ZERO_BUCKET`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALPHA",
    "MIN_VALUE",
    "ZERO_BUCKET",
    "bucket_indices",
    "bucket_values",
    "quantiles_from_buckets",
]

ALPHA: Final = 0.01
GAMMA: Final = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA: Final = math.log(GAMMA)
MIN_VALUE: Final = 1e-6
"""Values below this (in the metric's unit: 1 ns for milliseconds) count as zero."""
ZERO_BUCKET: Final = -(2**31)


def bucket_indices(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Bucket index of each value (values must be finite and >= 0)."""
    out = np.full(values.shape, ZERO_BUCKET, dtype=np.int64)
    positive = values >= MIN_VALUE
    out[positive] = np.ceil(np.log(values[positive]) / _LOG_GAMMA).astype(np.int64)
    return out


def bucket_values(indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Representative value of each bucket: within ALPHA of everything in it."""
    idx = indices.astype(np.float64)
    out = 2.0 * np.exp(idx * _LOG_GAMMA) / (GAMMA + 1.0)
    out[indices == ZERO_BUCKET] = 0.0
    return out


def quantiles_from_buckets(
    indices: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    qs: tuple[float, ...],
    maximum: float | None = None,
) -> list[float | None]:
    """Nearest-rank quantiles of one sketch: the value of rank ceil(q * n).

    `maximum`, the exact largest value, caps the estimates: the true quantile is
    at most the maximum, so capping never moves an estimate further from it.
    """
    group = np.zeros(len(indices), dtype=np.int64)
    estimates = grouped_quantiles(group, indices, counts, 1, qs)[0]
    if maximum is not None:
        estimates = np.minimum(estimates, maximum)
    return [None if np.isnan(v) else float(v) for v in estimates]


def grouped_quantiles(
    group: npt.NDArray[np.int64],
    bucket: npt.NDArray[np.int64],
    count: npt.NDArray[np.int64],
    n_groups: int,
    qs: tuple[float, ...],
) -> npt.NDArray[np.float64]:
    """Nearest-rank quantiles of many sketches at once: shape (n_groups, len(qs)).

    Rows are (group, bucket, count) in any order; a group with no rows gets NaN.
    One sort and one cumulative sum for all groups: no Python loop per sketch.
    """
    out = np.full((n_groups, len(qs)), np.nan)
    counted = count > 0
    group, bucket, count = group[counted], bucket[counted], count[counted]
    if len(group) == 0:
        return out
    order = np.lexsort((bucket, group))
    g, b = group[order], bucket[order]
    cumulative = np.cumsum(count[order])
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    before = np.r_[0, cumulative[ends[:-1] - 1]]
    totals = cumulative[ends - 1] - before
    values = bucket_values(b)
    for column, q in enumerate(qs):
        exact = Fraction(str(q))
        ranks = np.maximum(1, -((-totals * exact.numerator) // exact.denominator))
        positions = np.searchsorted(cumulative, before + ranks, side="left")
        out[g[starts], column] = values[positions]
    return out
