"""`paymetrics` as a user runs it: real subprocesses, exit codes, stdout and stderr."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import paymetrics
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.storage.migrate import head_revision

Run = Callable[..., Any]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


def flat(text: str) -> str:
    """Terminal-boxed text as one line (usage errors come in a rich panel)."""
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def jsonl(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def event(event_id: str, occurred_at: str, **fields: Any) -> dict[str, Any]:
    e = {
        "event_id": event_id,
        "event_type": "authorization",
        "transaction_id": f"txn_{event_id}",
        "occurred_at": occurred_at,
        "merchant_id": "m_1",
        "amount_minor": 100,
        "currency": "USD",
        "status": "approved",
        "payment_method": "card",
    }
    e.update(fields)
    return e


SMALL_RUN = jsonl(
    event("c1", "2024-03-01T12:00:10Z", latency_ms=100.0),
    event("c2", "2024-03-01T12:01:00Z", status="declined", amount_minor=5, latency_ms=300.0),
    event("c3", "2024-03-01T12:05:00Z", merchant_id="m_2", payment_method="wallet"),
    event("c4", "2024-03-01T12:11:00+01:00", currency="eur", amount_minor=7),  # 11:11Z
    event("c5", "2024-03-01T12:12:00Z", event_type="capture", amount_minor=100),
) + (
    '{"event_id": "c6", "amount_minor": 1.5}\n'
    '{"event_id": "c7", "occurred_at": "2024-03-01"}\n'
    '{"event_id": "c8", "amount_minor": "1"}\n'
)
METRIC_KEYS = [
    ("2024-03-01T11:10:00+00:00", "m_1", "card", "EUR"),
    ("2024-03-01T12:00:00+00:00", "m_1", "card", "USD"),
    ("2024-03-01T12:05:00+00:00", "m_2", "wallet", "USD"),
    ("2024-03-01T12:10:00+00:00", "m_1", "card", "USD"),
]


@pytest.fixture(scope="module")
def small_db(build_once: Callable[..., Path], run_cli_in: Run) -> str:
    """A database holding SMALL_RUN, built once and only read (queries never write)."""

    def build(work: Path) -> None:
        (work / "small.jsonl").write_text(SMALL_RUN, encoding="utf-8")
        args = ("--source", f"file:{work / 'small.jsonl'}", "--db", f"sqlite:///{work / 'pm.db'}")
        result = run_cli_in("run", *args, "--no-archive", "-q", cwd=work)
        assert result.returncode == 0, result.describe()

    return f"sqlite:///{build_once('cli-small-db', build) / 'pm.db'}"


# -- help and usage ------------------------------------------------------------------


def test_help_lists_the_commands(run_cli: Run) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.describe()
    for command in ("run", "simulate", "query", "db", "demo", "bench"):
        assert command in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == paymetrics.__version__


def test_run_help_lists_its_options(run_cli: Run) -> None:
    """At the default width (80 columns, as in a plain terminal) every option shows in full."""
    result = run_cli("run", "--help")
    assert result.returncode == 0, result.describe()
    for option in (
        "--source",
        "--db",
        "--archive",
        "--no-archive",
        "--batch-max-events",
        "--max-lateness-seconds",
        "--json",
    ):
        assert option in result.stdout, option


def test_unknown_source_scheme_is_one_line_naming_the_schemes(
    run_cli: Run, tmp_db_url: str
) -> None:
    result = run_cli("run", "--source", "nope:x", "--db", tmp_db_url, "--no-archive")
    assert result.returncode != 0
    line = one_line(result.stderr)
    for part in ("nope:x", "file:", "simulator:"):
        assert part in line, line


@pytest.mark.parametrize(
    "missing",
    ["/no/such/file", "{tmp}/a/rather/long/directory/that/does/not/exist/events-2024-03-01.jsonl"],
    ids=["short", "long"],
)
def test_missing_input_file_exits_2_naming_the_path(
    run_cli: Run, tmp_path: Path, tmp_db_url: str, missing: str
) -> None:
    path = missing.format(tmp=tmp_path)
    result = run_cli("run", "--source", f"file:{path}", "--db", tmp_db_url, "--no-archive")
    assert result.returncode == 2, result.describe()
    line = one_line(result.stderr)
    assert line.startswith("error:"), line
    assert path in line, line


@pytest.mark.parametrize(
    "make_url",
    [
        lambda tmp: "sqlite:////proc/nonexistent/x.db",
        lambda tmp: "sqlite:////proc/x.db",
        lambda tmp: f"sqlite:///{tmp}/a-regular-file/x.db",
    ],
    ids=["missing-dir-under-proc", "unwritable-dir", "parent-is-a-file"],
)
def test_unusable_database_exits_2_with_one_database_error_line(
    run_cli: Run, tmp_path: Path, make_url: Callable[[Path], str]
) -> None:
    (tmp_path / "a-regular-file").write_text("not a directory")
    source = tmp_path / "in.jsonl"
    source.write_text(SMALL_RUN)
    result = run_cli(
        "run", "--source", f"file:{source}", "--db", make_url(tmp_path), "--no-archive"
    )
    assert "Traceback" not in result.stderr, result.describe()
    assert result.returncode == 2, result.describe()
    assert one_line(result.stderr).startswith("error: database: "), result.stderr


# -- simulate ------------------------------------------------------------------------


def test_simulate_to_stdout_is_deterministic(run_cli: Run) -> None:
    args = ("simulate", "--events", "500", "--seed", "11", "--rate-invalid", "0.05", "-o", "-")
    first, again = run_cli(*args), run_cli(*args)
    assert first.returncode == again.returncode == 0, first.describe()
    assert first.stdout_bytes == again.stdout_bytes
    lines = first.stdout_bytes.split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == 500
    expected = io.BytesIO()
    write_jsonl(SimulatorConfig(events=500, seed=11, rate_invalid=0.05), expected)
    assert first.stdout_bytes == expected.getvalue()
    other = run_cli("simulate", "--events", "500", "--seed", "12", "--rate-invalid", "0.05")
    assert other.returncode == 0
    assert other.stdout_bytes != first.stdout_bytes


# -- query ---------------------------------------------------------------------------


def test_query_metrics_json(run_cli: Run, small_db: str) -> None:
    result = run_cli("query", "metrics", "--db", small_db, "--format", "json")
    assert result.returncode == 0, result.describe()
    data = json.loads(result.stdout)
    keys = [(r["window_start"], r["merchant_id"], r["payment_method"], r["currency"]) for r in data]
    assert keys == METRIC_KEYS  # oldest window first
    noon = data[1]
    assert (noon["authorizations"], noon["approved"], noon["declined"]) == (2, 1, 1)
    assert noon["approval_rate"] == 0.5
    assert noon["approved_amount_minor"] == 100
    assert noon["latency_max_ms"] == 300.0
    assert noon["latency_p50_ms"] == pytest.approx(100.0, rel=0.01)
    assert noon["latency_p99_ms"] == pytest.approx(300.0, rel=0.01)
    capture = data[3]
    assert (capture["authorizations"], capture["captures"]) == (0, 1)
    assert capture["captured_amount_minor"] == 100
    assert capture["approval_rate"] is None


def test_query_metrics_csv_and_table(run_cli: Run, small_db: str) -> None:
    result = run_cli("query", "metrics", "--db", small_db, "--format", "csv")
    assert result.returncode == 0, result.describe()
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [
        (r["window_start"], r["merchant_id"], r["payment_method"], r["currency"]) for r in rows
    ] == (METRIC_KEYS)
    assert rows[1]["authorizations"] == "2"
    assert rows[1]["approval_rate"] == "0.5"
    assert rows[3]["approval_rate"] == ""
    table = run_cli(
        "query", "metrics", "--db", small_db, "--format", "table", env={"COLUMNS": "400"}
    )
    assert table.returncode == 0, table.describe()
    assert "payment_metrics_5m" in table.stdout
    for _, merchant, method, currency in METRIC_KEYS:
        assert merchant in table.stdout
        assert method in table.stdout
        assert currency in table.stdout
    body = [line for line in table.stdout.splitlines() if "2024-03-01" in line]
    assert len(body) == len(METRIC_KEYS)
    filtered = run_cli("query", "metrics", "--db", small_db, "--merchant", "m_2", "--format", "csv")
    assert [r["merchant_id"] for r in csv.DictReader(io.StringIO(filtered.stdout))] == ["m_2"]


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (("--from", "2024-03-01T12:00:00Z"), METRIC_KEYS[1:]),
        (("--to", "2024-03-01T12:00:00Z"), METRIC_KEYS[:1]),
        (("--from", "2024-03-01T13:05:00+01:00", "--to", "2024-03-01T12:10:00Z"), METRIC_KEYS[2:3]),
        (("--from", "2024-03-01", "--to", "2024-03-02"), METRIC_KEYS),
        (("--from", "2024-03-02"), []),
    ],
    ids=["from", "to", "offset-window", "dates", "nothing"],
)
def test_query_metrics_from_to(
    run_cli: Run, small_db: str, window: tuple[str, ...], expected: list[tuple[str, ...]]
) -> None:
    result = run_cli("query", "metrics", "--db", small_db, *window, "--format", "json")
    assert result.returncode == 0, result.describe()
    data = json.loads(result.stdout)
    assert [
        (r["window_start"], r["merchant_id"], r["payment_method"], r["currency"]) for r in data
    ] == (expected)


@pytest.mark.parametrize("command", ["metrics", "dlq"])
def test_query_rejects_a_naive_from(run_cli: Run, small_db: str, command: str) -> None:
    result = run_cli("query", command, "--db", small_db, "--from", "2024-03-01T12:00:00")
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.stderr
    message = flat(result.stderr)
    for part in ("--from", "2024-03-01T12:00:00", "no UTC offset"):
        assert part in message, message


def test_query_dlq_rows_and_summary(run_cli: Run, small_db: str) -> None:
    result = run_cli("query", "dlq", "--db", small_db, "--format", "json")
    assert result.returncode == 0, result.describe()
    data = json.loads(result.stdout)
    source = Path(small_db.removeprefix("sqlite:///")).with_name("small.jsonl")
    assert [(r["position"], r["reason"], r["event_id"]) for r in data] == [
        (6, "invalid_type", "c6"),
        (7, "invalid_timestamp", "c7"),
        (8, "invalid_type", "c8"),
    ]
    assert {(r["source_id"], r["partition"]) for r in data} == {(f"file:{source}", str(source))}
    assert data[0]["payload"] == '{"event_id": "c6", "amount_minor": 1.5}'
    assert "amount_minor" in data[0]["message"]
    for r in data:
        seen = dt.datetime.fromisoformat(r["first_seen_at"])
        assert seen.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - seen) < dt.timedelta(hours=1)
    only = run_cli(
        "query", "dlq", "--db", small_db, "--reason", "invalid_timestamp", "--format", "json"
    )
    assert [r["position"] for r in json.loads(only.stdout)] == [7]
    summary = run_cli("query", "dlq", "--db", small_db, "--summary", "--format", "json")
    assert summary.returncode == 0, summary.describe()
    assert json.loads(summary.stdout) == [
        {"reason": "invalid_type", "count": 2},
        {"reason": "invalid_timestamp", "count": 1},
    ]
    future = run_cli(
        "query", "dlq", "--db", small_db, "--from", "2999-01-01T00:00:00Z", "--format", "json"
    )
    assert future.returncode == 0
    assert json.loads(future.stdout) == []


# -- db ------------------------------------------------------------------------------


def test_db_upgrade_then_current_prints_the_head_revision(run_cli: Run, tmp_db_url: str) -> None:
    head = head_revision()
    assert head
    empty = run_cli("db", "current", "--db", tmp_db_url)
    assert empty.returncode == 0, empty.describe()
    assert empty.stdout.strip() == "(empty database)", empty.describe()
    upgrade = run_cli("db", "upgrade", "--db", tmp_db_url)
    assert upgrade.returncode == 0, upgrade.describe()
    assert head in upgrade.stderr + upgrade.stdout
    current = run_cli("db", "current", "--db", tmp_db_url)
    assert current.returncode == 0, current.describe()
    assert current.stdout.strip() == head


def test_paymetrics_db_url_environment_variable_is_honoured(
    run_cli: Run, tmp_path: Path, tmp_db_url: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(SMALL_RUN)
    env = {"PAYMETRICS_DB_URL": tmp_db_url}
    result = run_cli("run", "--source", f"file:{source}", "--no-archive", "--json", env=env)
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout)["database"] == tmp_db_url
    assert Path(tmp_db_url.removeprefix("sqlite:///")).is_file()
    assert not (tmp_path / "paymetrics-data").exists(), "the default database was used"
    metrics = run_cli("query", "metrics", "--format", "json", env=env)
    assert metrics.returncode == 0, metrics.describe()
    assert len(json.loads(metrics.stdout)) == len(METRIC_KEYS)
    assert run_cli("db", "current", env=env).stdout.strip() == head_revision()
    # --db wins over the environment.
    other = tmp_path / "other.db"
    explicit = run_cli("db", "upgrade", "--db", f"sqlite:///{other}", env=env)
    assert explicit.returncode == 0, explicit.describe()
    assert other.is_file()


@pytest.mark.parametrize("command", [("query", "metrics"), ("query", "dlq", "--summary")])
def test_query_on_a_missing_database_fails_without_creating_it(
    run_cli: Run, tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / "nowhere" / "pm.db"
    result = run_cli(*command, "--db", f"sqlite:///{missing}")
    assert result.returncode == 2, result.describe()
    assert str(missing) in one_line(result.stderr)
    assert not missing.exists()
    assert not missing.parent.exists()
