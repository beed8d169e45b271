"""Config-defined metrics (`dynamic_metrics`) equal an independent DuckDB computation.

A simulated file (duplicates, invalid and late events) goes through `paymetrics run` with
a set of rules covering every aggregate and every window, into SQLite and PostgreSQL,
in small batches so partials are merged across batches. Then each rule is computed again
with DuckDB SQL straight over the stored `normalized_transactions` rows: the rule's
expressions are translated to DuckDB SQL by hand below (`RULES`), sharing no code with
`paymetrics.metrics`. Every `dynamic_metrics` row must equal the DuckDB row: counts and
integer-valued sums/min/max exactly, float sums and avg/ratio to 1e-12 relative, and no
row may be missing or extra.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from paymetrics.simulator import SimulatorConfig

duckdb = pytest.importorskip("duckdb")

pytestmark = pytest.mark.slow

SIMULATION = SimulatorConfig(
    events=30_000,
    seed=20_261_204,
    start=dt.datetime(2026, 1, 1, 22, 30, tzinfo=dt.UTC),
    rate_per_second=3.0,  # ~3 simulated hours: several 1h windows, across midnight (two 1d)
    rate_invalid=0.02,
    rate_duplicate=0.03,
    rate_late=0.02,
    rate_pan_leak=0.002,
)
BATCH = 2_500
REL = 1e-12


@dataclass(frozen=True)
class Rule:
    """One metric rule: its config text and the same rule written in DuckDB SQL."""

    name: str
    aggregate: str
    window: str
    filter: str | None = None
    value: str | None = None
    numerator: str | None = None
    group_by: tuple[str, ...] = ()
    duck_filter: str | None = None
    """DuckDB SQL of `filter` (when the text differs); None with a filter: the same text."""
    duck_value: str | None = None
    duck_numerator: str | None = None
    integer_value: bool = False
    """The value is an integer: its sum, min and max must match exactly."""

    def sql(self, field: str) -> str | None:
        duck: str | None = getattr(self, f"duck_{field}")
        text: str | None = getattr(self, field)
        return duck if duck is not None else text


RULES = (
    Rule(
        "approved_by_network_1m",
        "count",
        "1m",
        filter="event_type = 'authorization' AND status IN ('approved')",
        group_by=("card_network",),
    ),
    Rule(
        "mid_amount_sum_5m",
        "sum",
        "5m",
        filter="amount_minor BETWEEN 1000 AND 500000 AND currency NOT IN ('JPY', 'INR')",
        value="amount_minor * 2 - 1",
        group_by=("currency",),
        integer_value=True,
    ),
    Rule(
        "auth_latency_avg_15m",
        "avg",
        "15m",
        filter="event_type IN ('authorization', 'capture')",  # captures: latency_ms NULL
        value="latency_ms / 2 + 1",
        group_by=("payment_method", "country"),
    ),
    Rule(
        "amount_remainder_min_1h",
        "min",
        "1h",
        filter="decline_code IS NULL AND NOT (channel = 'moto')",
        value="amount_minor % 1000 - abs(-7)",
        group_by=("event_type",),
        integer_value=True,
    ),
    Rule(
        "scaled_amount_max_1d",
        "max",
        "1d",
        filter="merchant_id >= 'mch_8' AND merchant_id < 'mch_c'",
        value="CASE WHEN currency = 'JPY' THEN amount_minor * 100 "
        "WHEN currency IN ('EUR', 'GBP') THEN amount_minor + 1 ELSE amount_minor END",
        group_by=("pan_exposure",),
        integer_value=True,
    ),
    Rule(
        "approval_ratio_5m",
        "ratio",
        "5m",
        filter="event_type = 'authorization'",
        numerator="status = 'approved'",
        group_by=("merchant_id",),
    ),
    Rule(
        "decline_ratio_1h",
        "ratio",
        "1h",
        filter="event_type = 'authorization' AND country IS NOT NULL",
        numerator="status = 'declined' AND coalesce(decline_code, '') LIKE '%fund%' "
        "OR card_network IS NULL",
        group_by=("country",),
    ),
    Rule(
        "all_events_1d",
        "count",
        "1d",
        group_by=("channel", "event_type"),
    ),
    Rule(
        "refund_value_sum_1m",
        "sum",
        "1m",
        filter="event_type IN ('refund', 'capture') AND lower(channel) = 'ecommerce'",
        value="abs(-amount_minor) + length(merchant_id) * 3",
        integer_value=True,
    ),
    Rule(
        "latency_weighted_avg_1h",
        "avg",
        "1h",
        filter="latency_ms BETWEEN 50 AND 400.5 OR upper(status) <> 'APPROVED'",
        value="CASE WHEN latency_ms > 200 THEN latency_ms * 1.5 ELSE latency_ms END",
        group_by=("channel",),
    ),
    Rule(
        "null_network_count_15m",
        "count",
        "15m",
        filter="card_network IS NULL AND amount_minor > 0",
    ),
    Rule(
        "max_latency_5m",
        "max",
        "5m",
        filter="latency_ms IS NOT NULL",
        value="latency_ms - 0.25",
        group_by=("card_network", "status"),
    ),
    Rule(
        "signed_remainder_min_15m",
        "min",
        "15m",
        filter="status <> 'error'",
        value="(amount_minor - 50000) % 7",  # truncated: the sign of the dividend
        group_by=("currency",),
        integer_value=True,
    ),
    Rule(
        "third_amount_sum_1d",
        "sum",
        "1d",
        filter="customer_id IS NOT NULL OR country IN ('US', 'DE')",
        value="amount_minor / 3",  # true division
        group_by=("status",),
    ),
    Rule(
        "latency_or_zero_avg_1m",
        "avg",
        "1m",
        filter="event_type <> 'capture' AND channel IS NOT NULL",
        value="coalesce(latency_ms, 0) + 0.5",
    ),
)
WINDOW_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}


def test_rules_cover_every_aggregate_and_window() -> None:
    assert {r.aggregate for r in RULES} == {"count", "sum", "avg", "min", "max", "ratio"}
    assert {r.window for r in RULES} == set(WINDOW_SECONDS)
    assert len({r.name for r in RULES}) == len(RULES) >= 8


def config_yaml() -> str:
    lines = ["logging: {level: WARNING}", f"batching: {{batch_max_events: {BATCH}}}", "metrics:"]
    for rule in RULES:
        lines += [f"  - name: {rule.name}", f"    aggregate: {rule.aggregate}"]
        lines.append(f"    window: {rule.window}")
        for key in ("filter", "value", "numerator"):
            text = getattr(rule, key)
            if text is not None:
                lines.append(f"    {key}: {json.dumps(text)}")
        lines.append(f"    group_by: [{', '.join(rule.group_by)}]")
    return "\n".join(lines) + "\n"


# -- the independent computation ------------------------------------------------------

EVENT_COLUMNS = (
    ("event_id", pa.string()),
    ("event_type", pa.string()),
    ("occurred_us", pa.int64()),
    ("merchant_id", pa.string()),
    ("amount_minor", pa.int64()),
    ("currency", pa.string()),
    ("status", pa.string()),
    ("payment_method", pa.string()),
    ("decline_code", pa.string()),
    ("card_network", pa.string()),
    ("latency_ms", pa.float64()),
    ("country", pa.string()),
    ("channel", pa.string()),
    ("customer_id", pa.string()),
    ("pan_exposure", pa.bool_()),
)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stored_events(url: str) -> pa.Table:
    """`normalized_transactions` as an Arrow table, `occurred_at` as µs since the epoch."""
    from paymetrics.storage.tables import normalized_transactions as t

    names = [n for n, _ in EVENT_COLUMNS if n != "occurred_us"]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.occurred_at, *(t.c[n] for n in names))).all()
    finally:
        engine.dispose()
    columns: dict[str, list[Any]] = {n: [] for n, _ in EVENT_COLUMNS}
    for occurred, *values in rows:
        delta = occurred - EPOCH
        columns["occurred_us"].append(
            (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        )
        for name, value in zip(names, values, strict=True):
            columns[name].append(value)
    schema = pa.schema(list(EVENT_COLUMNS))
    return pa.Table.from_pydict(columns, schema=schema)


def duckdb_rows(events: pa.Table, rule: Rule) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rule computed by DuckDB: key (metric, window_seconds, window_start, dimensions)."""
    width = WINDOW_SECONDS[rule.window] * 1_000_000
    where = rule.sql("filter") or "TRUE"
    value = rule.sql("value")
    numerator = rule.sql("numerator")
    value_sql = f"({value})" if value is not None else "NULL::DOUBLE"
    numerator_sql = (
        f"count(*) FILTER (WHERE coalesce(({numerator}), FALSE))"
        if numerator is not None
        else "NULL"
    )
    groups = "".join(f", {c}" for c in rule.group_by)
    sql = f"""
        SELECT (occurred_us // {width}) * {width} AS window_us{groups},
               count(*) AS n, count(v) AS value_count,
               sum(v) AS total, min(v) AS lowest, max(v) AS highest,
               {numerator_sql} AS numerator
        FROM (SELECT *, {value_sql} AS v FROM events WHERE coalesce(({where}), FALSE))
        GROUP BY ALL
    """
    connection = duckdb.connect()
    try:
        connection.register("events", events)
        cursor = connection.execute(sql)
        names = [d[0] for d in cursor.description]
        result = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        connection.close()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in result:
        dimensions = json.dumps(
            {c: row[c] for c in rule.group_by},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        start = EPOCH + dt.timedelta(microseconds=row["window_us"])
        key = (rule.name, WINDOW_SECONDS[rule.window], start, dimensions)
        n, value_count = row["n"], row["value_count"]
        total = None if value is None or value_count == 0 else row["total"]
        metric: float | None
        if rule.aggregate == "count":
            metric = float(n)
        elif rule.aggregate in ("sum", "min", "max"):
            metric = {"sum": total, "min": row["lowest"], "max": row["highest"]}[rule.aggregate]
        elif rule.aggregate == "avg":
            metric = None if value_count == 0 else total / value_count
        else:
            metric = row["numerator"] / n
        out[key] = {
            "aggregate": rule.aggregate,
            "count": n,
            "value_count": value_count if value is not None else 0,
            "sum": None if total is None else float(total),
            "min": None if row["lowest"] is None else float(row["lowest"]),
            "max": None if row["highest"] is None else float(row["highest"]),
            "numerator": row["numerator"],
            "value": None if metric is None else float(metric),
        }
    return out


def stored_rows(url: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    from paymetrics.storage.tables import metadata

    t = metadata.tables["dynamic_metrics"]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t)).mappings().all()
    finally:
        engine.dispose()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row["metric_name"], row["window_seconds"], row["window_start"], row["dimensions"])
        assert key not in out, f"two rows (config versions?) for {key}"
        out[key] = {k: row[k] for k in ("aggregate", "count", "value_count", "sum", "min", "max")}
        out[key] |= {"numerator": row["numerator"], "value": row["value"]}
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0) or a == b


