"""`paymetrics retention apply`: what is older than its age goes, the rest stays, exactly.

Events spread over about three days; ages are measured from a fixed `--now`, so the
expected survivors are computed independently from the stored rows themselves.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import CliResult, query_rows

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 1, 11, 12, tzinfo=dt.UTC)
RETENTION = """
retention:
  normalized_days: 9        # cutoff 2026-01-02T12:00Z
  raw_archive_days: 9
  dead_letters_days: 1
  metrics_days: 10          # cutoff 2026-01-01T12:00Z
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    make: Callable[[str], str] = request.getfixturevalue("postgres_schema")
    return make("retention")


def parse(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def counts(db_url: str) -> dict[str, list[dt.datetime]]:
    return {
        "normalized_transactions": [
            parse(r["t"])
            for r in query_rows(db_url, "SELECT occurred_at AS t FROM normalized_transactions")
        ],
        "payment_metrics_5m": [
            parse(r["t"])
            for r in query_rows(db_url, "SELECT window_start AS t FROM payment_metrics_5m")
        ],
        "aggregate_histograms": [
            parse(r["t"])
            for r in query_rows(db_url, "SELECT window_start AS t FROM aggregate_histograms")
        ],
        "failed_items": [
            parse(r["t"]) for r in query_rows(db_url, "SELECT first_seen_at AS t FROM failed_items")
        ],
    }


def hours(archive: Path) -> set[str]:
    return {f"{d.parent.name}/{d.name}" for d in archive.glob("date=*/hour=*")}


def test_retention_deletes_exactly_what_is_older(
    run_cli: Callable[..., CliResult], tmp_path: Path, db_url: str
) -> None:
    source = tmp_path / "events.jsonl"
    config = SimulatorConfig(
        events=6_000,
        seed=9,
        rate_per_second=0.025,
        rate_invalid=0.02,
        start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    with source.open("wb") as handle:
        write_jsonl(config, handle)
    archive = tmp_path / "raw"
    settings = tmp_path / "paymetrics.yaml"
    settings.write_text(RETENTION + f"storage:\n  archive_url: {archive}\n")
    result = run_cli("run", "-c", settings, "--source", f"file:{source}", "--db", db_url, "-q")
    assert result.returncode == 0, result.describe()

    before = counts(db_url)
    before_hours = hours(archive)
    now = NOW
    cutoffs = {
        "normalized_transactions": now - dt.timedelta(days=9),
        "payment_metrics_5m": now - dt.timedelta(days=10),
        "aggregate_histograms": now - dt.timedelta(days=10),
        "failed_items": now - dt.timedelta(days=1),
    }
    expected = {t: sum(1 for v in values if v < cutoffs[t]) for t, values in before.items()}
    expected_hours = {
        h
        for h in before_hours
        if dt.datetime.fromisoformat(f"{h[5:15]}T{h[-2:]}:00:00+00:00") + dt.timedelta(hours=1)
        <= now - dt.timedelta(days=9)
    }
    # the data straddles every cutoff, or the test proves little
    assert 0 < expected["normalized_transactions"] < len(before["normalized_transactions"])
    assert 0 < expected["payment_metrics_5m"] < len(before["payment_metrics_5m"])
    assert 0 < len(expected_hours) < len(before_hours)
    # dead letters carry the wall-clock time they were first seen: none is older yet
    assert expected["failed_items"] == 0
    assert before["failed_items"]

    common = ["-c", str(settings), "--db", db_url, "--now", now.isoformat(), "--format", "json"]
    dry = run_cli("retention", "apply", "--dry-run", *common)
    assert dry.returncode == 0, dry.describe()
    planned = {r["what"]: r["would_remove"] for r in json.loads(dry.stdout)}
    assert counts(db_url) == before, "a dry run deletes nothing"
    assert hours(archive) == before_hours

    done = run_cli("retention", "apply", *common)
    assert done.returncode == 0, done.describe()
    removed = {r["what"]: r["removed"] for r in json.loads(done.stdout)}
    assert removed == planned
    for table, number in expected.items():
        assert removed[table] == number, table
    assert removed["raw archive (hour partitions)"] == len(expected_hours)

    after = counts(db_url)
    for table, values in before.items():
        assert sorted(after[table]) == sorted(v for v in values if v >= cutoffs[table]), table
    assert hours(archive) == before_hours - expected_hours

    later = max(before["failed_items"]) + dt.timedelta(days=1, seconds=1)
    done = run_cli(
        "retention", "apply", *common[:-4], "--now", later.isoformat(), "--format", "json"
    )
    assert done.returncode == 0, done.describe()
    assert {r["what"]: r["removed"] for r in json.loads(done.stdout)}["failed_items"] == len(
        before["failed_items"]
    )
    assert query_rows(db_url, "SELECT count(*) AS n FROM failed_items") == [{"n": 0}]


def test_retention_shorter_than_lateness_is_refused(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    settings = tmp_path / "paymetrics.yaml"
    settings.write_text("retention:\n  normalized_days: 3\n")
    result = run_cli("config", "validate", settings)
    assert result.returncode == 1
    assert "retention.normalized_days: 3 days is shorter than lateness.max_lateness_seconds" in (
        result.stderr
    )


def test_retention_shorter_than_customer_periods_is_refused(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """7 days cover the default lateness (7 days) alone, not plus the daily aggregate's
    day: the per-customer rules would lose the start of an open period."""
    settings = tmp_path / "paymetrics.yaml"
    settings.write_text("retention:\n  normalized_days: 7\ncompliance:\n  enabled: true\n")
    result = run_cli("config", "validate", settings)
    assert result.returncode == 1
    assert "shorter than the longest per-customer compliance period (86400 s)" in result.stderr
    settings.write_text(
        "retention:\n  normalized_days: 7\ncompliance:\n  enabled: true\n"
        "  daily_aggregate_threshold: {enabled: false}\n"
        "  structuring: {enabled: false}\n  velocity: {enabled: false}\n"
    )
    assert run_cli("config", "validate", settings).returncode == 0
