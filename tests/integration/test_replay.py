"""`paymetrics replay`: after a rule change, recomputing a range from the raw archive gives
exactly what a fresh run with the new rules stores, only in that range, idempotently, with
the rule's new config version; alerts are added, never removed or duplicated."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 1, 1, 21, 0, tzinfo=dt.UTC)
SIMULATION = SimulatorConfig(
    events=12_000,
    seed=41,
    start=START,
    rate_per_second=1.5,  # ~2.2 simulated hours, across midnight
    rate_invalid=0.01,
    rate_duplicate=0.04,
    rate_late=0.01,
)
OLD_RULES = [
    {
        "name": "high_value",
        "filter": "amount_minor >= 50000",
        "aggregate": "sum",
        "value": "amount_minor",
        "group_by": ["merchant_id"],
        "window": "1h",
    },
    {
        "name": "approval_rate",
        "filter": "event_type = 'authorization'",
        "aggregate": "ratio",
        "numerator": "status = 'approved'",
        "group_by": ["card_network"],
        "window": "5m",
    },
]
NEW_RULES = [
    {**OLD_RULES[0], "filter": "amount_minor >= 20000", "window": "15m"},  # filter + window
    OLD_RULES[1],
    {  # a rule added after the fact: backfilled
        "name": "declines_by_code",
        "filter": "status = 'declined'",
        "aggregate": "count",
        "group_by": ["decline_code"],
        "window": "1d",
    },
]
WHOLE = ("--from", "2026-01-01T00:00:00Z", "--to", "2026-01-03T00:00:00Z")
COLUMNS = (
    "metric_name, window_seconds, window_start, dimensions, aggregate, value, count, "
    "value_count, sum, min, max, numerator"
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    with path.open("wb") as handle:
        write_jsonl(SIMULATION, handle)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """`db_url(tag)`: a new empty database of the parametrized kind."""
    if request.param == "sqlite":
        return lambda tag: f"sqlite:///{tmp_path / f'{tag}.db'}"
    make: Callable[[str], str] = request.getfixturevalue("postgres_schema")
    return make


def config(path: Path, rules: list[dict[str, Any]], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"metrics": rules, **extra}))
    return path


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.describe()
    return result


def metric_rows(
    url: str, query_rows: Callable[..., list[dict[str, Any]]], where: str = "1 = 1"
) -> list[tuple[Any, ...]]:
    rows = query_rows(url, f"SELECT {COLUMNS} FROM dynamic_metrics WHERE {where}")
    out = []
    for row in rows:
        start = row["window_start"]
        start = start if isinstance(start, dt.datetime) else dt.datetime.fromisoformat(start)
        row["window_start"] = start.replace(tzinfo=None)
        out.append(tuple(round(v, 9) if isinstance(v, float) else v for v in row.values()))
    return sorted(out, key=repr)


def versions(url: str, query_rows: Callable[..., list[dict[str, Any]]]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for row in query_rows(url, "SELECT metric_name, config_version FROM dynamic_metrics"):
        found.setdefault(row["metric_name"], set()).add(row["config_version"])
    return found


def test_replay_after_a_rule_change_equals_a_fresh_run(
    tmp_path: Path,
    events: Path,
    db_url: Callable[[str], str],
    run_cli: Callable[..., Any],
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    old, new = config(tmp_path / "old.yaml", OLD_RULES), config(tmp_path / "new.yaml", NEW_RULES)
    live, fresh = db_url("live"), db_url("fresh")
    source = ("--source", f"file:{events}", "--batch-max-events", "1500", "--quiet")
    ok(run_cli("run", "-c", old, "--db", live, "--archive", tmp_path / "raw", *source))
    ok(run_cli("run", "-c", new, "--db", fresh, "--archive", tmp_path / "raw2", *source))
    before = metric_rows(live, query_rows)
    assert before != metric_rows(fresh, query_rows)

    replay = ("replay", "-c", new, "--db", live, "--archive", tmp_path / "raw", *WHOLE)
    dry = ok(run_cli(*replay, "--open-windows", "--dry-run", "--format", "json"))
    assert json.loads(dry.stdout)["dry_run"] is True
    assert metric_rows(live, query_rows) == before  # a dry run changes nothing

    done = ok(run_cli(*replay, "--open-windows", "--format", "json"))
    report = json.loads(done.stdout)
    assert report["metrics"] == ["approval_rate", "declines_by_code", "high_value"]
    stored = query_rows(live, "SELECT count(*) AS n FROM normalized_transactions")[0]["n"]
    assert report["events"] == stored
    assert report["archived_rows"] > report["events"]  # redeliveries were archived too
    assert metric_rows(live, query_rows) == metric_rows(fresh, query_rows)
    # The changed and the new rule carry the config version that defined them; the
    # unchanged rule keeps its own.
    assert versions(live, query_rows) == {
        "approval_rate": {1},
        "high_value": {report["config_version"]},
        "declines_by_code": {report["config_version"]},
    }
    assert report["config_version"] > 1

    again = json.loads(ok(run_cli(*replay, "--open-windows", "--format", "json")).stdout)
    assert again["rows_written"] == again["rows_deleted"] == report["rows_written"]
    assert metric_rows(live, query_rows) == metric_rows(fresh, query_rows)


def test_replay_touches_only_its_metric_and_range(
    tmp_path: Path,
    events: Path,
    run_cli: Callable[..., Any],
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    old, new = config(tmp_path / "old.yaml", OLD_RULES), config(tmp_path / "new.yaml", NEW_RULES)
    live, fresh = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'fresh.db'}"
    source = ("--source", f"file:{events}", "--quiet")
    ok(run_cli("run", "-c", old, "--db", live, "--archive", tmp_path / "raw", *source))
    ok(run_cli("run", "-c", new, "--db", fresh, "--no-archive", *source))
    before = metric_rows(live, query_rows)

    # 22:10..23:05 widens to 22:00..23:15 for the 15-minute high_value windows
    window = ("--from", "2026-01-01T22:10:00Z", "--to", "2026-01-01T23:05:00Z")
    ok(run_cli(
        "replay", "-c", new, "--db", live, "--archive", tmp_path / "raw", *window,
        "--metric", "high_value", "--open-windows",
    ))  # fmt: skip
    inside = (
        "metric_name = 'high_value' AND window_start >= '2026-01-01 22:00:00' "
        "AND window_start < '2026-01-01 23:15:00'"
    )
    after = metric_rows(live, query_rows)
    assert metric_rows(live, query_rows, inside) == metric_rows(fresh, query_rows, inside)
    assert metric_rows(live, query_rows, inside)  # the range is not empty
    lo, hi = dt.datetime(2026, 1, 1, 22), dt.datetime(2026, 1, 1, 23, 15)  # noqa: DTZ001 - naive, as read
    replaced = [r for r in before if r[0] == "high_value" and lo <= r[2] < hi]
    assert replaced  # the old 1-hour rows at 22:00 and 23:00 were in range
    assert metric_rows(live, query_rows, f"NOT ({inside})") == [
        r for r in before if r not in replaced
    ]
    assert after != before


def test_replay_refuses_what_it_cannot_do_right(
    tmp_path: Path, events: Path, run_cli: Callable[..., Any]
) -> None:
    rules = config(tmp_path / "rules.yaml", OLD_RULES)
    db = f"sqlite:///{tmp_path / 'db.db'}"
    ok(run_cli("run", "-c", rules, "--db", db, "--archive", tmp_path / "raw",
            "--source", f"file:{events}", "--quiet"))  # fmt: skip
    base = ("replay", "-c", rules, "--db", db, "--archive", tmp_path / "raw")

    unknown = run_cli(*base, *WHOLE, "--metric", "nope", "--open-windows")
    assert unknown.returncode != 0
    assert "no metric rule named 'nope'" in unknown.stderr
    assert "valid names: approval_rate, high_value" in unknown.stderr

    open_range = run_cli(*base, *WHOLE)
    assert open_range.returncode != 0
    assert "may still arrive" in open_range.stderr
    assert "--open-windows" in open_range.stderr

    backwards = run_cli(*base, "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z")
    assert backwards.returncode != 0
    assert "is not after --from" in backwards.stderr

    (tmp_path / "empty").mkdir()
    wrong = run_cli(*base[:-2], "--archive", tmp_path / "empty", *WHOLE, "--open-windows")
    assert wrong.returncode != 0
    assert "holds no events" in wrong.stderr  # a wrong archive must not wipe the metrics


def test_replay_adds_alerts_once(
    tmp_path: Path,
    run_cli: Callable[..., Any],
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    path = tmp_path / "velocity.jsonl"
    with path.open("wb") as handle:
        write_jsonl(SimulatorConfig(events=20_000, seed=5, scenario="velocity"), handle)
    off = config(tmp_path / "off.yaml", OLD_RULES)
    on = config(tmp_path / "on.yaml", OLD_RULES, compliance={"enabled": True})
    live, fresh = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'fresh.db'}"
    source = ("--source", f"file:{path}", "--quiet")
    ok(run_cli("run", "-c", off, "--db", live, "--archive", tmp_path / "raw", *source))
    ok(run_cli("run", "-c", on, "--db", fresh, "--no-archive", *source))
    keys = (
        "SELECT rule, subject_type, subject_id, period_start, period_seconds, measured_value "
        "FROM compliance_alerts WHERE rule IN ('velocity', 'large_transaction', "
        "'daily_aggregate_threshold', 'structuring', 'pan_exposure') ORDER BY 1, 2, 3, 4"
    )
    assert query_rows(live, keys) == []
    expected = query_rows(fresh, keys)
    assert any(a["rule"] == "velocity" for a in expected)

    replay = ("replay", "-c", on, "--db", live, "--archive", tmp_path / "raw",
              "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
              "--open-windows", "--format", "json")  # fmt: skip
    first = json.loads(ok(run_cli(*replay)).stdout)
    assert query_rows(live, keys) == expected
    assert first["alerts_new"] >= len(expected)
    second = json.loads(ok(run_cli(*replay)).stdout)
    assert second["alerts_new"] == 0
    assert query_rows(live, keys) == expected