def compare(
    stored: dict[tuple[Any, ...], dict[str, Any]],
    expected: dict[tuple[Any, ...], dict[str, Any]],
) -> list[str]:
    problems = [f"missing {k}: {expected[k]}" for k in sorted(expected.keys() - stored.keys())]
    problems += [f"extra {k}: {stored[k]}" for k in sorted(stored.keys() - expected.keys())]
    integer_rules = {r.name for r in RULES if r.integer_value}
    for key in sorted(expected.keys() & stored.keys()):
        want, got = expected[key], stored[key]
        exact = ["aggregate", "count", "value_count", "numerator"]
        approx = ["value"]
        if key[0] in integer_rules:
            exact += ["sum", "min", "max"]
            if want["aggregate"] != "avg":
                exact.append("value")
                approx = []
        else:
            exact += ["min", "max"]  # a min or max is one of the values: no rounding
            approx.append("sum")
        for column in exact:
            if want[column] != got[column]:
                problems.append(f"{key} {column}: stored {got[column]!r}, DuckDB {want[column]!r}")
        for column in approx:
            if not close(want[column], got[column]):
                problems.append(f"{key} {column}: stored {got[column]!r}, DuckDB {want[column]!r}")
    return problems


# -- the runs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_file(
    tmp_path_factory: pytest.TempPathFactory, write_simulated: Callable[..., int]
) -> Path:
    path = tmp_path_factory.mktemp("dynamic-duckdb") / "events.jsonl"
    write_simulated(path, SIMULATION)
    return path


