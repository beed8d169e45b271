"""PostgreSQL going away mid-run: the worker retries, stores everything once, loses nothing.

A real `paymetrics run` against PostgreSQL while its connections are killed again and
again with `pg_terminate_backend` (as a server restart or a failover would). The final
tables must equal those of a clean run of the same file.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import cli_command, cli_env, dump_tables, run_cli

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

#: Batch ids come from a sequence, and a rolled-back batch uses one up; the faulty run's
#: configuration also came from the environment (fast retries).
NOT_COMPARED = {
    "ingest_batches": ["batch_id"],
    "normalized_transactions": ["batch_id"],
    "config_versions": ["origin"],
}


def with_application_name(url: str, name: str) -> str:
    return (
        sa.make_url(url)
        .update_query_dict({"application_name": name})
        .render_as_string(hide_password=False)
    )


def test_killed_connections_mid_run_end_equal_to_a_clean_run(
    tmp_path: Path, postgres_schema: Callable[[str], str]
) -> None:
    events = tmp_path / "events.jsonl"
    config = SimulatorConfig(events=40_000, seed=21, rate_invalid=0.01, rate_duplicate=0.02)
    with events.open("wb") as handle:
        write_jsonl(config, handle)
    args = ["--source", f"file:{events}", "--batch-max-events", "1000", "--no-archive", "-q"]

    clean = postgres_schema("clean")
    result = run_cli("run", *args, "--db", clean, cwd=tmp_path)
    assert result.returncode == 0, result.describe()

    name = f"pmfault_{uuid.uuid4().hex[:8]}"
    faulty = with_application_name(postgres_schema("faulty"), name)
    env = cli_env(
        {"PAYMETRICS__STORAGE__RETRY_INITIAL_SECONDS": "0.05", "PAYMETRICS__LOGGING__LEVEL": "INFO"}
    )
    stderr = tmp_path / "stderr.log"
    admin = sa.create_engine(sa.make_url(clean))
    kills = 0
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            cli_command("run", *args, "--db", faulty),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            with admin.begin() as conn:
                stored = batches_stored(conn, faulty)
                if stored >= 1:
                    kills += conn.execute(
                        sa.text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": name},
                    ).scalar_one()
            time.sleep(0.15)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        admin.dispose()
    log = stderr.read_text()
    assert process.returncode == 0, log
    assert kills >= 3, f"the test killed only {kills} connections; it proves nothing"
    assert "database unavailable" in log, log
    assert "available again" in log, log
    assert "Traceback" not in log

    assert dump_tables(faulty, exclude=NOT_COMPARED) == dump_tables(clean, exclude=NOT_COMPARED)


def batches_stored(conn: Any, url: str) -> int:
    schema = sa.make_url(url).query["options"].split("search_path=")[1].split()[0]
    exists = conn.execute(
        sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".ingest_batches'}
    ).scalar_one()
    if not exists:
        return 0
    return int(
        conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".ingest_batches')).scalar_one()
    )


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    secret = "pw-NEVER-SHOWN-4417"
    url = f"postgresql+psycopg://paymetrics:{secret}@127.0.0.1:9/paymetrics"  # port 9: discard
    env = {"PAYMETRICS_DB_URL": url}
    for args in (
        ("run", "--source", "simulator:?events=10", "-q"),
        ("run", "--source", "simulator:?events=10", "-q", "--db", url),
        ("query", "metrics"),
        ("db", "upgrade"),
        ("run", "--help"),
        ("retention", "apply", "--help"),
    ):
        result = run_cli(*args, cwd=tmp_path, env=env, timeout=120)
        assert secret not in result.stdout + result.stderr, args
        if "--help" in args:
            assert result.returncode == 0, result.describe()
            continue
        assert result.returncode == 2, result.describe()
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: database: "), lines[0]
        assert "Traceback" not in result.stderr
