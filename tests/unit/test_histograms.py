"""Config-defined fixed-bucket histograms: bucket counts equal a numpy computation, batches
add up to the whole, and percentiles interpolate within buckets like Prometheus."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from paymetrics.config.model import EVENT_SCHEMA
from paymetrics.metrics.dynamic import RuleError
from paymetrics.metrics.histograms import (
    BUCKET_SCHEMA,
    Histogram,
    compile_histogram,
    cumulative,
    histogram_buckets,
    percentile,
)

BOUNDS = [10.0, 50.0, 100.0, 250.0]


def events(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    latency = rng.gamma(2.0, 40.0, n)
    latency[rng.random(n) < 0.1] = np.nan
    latency[:4] = [10.0, 50.0, 250.0, 250.0001]  # on the bounds: `le`
    occurred = rng.integers(1_767_225_600_000_000, 1_767_225_600_000_000 + 3 * 3_600_000_000, n)
    return pa.table(
        {
            "occurred_at": pa.array(occurred, pa.timestamp("us", tz="UTC")),
            "latency_ms": pa.array(latency, from_pandas=True),
            "channel": pa.array(
                [("pos", "ecommerce", None)[i] for i in rng.integers(0, 3, n)], pa.string()
            ),
        }
    )


def compiled() -> Histogram:
    return compile_histogram(
        name="lat",
        column="latency_ms * 2",
        buckets=BOUNDS,
        group_by=["channel"],
        window="1h",
        schema=EVENT_SCHEMA,
    )


def as_counts(table: pa.Table) -> dict[tuple[object, ...], int]:
    out: dict[tuple[object, ...], int] = {}
    for r in table.to_pylist():
        key = (r["histogram"], r["window_start"], r["window_seconds"], r["dimensions"], r["bucket"])
        out[key] = out.get(key, 0) + r["count"]
    return out


def numpy_counts(table: pa.Table) -> dict[tuple[object, ...], int]:
    values = table["latency_ms"].to_numpy(zero_copy_only=False) * 2
    micros = table["occurred_at"].cast(pa.int64()).to_numpy()
    hours = micros // 3_600_000_000 * 3_600_000_000
    channels = table["channel"].to_pylist()
    out: dict[tuple[object, ...], int] = {}
    for value, hour, channel in zip(values, hours, channels, strict=True):
        if np.isnan(value):
            continue
        bucket = next((i for i, b in enumerate(BOUNDS) if value <= b), len(BOUNDS))
        start = pa.scalar(int(hour), pa.timestamp("us", tz="UTC")).as_py()
        key = (
            "histogram.lat",
            start,
            3600,
            json.dumps({"channel": channel}, separators=(",", ":")),
            bucket,
        )
        out[key] = out.get(key, 0) + 1
    return out


def test_bucket_counts_equal_numpy() -> None:
    table = events(20_000, 1)
    result = histogram_buckets(table, [compiled()])
    assert result.schema == BUCKET_SCHEMA
    assert as_counts(result) == numpy_counts(table)


def test_batches_add_up_to_the_whole() -> None:
    table = events(9_000, 2)
    whole = as_counts(histogram_buckets(table, [compiled()]))
    merged: dict[tuple[object, ...], int] = {}
    for start in range(0, table.num_rows, 1_000):
        part = histogram_buckets(table.slice(start, 1_000), [compiled()])
        for key, count in as_counts(part).items():
            merged[key] = merged.get(key, 0) + count
    assert merged == whole


def test_percentiles_interpolate_within_buckets() -> None:
    bounds = [1.0, 2.0, 4.0]
    counts = [10, 10, 20, 0]
    assert cumulative(counts).tolist() == [10, 20, 40, 40]
    assert percentile(bounds, counts, 0.25) == pytest.approx(1.0)
    assert percentile(bounds, counts, 0.5) == pytest.approx(2.0)
    assert percentile(bounds, counts, 0.75) == pytest.approx(3.0)
    assert percentile(bounds, counts, 0.125) == pytest.approx(0.5)  # first bucket from 0
    assert percentile(bounds, [0, 0, 0, 5], 0.5) == 4.0  # in +Inf: the highest bound
    assert percentile(bounds, [0, 0, 0, 0], 0.5) is None


def test_invalid_histograms_list_every_problem() -> None:
    with pytest.raises(RuleError) as error:
        compile_histogram(
            name="x",
            column="status",
            buckets=[5, 1],
            group_by=["nope"],
            window="2h",
            schema=EVENT_SCHEMA,
        )
    where = [w for w, _ in error.value.problems]
    assert where == ["column", "buckets", "window", "group_by"]