def run_and_check(run_cli: Callable[..., Any], tmp_path: Path, events_file: Path, url: str) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(config_yaml())
    result = run_cli(
        "run",
        "--config",
        config,
        "--source",
        f"file:{events_file}",
        "--db",
        url,
        "--no-archive",
        "--quiet",
    )
    assert result.returncode == 0, result.describe()
    events = stored_events(url)
    assert events.num_rows > 25_000
    expected: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rule in RULES:
        computed = duckdb_rows(events, rule)
        assert computed, f"rule {rule.name} selects no event: the test would prove nothing"
        expected |= computed
    # the cases that make the comparison worth it are there
    assert any(":null" in key[3] for key in expected), "no NULL group"
    assert any(0 < v["value_count"] < v["count"] for v in expected.values()), "no NULL value"
    assert len({key[2] for key in expected if key[1] == 86_400}) >= 2, "one 1d window only"
    problems = compare(stored_rows(url), expected)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_sqlite_equals_duckdb(
    run_cli: Callable[..., Any], tmp_path: Path, events_file: Path, tmp_db_url: str
) -> None:
    run_and_check(run_cli, tmp_path, events_file, tmp_db_url)


def test_postgres_equals_duckdb(
    run_cli: Callable[..., Any],
    tmp_path: Path,
    events_file: Path,
    postgres_schema: Callable[[str], str],
) -> None:
    run_and_check(run_cli, tmp_path, events_file, postgres_schema("dynduck"))
