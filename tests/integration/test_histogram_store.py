"""Config-defined histograms through `paymetrics run` into SQLite and PostgreSQL.

Stored bucket counts must equal a numpy computation over the stored events (batches are
small, so rows are added up across many batches), and `paymetrics query histogram`
must show Prometheus-style cumulative counts and interpolated percentiles.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import CliResult, dump_table, dump_table_columns

from paymetrics.metrics.histograms import percentile
from paymetrics.simulator import SimulatorConfig

pytestmark = pytest.mark.slow

BOUNDS = [25.0, 50.0, 100.0, 200.0, 400.0, 800.0]
CONFIG = f"""
batching: {{batch_max_events: 700}}
histograms:
  - name: auth_latency
    column: "latency_ms + 0.5"
    buckets: {json.dumps(BOUNDS)}
    group_by: [channel]
    window: 15m
"""


def expected_counts(url: str) -> dict[tuple[Any, ...], int]:
    rows = dump_table(url, "normalized_transactions")
    names = dump_table_columns("normalized_transactions")
    out: dict[tuple[Any, ...], int] = {}
    for row in rows:
        r = dict(zip(names, row, strict=True))
        if r["latency_ms"] is None:
            continue
        value = r["latency_ms"] + 0.5
        bucket = int(np.searchsorted(np.asarray(BOUNDS), value, side="left"))
        occurred: dt.datetime = r["occurred_at"]
        seconds = int(occurred.timestamp()) // 900 * 900
        start = dt.datetime.fromtimestamp(seconds, dt.UTC)
        dims = json.dumps({"channel": r["channel"]}, separators=(",", ":"))
        key = ("histogram.auth_latency", start, 900, dims, bucket)
        out[key] = out.get(key, 0) + 1
    return out


def check(run_cli: Callable[..., CliResult], tmp_path: Path, events: Path, url: str) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(CONFIG)
    result = run_cli("run", "-c", config, "--source", f"file:{events}", "--db", url, "--no-archive")
    assert result.returncode == 0, result.describe()
    stored = {
        tuple(r[:5]): r[5]
        for r in dump_table(url, "aggregate_histograms")
        if r[0] == "histogram.auth_latency"
    }
    expected = expected_counts(url)
    assert stored == expected

    shown = run_cli(
        "query",
        "histogram",
        "--name",
        "auth_latency",
        "--format",
        "json",
        "-c",
        config,
        "--db",
        url,
    )
    assert shown.returncode == 0, shown.describe()
    groups: dict[str, list[int]] = {}
    for (_, _, _, dims, bucket), count in expected.items():
        groups.setdefault(dims, [0] * (len(BOUNDS) + 1))[bucket] += count
    rows = {r["dimensions"]: r for r in json.loads(shown.stdout)}
    assert set(rows) == set(groups)
    for dims, counts in groups.items():
        row = rows[dims]
        running = np.cumsum(counts).tolist()
        labels = [f"{b:g}" for b in BOUNDS] + ["+Inf"]
        assert json.loads(row["buckets"]) == dict(zip(labels, running, strict=True))
        assert row["count"] == sum(counts)
        assert row["p95"] == pytest.approx(percentile(BOUNDS, counts, 0.95), rel=1e-12)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory, write_simulated: Callable[..., int]) -> Path:
    path = tmp_path_factory.mktemp("histograms") / "events.jsonl"
    write_simulated(
        path,
        SimulatorConfig(
            events=10_000,
            seed=8,
            rate_per_second=2.0,
            rate_duplicate=0.03,
            rate_late=0.01,
            rate_invalid=0.01,
            scenario="latency_degradation",
        ),
    )
    return path


def test_sqlite(
    run_cli: Callable[..., CliResult], tmp_path: Path, events: Path, tmp_db_url: str
) -> None:
    check(run_cli, tmp_path, events, tmp_db_url)


def test_postgres(
    run_cli: Callable[..., CliResult],
    tmp_path: Path,
    events: Path,
    postgres_schema: Callable[[str], str],
) -> None:
    check(run_cli, tmp_path, events, postgres_schema("hist"))
