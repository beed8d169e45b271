"""Hot reload in a real running `paymetrics run`: file edits, SIGHUP, invalid edits.

The simulator source is paced (`events_per_second`) so the run lasts long enough to
edit its configuration mid-stream. Every batch records the config version it was
computed with (`ingest_batches.config_version`), so the test can recompute each
version's metric rows independently from exactly the events that version saw.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

EVENTS = 24_000
SOURCE = f"simulator:?events={EVENTS}&seed=11&events_per_second=2000"

APPROVED = "event_type = 'authorization' AND status = 'approved'"
DECLINED = "event_type = 'authorization' AND status = 'declined'"


def config_text(filter_: str, batch_max_events: int = 400) -> str:
    return (
        "logging: {level: INFO}\n"
        f"batching: {{batch_max_events: {batch_max_events}}}\n"
        "metrics:\n"
        "  - name: auth_outcome\n"
        f'    filter: "{filter_}"\n'
        "    aggregate: count\n"
        "    group_by: [card_network]\n"
        "    window: 5m\n"
    )


def start(tmp_path: Path, config: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    db = tmp_path / "db.sqlite"
    stderr = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMETRICS")}
    command = [
        sys.executable,
        "-m",
        "paymetrics",
        "run",
        "--config",
        str(config),
        "--source",
        SOURCE,
        "--db",
        f"sqlite:///{db}",
        "--no-archive",
        "--quiet",
        *extra,
    ]
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    return process, stderr, str(db)


def query(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    if not Path(db).exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []


def wait_for(what: str, condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def batches(db: str) -> list[tuple[int, int | None, int]]:
    return query(
        db, "SELECT batch_id, config_version, messages FROM ingest_batches ORDER BY batch_id"
    )


def versions(db: str) -> list[int]:
    return [v for (v,) in query(db, "SELECT version FROM config_versions ORDER BY version")]


def floor_5m(text: str) -> str:
    at = dt.datetime.fromisoformat(text)
    return at.replace(minute=at.minute - at.minute % 5, second=0, microsecond=0).isoformat()


def expected_rows(db: str, version: int, status: str) -> Counter[tuple[str, str]]:
    """auth_outcome per (window, dimensions), recomputed from the events of that version."""
    rows = query(
        db,
        "SELECT n.occurred_at, n.card_network FROM normalized_transactions n "
        "JOIN ingest_batches b ON b.batch_id = n.batch_id "
        "WHERE b.config_version = ? AND n.event_type = 'authorization' AND n.status = ?",
        version,
        status,
    )
    return Counter(
        (floor_5m(at), json.dumps({"card_network": network}, separators=(",", ":")))
        for at, network in rows
    )


def stored_rows(db: str, version: int) -> Counter[tuple[str, str]]:
    rows = query(
        db,
        "SELECT window_start, dimensions, count, value FROM dynamic_metrics "
        "WHERE metric_name = 'auth_outcome' AND config_version = ?",
        version,
    )
    out: Counter[tuple[str, str]] = Counter()
    for window, dimensions, count, value in rows:
        assert value == count
        out[(dt.datetime.fromisoformat(window).isoformat(), dimensions)] = count
    return out


def test_a_file_edit_switches_rules_at_a_batch_boundary_and_a_bad_edit_is_rejected(
    tmp_path: Path,
) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(config_text(APPROVED))
    process, stderr, db = start(tmp_path, config)
    try:
        wait_for("five batches", lambda: len(batches(db)) >= 5, process)
        saved = tmp_path / ".paymetrics.yaml.swp"  # saved as editors do: a new file renamed
        saved.write_text(config_text(DECLINED))
        os.replace(saved, config)
        wait_for("config version 2", lambda: versions(db) == [1, 2], process)
        wait_for(
            "three batches with version 2",
            lambda: sum(1 for b in batches(db) if b[1] == 2) >= 3,
            process,
        )
        config.write_text(config_text("amout_minor > 5"))
        wait_for("the rejection", lambda: "rejected" in stderr.read_text(), process)
        seen = len(batches(db))
        wait_for("a batch after the rejection", lambda: len(batches(db)) > seen, process)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    log = stderr.read_text()
    assert process.returncode == 0, log

    rejected = [line for line in log.splitlines() if "rejected" in line]
    assert len(rejected) == 1, log
    assert "keeping version 2" in rejected[0]
    assert "metrics[0].filter" in rejected[0]
    assert "unknown column 'amout_minor'" in rejected[0]
    assert "Traceback" not in log

    assert versions(db) == [1, 2], "an invalid edit must not become a version"
    stored = batches(db)
    assert sum(m for _, _, m in stored) == EVENTS, "processing went on to the end"
    used = [v for _, v, _ in stored]
    switch = used.index(2)
    assert set(used[:switch]) == {1}, used
    assert set(used[switch:]) == {2}, used

    assert stored_rows(db, 1) == expected_rows(db, 1, "approved")
    assert stored_rows(db, 2) == expected_rows(db, 2, "declined")
    assert stored_rows(db, 2), "version 2 produced rows"

    definitions = {
        v: json.loads(doc)["metrics"]["auth_outcome"]["filter"]
        for v, doc in query(db, "SELECT version, document FROM config_versions")
    }
    assert "approved" in definitions[1]
    assert "declined" in definitions[2]


def test_sighup_reloads_and_a_setting_that_needs_a_restart_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(config_text(APPROVED))
    process, stderr, db = start(tmp_path, config, "--no-watch")
    try:
        wait_for("three batches", lambda: len(batches(db)) >= 3, process)
        config.write_text(config_text(DECLINED, batch_max_events=100))
        time.sleep(1.0)  # not watched: nothing may change until the signal
        assert versions(db) == [1]
        process.send_signal(signal.SIGHUP)
        wait_for("config version 2", lambda: versions(db) == [1, 2], process)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    log = stderr.read_text()
    assert process.returncode == 0, log
    restart = [line for line in log.splitlines() if "needs restart" in line]
    assert len(restart) == 1, log
    assert "batching.batch_max_events" in restart[0], log
    assert all(m == 400 for _, _, m in batches(db)[:-1]), "the batch size did not change live"
    assert stored_rows(db, 2) == expected_rows(db, 2, "declined")
