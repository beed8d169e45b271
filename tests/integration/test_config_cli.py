"""`paymetrics config ...` and secrets end to end: real subprocesses, captured output.

Secrets here are distinctive strings; every test asserts they never appear in anything
the process printed (stdout, stderr, logs, errors), whatever the output format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import CliResult

pytestmark = pytest.mark.slow

DB_PASSWORD = "pg-PASSWORD-7f3a9"
TOKEN = "api-TOKEN-c41d2"
FILE_SECRET = "file-SECRET-88e1"

RunCli = Callable[..., CliResult]


def secret_env(tmp_path: Path) -> dict[str, str]:
    secret_file = tmp_path / "archive-url"
    secret_file.write_text(f"memory://{FILE_SECRET}\n")
    return {
        "PAYMETRICS__STORAGE__DB_URL": f"postgresql+psycopg://paymetrics:{DB_PASSWORD}@db/pm",
        "PAYMETRICS__API__TOKEN": "env:THE_TOKEN",
        "THE_TOKEN": TOKEN,
        "PAYMETRICS__STORAGE__ARCHIVE_URL": f"file:{secret_file}",
    }


def assert_no_secret(result: CliResult) -> None:
    for secret in (DB_PASSWORD, TOKEN, FILE_SECRET):
        assert secret not in result.stdout, f"{secret} leaked to stdout of {result.args}"
        assert secret not in result.stderr, f"{secret} leaked to stderr of {result.args}"


@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_config_show_hides_secrets_and_names_origins(
    run_cli: RunCli, tmp_path: Path, fmt: str
) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("batching: {batch_max_events: 1234}\n")
    env = {**secret_env(tmp_path), "COLUMNS": "300"}  # a table row on one line
    result = run_cli("config", "show", "--config", config, "--format", fmt, env=env)
    assert result.returncode == 0, result.describe()
    assert_no_secret(result)
    assert "postgresql+psycopg://paymetrics:***@db/pm" in result.stdout
    assert "**********" in result.stdout
    if fmt == "json":
        shown = json.loads(result.stdout)
        assert shown["api"]["token"] == "**********"
        assert shown["storage"]["archive_url"] == "**********"
        assert shown["batching"]["batch_max_events"] == 1234
    if fmt == "table":
        assert f"file {config}" in result.stdout
        assert "env" in result.stdout


def test_secrets_stay_out_of_errors_even_when_a_secret_is_the_bad_value(
    run_cli: RunCli, tmp_path: Path
) -> None:
    env = {
        "PAYMETRICS__STORAGE__DB_URL": "env:BROKEN_URL",
        "BROKEN_URL": f"not a url {DB_PASSWORD}",
        "PAYMETRICS__API__TOKEN": "env:THE_TOKEN",
        "THE_TOKEN": TOKEN,
        "PAYMETRICS__API__PORT": "env:THE_TOKEN",  # a secret where a number belongs
    }
    for args in (("config", "show"), ("run", "--source", "simulator:?events=10", "-q")):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.describe()
        assert_no_secret(result)
        assert "storage.db_url (env): not a SQLAlchemy URL" in result.stderr
        assert "api.port (env): Input should be a valid integer" in result.stderr
        assert "Traceback" not in result.stderr


def test_secrets_stay_out_of_run_logs_including_a_rejected_reload(
    run_cli: RunCli, tmp_path: Path
) -> None:
    env = secret_env(tmp_path)
    env["PAYMETRICS__STORAGE__DB_URL"] = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env["PAYMETRICS__LOGGING__LEVEL"] = "DEBUG"
    for fmt in ("console", "json"):
        env["PAYMETRICS__LOGGING__FORMAT"] = fmt
        result = run_cli(
            "run", "--source", "simulator:?events=2000&seed=1", "-q", "--json", env=env
        )
        assert result.returncode == 0, result.describe()
        assert_no_secret(result)
        assert "config version 1" in result.stderr


def test_validate_reports_every_problem_and_exits_1(run_cli: RunCli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metrics:\n"
        '  - {name: a, filter: "amout_minor > 1"}\n'
        "  - {name: b, aggregate: sum}\n"
        "batching: {batch_max_events: 0}\n"
    )
    result = run_cli("config", "validate", bad)
    assert result.returncode == 1, result.describe()
    assert "3 problems" in result.stderr
    assert f"metrics[0].filter (file {bad}): unknown column 'amout_minor'" in result.stderr
    assert f"metrics[1] (file {bad}): value: required for aggregate 'sum'" in result.stderr
    assert f"batching.batch_max_events (file {bad}):" in result.stderr

    good = tmp_path / "good.toml"
    good.write_text('[[metrics]]\nname = "approved"\nfilter = "status = \'approved\'"\n')
    result = run_cli("config", "validate", good)
    assert result.returncode == 0, result.describe()
    assert "valid (1 metric rule)" in result.stdout


def test_schema_is_the_models_json_schema(run_cli: RunCli) -> None:
    result = run_cli("config", "schema")
    assert result.returncode == 0, result.describe()
    schema = json.loads(result.stdout)
    assert {"source", "storage", "batching", "metrics", "compliance", "fx"} <= set(
        schema["properties"]
    )


def test_history_lists_versions_and_diffs_two(run_cli: RunCli, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    config = tmp_path / "p.yaml"
    source = "simulator:?events=500&seed=2"
    for n, filter_ in enumerate(["status = 'approved'", "status = 'declined'"]):
        config.write_text(f'metrics:\n  - name: outcome\n    filter: "{filter_}"\n')
        result = run_cli(
            "run",
            "-c",
            config,
            "-s",
            f"{source}&start=2026-0{n + 1}-01T00:00:00Z",
            "--db",
            db,
            "-q",
            "--no-archive",
        )
        assert result.returncode == 0, result.describe()
    # whitespace only: the same version
    config.write_text("metrics:\n  - name: outcome\n    filter: \"status   =  'declined'\"\n")
    result = run_cli("run", "-c", config, "-s", source, "--db", db, "-q", "--no-archive")
    assert result.returncode == 0, result.describe()

    result = run_cli("config", "history", "--db", db, "--format", "json")
    assert result.returncode == 0, result.describe()
    rows = json.loads(result.stdout)
    assert [r["version"] for r in rows] == [1, 2]
    assert all(r["metric_rules"] == "outcome" for r in rows)

    result = run_cli("config", "history", "--db", db, "--diff", "1", "2")
    assert result.returncode == 0, result.describe()
    assert "approved" in result.stdout
    assert "declined" in result.stdout
    assert result.stdout.startswith("--- version 1")

    result = run_cli("config", "history", "--db", db, "--diff", "1", "9")
    assert result.returncode == 2
    assert "no config version 9; recorded versions: 1, 2" in result.stderr


def test_query_dynamic_shows_rows_per_rule_version(run_cli: RunCli, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    config = tmp_path / "p.yaml"
    for n, status in enumerate(["approved", "declined"]):
        config.write_text(
            "metrics:\n  - name: outcome\n    window: 1h\n"
            f"    filter: \"event_type = 'authorization' AND status = '{status}'\"\n"
        )
        source = f"simulator:?events=300&seed=4&start=2026-0{n + 1}-01T00:00:00Z"
        result = run_cli("run", "-c", config, "-s", source, "--db", db, "-q", "--no-archive")
        assert result.returncode == 0, result.describe()
    result = run_cli("query", "dynamic", "--metric", "outcome", "--db", db, "--format", "json")
    assert result.returncode == 0, result.describe()
    rows = json.loads(result.stdout)
    assert {r["config_version"] for r in rows} == {1, 2}
    assert all(r["window_seconds"] == 3600 and r["dimensions"] == "{}" for r in rows)
    january = sum(r["count"] for r in rows if r["window_start"].startswith("2026-01"))
    february = sum(r["count"] for r in rows if r["window_start"].startswith("2026-02"))
    assert january > february > 0  # approvals outnumber declines
    result = run_cli("query", "dynamic", "--db", db, "--version", "2", "--format", "json")
    assert {r["config_version"] for r in json.loads(result.stdout)} == {2}
