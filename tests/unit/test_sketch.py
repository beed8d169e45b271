"""The latency sketch: nearest-rank quantiles within 1 % of the exact value; merging.

Expected values are computed by sorting: the value of rank ceil(q·n), with q exact.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from typing import Final

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymetrics.metrics.sketch import (
    ALPHA,
    MIN_VALUE,
    ZERO_BUCKET,
    bucket_indices,
    bucket_values,
    grouped_quantiles,
    quantiles_from_buckets,
)

QS: Final = (0.5, 0.95, 0.99)
EXACT_QS: Final = (Fraction(1, 2), Fraction(95, 100), Fraction(99, 100))
SLACK: Final = 1e-9
"""Floating-point slack on top of ALPHA (a value exactly on a bucket edge is at ALPHA)."""

values_st = st.one_of(
    st.just(0.0),
    st.floats(min_value=MIN_VALUE, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([MIN_VALUE, 1e-5, 0.001, 0.5, 1.0, 183.4, 1e6, 1e9]),
    st.integers(0, 10_000).map(float),
)
samples = st.lists(values_st, min_size=1, max_size=200)


def nearest_rank(values: list[float], q: Fraction) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def sketch(values: list[float]) -> Counter[int]:
    return Counter(bucket_indices(np.asarray(values, dtype=np.float64)).tolist())


def rows(counts: Counter[int]) -> tuple[np.ndarray, np.ndarray]:
    keys = list(counts)
    return np.asarray(keys, dtype=np.int64), np.asarray([counts[k] for k in keys], dtype=np.int64)


def assert_close(estimate: float, exact: float) -> None:
    if exact == 0.0:
        assert estimate == 0.0
    else:
        assert abs(estimate - exact) <= (ALPHA + SLACK) * exact, (estimate, exact)


@settings(max_examples=300, deadline=None)
@given(values=samples)
def test_quantiles_within_alpha_of_exact_nearest_rank(values: list[float]) -> None:
    indices, counts = rows(sketch(values))
    got = quantiles_from_buckets(indices, counts, QS)
    assert len(got) == len(QS)
    for estimate, q in zip(got, EXACT_QS, strict=True):
        assert estimate is not None
        assert_close(estimate, nearest_rank(values, q))


@settings(max_examples=200, deadline=None)
@given(values=samples)
def test_maximum_caps_and_keeps_within_alpha(values: list[float]) -> None:
    indices, counts = rows(sketch(values))
    top = max(values)
    got = quantiles_from_buckets(indices, counts, QS, maximum=top)
    for estimate, q in zip(got, EXACT_QS, strict=True):
        assert estimate is not None
        assert estimate <= top
        assert_close(estimate, nearest_rank(values, q))


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [
        (100, 0.95, 95),  # 0.95 * 100 is 95 exactly, not 95.00000000000001 -> 96
        (100, 0.99, 99),
        (100, 0.5, 50),
        (20, 0.95, 19),
        (200, 0.99, 198),
        (7, 0.5, 4),
        (7, 0.95, 7),
        (3, 0.5, 2),
        (2, 0.5, 1),
        (1, 0.99, 1),
    ],
)
def test_rank_is_ceil_q_n_exactly(n: int, q: float, rank: int) -> None:
    # neighbours 5 % apart: an estimate within 1 % identifies the rank
    values = [1.05**k for k in range(1, n + 1)]
    indices, counts = rows(sketch(values))
    (estimate,) = quantiles_from_buckets(indices, counts, (q,))
    assert estimate is not None
    assert_close(estimate, values[rank - 1])
    grouped = grouped_quantiles(np.zeros(len(indices), np.int64), indices, counts, 1, (q,))
    assert grouped.tolist() == [[estimate]]


def test_zero_ranks() -> None:
    indices, counts = rows(sketch([0.0, 0.0, 5.0]))
    assert quantiles_from_buckets(indices, counts, (0.5,)) == [0.0]
    (p99,) = quantiles_from_buckets(indices, counts, (0.99,))
    assert p99 is not None
    assert_close(p99, 5.0)


def test_zero_comes_back_exactly_zero() -> None:
    indices, counts = rows(sketch([0.0] * 10))
    assert indices.tolist() == [ZERO_BUCKET]
    assert quantiles_from_buckets(indices, counts, QS) == [0.0, 0.0, 0.0]
    assert bucket_values(np.array([ZERO_BUCKET], np.int64)).tolist() == [0.0]


@pytest.mark.parametrize("tiny", [5e-324, 1e-300, 1e-7, MIN_VALUE / 2])
def test_values_below_min_value_count_as_zero(tiny: float) -> None:
    assert bucket_indices(np.array([tiny])).tolist() == [ZERO_BUCKET]
    assert bucket_indices(np.array([MIN_VALUE])).tolist() != [ZERO_BUCKET]


def test_empty_sketch() -> None:
    empty = np.array([], dtype=np.int64)
    assert quantiles_from_buckets(empty, empty, QS) == [None, None, None]
    out = grouped_quantiles(empty, empty, empty, 3, QS)
    assert out.shape == (3, 3)
    assert np.isnan(out).all()


@settings(max_examples=200, deadline=None)
@given(a=st.lists(values_st, max_size=100), b=st.lists(values_st, max_size=100))
def test_merging_sketches_adds_counts(a: list[float], b: list[float]) -> None:
    assert sketch(a) + sketch(b) == sketch(a + b)
    if not a + b:
        return
    # merged rows, with the same bucket possibly twice, give the quantiles of the whole
    ia, ca = rows(sketch(a))
    ib, cb = rows(sketch(b))
    merged = quantiles_from_buckets(np.concatenate([ia, ib]), np.concatenate([ca, cb]), QS)
    whole = quantiles_from_buckets(*rows(sketch(a + b)), QS)
    assert merged == whole
    grouped = grouped_quantiles(
        np.zeros(len(ia) + len(ib), np.int64),
        np.concatenate([ia, ib]),
        np.concatenate([ca, cb]),
        1,
        QS,
    )
    assert grouped[0].tolist() == whole


@st.composite
def grouped_input(draw: st.DrawFn) -> tuple[list[list[float]], int]:
    groups = draw(st.lists(st.lists(values_st, max_size=40), min_size=1, max_size=12))
    extra = draw(st.integers(0, 3))  # groups past the last one with rows
    return groups, len(groups) + extra


@settings(max_examples=100, deadline=None)
@given(data=grouped_input(), shuffle=st.randoms(use_true_random=False))
def test_grouped_quantiles_equal_per_group(data, shuffle) -> None:
    groups, n_groups = data
    table: list[tuple[int, int, int]] = []
    for g, values in enumerate(groups):
        table.extend((g, bucket, count) for bucket, count in sketch(values).items())
    shuffle.shuffle(table)
    column = list(zip(*table, strict=True)) if table else [(), (), ()]
    group, bucket, count = (np.asarray(c, dtype=np.int64) for c in column)
    out = grouped_quantiles(group, bucket, count, n_groups, QS)
    assert out.shape == (n_groups, len(QS))
    for g in range(n_groups):
        values = groups[g] if g < len(groups) else []
        if not values:
            assert np.isnan(out[g]).all(), g
            continue
        expected = quantiles_from_buckets(*rows(sketch(values)), QS)
        assert out[g].tolist() == expected
        for estimate, q in zip(out[g].tolist(), EXACT_QS, strict=True):
            assert_close(estimate, nearest_rank(values, q))


def test_group_absent_from_rows_is_nan() -> None:
    bucket = bucket_indices(np.array([10.0, 20.0]))
    out = grouped_quantiles(np.array([0, 2]), bucket, np.array([1, 1]), 4, (0.5,))
    assert np.isnan(out[1, 0])
    assert np.isnan(out[3, 0])
    assert_close(out[0, 0], 10.0)
    assert_close(out[2, 0], 20.0)


@pytest.mark.parametrize(
    ("counts", "lone"),
    [((0, 3), 0), ((3, 0), 1)],
    ids=["first_group_empty", "last_group_empty"],
)
def test_group_with_only_zero_counts_gets_nan(counts: tuple[int, int], lone: int) -> None:
    """A group whose rows all count 0 holds no value: NaN, like `quantiles_from_buckets`'s None.

    It must neither borrow the next group's value nor index past the end.
    """
    group = np.array([0, 1], dtype=np.int64)
    bucket = bucket_indices(np.array([5.0, 500.0]))
    count = np.array(counts, dtype=np.int64)
    assert quantiles_from_buckets(bucket[lone : lone + 1], count[lone : lone + 1], (0.5,)) == [None]
    out = grouped_quantiles(group, bucket, count, 2, (0.5,))
    other = 1 - lone
    assert_close(out[other, 0], [5.0, 500.0][other])
    assert np.isnan(out[lone, 0]), out[lone, 0]
