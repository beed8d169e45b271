"""Exactly-once under SIGKILL and a clean stop under SIGTERM; replays after a failed commit.

A 150,000-event file is processed once without interruption (the reference), and once
by runs that are SIGKILLed at random moments (before the database exists, while it is
being created, after the first commit, mid-run, late) and re-run after each kill, then
run to completion. Every table (minus wall-clock columns and batch ids) and the raw
archive must come out identical to the reference. The kill delays are drawn from a seed
shown in every failure message; set PAYMETRICS_TEST_KILL_SEED to replay one.

A fast, deterministic companion test fails a batch's commit after its archive files are
written (what a kill at that moment does) and resumes with the same or another batch size.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow.dataset as ds
import pytest

from paymetrics.archive import ParquetArchive
from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.simulator import SimulatorConfig
from paymetrics.sources import open_source
from paymetrics.storage import open_store
from paymetrics.storage.base import Store

CONFIG = SimulatorConfig(
    events=150_000,
    seed=90_210,
    rate_invalid=0.01,
    rate_duplicate=0.03,
    rate_late=0.02,
    rate_pan_leak=0.005,
)
BATCH = 5_000
SEED = int(os.environ.get("PAYMETRICS_TEST_KILL_SEED") or random.SystemRandom().randrange(10**6))


@dataclass(frozen=True)
class Case:
    work: Path
    events: Path
    clean_url: str
    clean_archive: Path


def run_args(events: Path, url: str, archive: Path) -> list[str]:
    return [
        "run",
        "--source",
        f"file:{events}",
        "--db",
        url,
        "--archive",
        str(archive),
        "--batch-max-events",
        str(BATCH),
        "--json",
    ]


@pytest.fixture(scope="module")
def case(
    build_once: Callable[..., Path],
    write_simulated: Callable[..., int],
    run_cli_in: Callable[..., Any],
) -> Case:
    def build(work: Path) -> None:
        events = work / "events.jsonl"
        assert write_simulated(events, CONFIG) == CONFIG.events
        archive = work / "clean-raw"
        result = run_cli_in(*run_args(events, f"sqlite:///{work / 'clean.db'}", archive), cwd=work)
        assert result.returncode == 0, result.describe()
        summary = json.loads(result.stdout)
        assert summary["events_in"] == CONFIG.events
        assert summary["batches"] == CONFIG.events // BATCH

    work = build_once("crash-recovery", build)
    return Case(work, work / "events.jsonl", f"sqlite:///{work / 'clean.db'}", work / "clean-raw")


@pytest.fixture(scope="module")
def clean_tables(
    case: Case, dump_tables: Callable[..., Any], query_rows: Callable[..., Any]
) -> dict[str, Any]:
    return comparable(dump_tables, query_rows, case.clean_url)


# -- helpers -------------------------------------------------------------------------


def start(
    case: Case,
    db: Path,
    archive: Path,
    log: Path,
    cli_command: Callable[..., list[str]],
    env: dict[str, str],
) -> subprocess.Popen[bytes]:
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(
            cli_command(*run_args(case.events, f"sqlite:///{db}", archive)),
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=err,
        )


def checkpoint(db: Path) -> dict[str, int] | None:
    """The stored checkpoint, or None while there is none (no file, no table, no row)."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute(
            "SELECT position, messages, normalized, duplicates, dead_lettered "
            "FROM source_checkpoints"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if row is None:
        return None
    return dict(
        zip(("position", "messages", "normalized", "duplicates", "dead_lettered"), row, strict=True)
    )


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return  # finished (or died): the caller checks
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("timed out waiting for the run to make progress")
        time.sleep(0.02)


def assert_consistent(db: Path, context: str) -> None:
    """What a kill may leave: only whole batches, the checkpoint agreeing with the data."""
    state = checkpoint(db)
    if state is None:
        return
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        normalized = conn.execute("SELECT count(*) FROM normalized_transactions").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM failed_items").fetchone()[0]
        batches, messages, last = conn.execute(
            "SELECT count(*), sum(messages), max(last_position) FROM ingest_batches"
        ).fetchone()
    finally:
        conn.close()
    assert state["normalized"] == normalized, context
    assert state["dead_lettered"] == dead, context
    assert state["messages"] == messages == batches * BATCH, context
    assert state["position"] == last == messages, context  # no blank lines in the file


def comparable(
    dump_tables: Callable[..., Any], query_rows: Callable[..., Any], url: str
) -> dict[str, Any]:
    """All tables, minus wall-clock columns and batch ids; an event's batch by its positions."""
    tables = dump_tables(
        url,
        exclude={"ingest_batches": ["batch_id"], "normalized_transactions": ["batch_id"]},
    )
    tables["normalized_transactions.batch"] = sorted(
        tuple(r.values())
        for r in query_rows(
            url,
            "SELECT n.event_id, b.source_id, b.partition, b.first_position, b.last_position "
            "FROM normalized_transactions n LEFT JOIN ingest_batches b ON b.batch_id = n.batch_id",
        )
    )
    return tables


def assert_same_tables(got: dict[str, Any], want: dict[str, Any], context: str) -> None:
    assert got.keys() == want.keys()
    for name in want:
        if got[name] == want[name]:
            continue
        g, w = set(got[name]), set(want[name])
        raise AssertionError(
            f"{context}: table {name} differs from the uninterrupted run: "
            f"{len(got[name])} rows vs {len(want[name])}; "
            f"unexpected {sorted(g - w, key=repr)[:3]}; missing {sorted(w - g, key=repr)[:3]}"
        )


def archive_rows(root: Path) -> tuple[list[tuple[str, int]], set[str]]:
    """(event_id, position) of every row a reader sees, and the files it reads."""
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["event_id", "position"])
    rows = sorted(zip(table["event_id"].to_pylist(), table["position"].to_pylist(), strict=True))
    return rows, {str(Path(f).relative_to(root)) for f in dataset.files}


def assert_same_archive(root: Path, clean: Path, context: str) -> None:
    rows, files = archive_rows(root)
    clean_rows, clean_files = archive_rows(clean)
    assert files == clean_files, (
        f"{context}: archive files differ: extra {sorted(files - clean_files)[:5]}, "
        f"missing {sorted(clean_files - files)[:5]}"
    )
    if rows != clean_rows:
        extra = sorted(set(rows) - set(clean_rows))[:5]
        missing = sorted(set(clean_rows) - set(rows))[:5]
        raise AssertionError(
            f"{context}: archive rows differ: {len(rows)} vs {len(clean_rows)}; "
            f"extra {extra}; missing {missing}"
        )
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith(".parquet"):
            assert path.name.startswith("."), (
                f"{context}: {path} would be picked up by a reader (not hidden)"
            )


# -- the tests -----------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    case: Case,
    tmp_path: Path,
    cli_command: Callable[..., list[str]],
    cli_env: Callable[..., dict[str, str]],
    dump_tables: Callable[..., Any],
    query_rows: Callable[..., Any],
    clean_tables: dict[str, Any],
) -> None:
    rng = random.Random(SEED)
    db, archive = tmp_path / "killed.db", tmp_path / "killed-raw"
    env = cli_env()

    def position() -> int:
        state = checkpoint(db)
        return state["position"] if state else 0

    def during_start_up(p: subprocess.Popen[bytes]) -> None:
        time.sleep(rng.uniform(0.05, 0.5))

    def while_creating_the_database(p: subprocess.Popen[bytes]) -> None:
        wait_until(db.exists, p)
        time.sleep(rng.uniform(0.0, 0.05))

    def batches_later(ahead: int) -> Callable[[subprocess.Popen[bytes]], None]:
        def plan(p: subprocess.Popen[bytes]) -> None:
            target = position() + ahead * BATCH
            wait_until(lambda: position() >= target, p)
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside a later batch

        return plan

    plans = [
        ("very early, during start-up", during_start_up),
        ("as soon as the database file exists", while_creating_the_database),
        ("after the first commit", batches_later(1)),
        ("mid-run", batches_later(5)),
        ("late", batches_later(8)),
    ]
    landed = []
    for i, (name, plan) in enumerate(plans):
        context = f"kill {i + 1} ({name}, PAYMETRICS_TEST_KILL_SEED={SEED})"
        started = time.monotonic()
        proc = start(case, db, archive, tmp_path / f"run{i}", cli_command, env)
        plan(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL, context
            landed.append(f"{name} at line {position()} after {time.monotonic() - started:.2f}s")
        else:
            assert proc.returncode == 0, f"{context}: the run failed on its own"
        assert_consistent(db, context)
    print(f"kills (PAYMETRICS_TEST_KILL_SEED={SEED}): {landed}")
    assert len(landed) >= 4, f"only {len(landed)} kills hit a running process: {landed}"
    resume_at = position()
    assert 0 < resume_at < CONFIG.events, f"kills did not leave work to resume: {landed}"

    final = start(case, db, archive, tmp_path / "final", cli_command, env)
    assert final.wait(timeout=300) == 0, (tmp_path / "final.err").read_text()
    summary = json.loads((tmp_path / "final.out").read_text())
    assert summary["events_in"] == CONFIG.events - resume_at
    context = f"after kills {landed} (PAYMETRICS_TEST_KILL_SEED={SEED})"
    assert_same_tables(
        comparable(dump_tables, query_rows, f"sqlite:///{db}"),
        clean_tables,
        context,
    )
    assert_same_archive(archive, case.clean_archive, context)


@pytest.mark.slow
def test_sigterm_finishes_the_batch_in_flight_and_a_rerun_completes(
    case: Case,
    tmp_path: Path,
    cli_command: Callable[..., list[str]],
    cli_env: Callable[..., dict[str, str]],
    dump_tables: Callable[..., Any],
    query_rows: Callable[..., Any],
    clean_tables: dict[str, Any],
) -> None:
    db, archive = tmp_path / "stopped.db", tmp_path / "stopped-raw"
    env = cli_env()
    proc = start(case, db, archive, tmp_path / "first", cli_command, env)

    def position() -> int:
        state = checkpoint(db)
        return state["position"] if state else 0

    wait_until(lambda: position() >= BATCH, proc)
    assert proc.poll() is None, "the run ended before it could be stopped"
    at_signal = position()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (tmp_path / "first.err").read_text()
    summary = json.loads((tmp_path / "first.out").read_text())
    assert summary["stopped_by"] == "SIGTERM"
    stopped_at = summary["events_in"]
    assert at_signal <= stopped_at < CONFIG.events
    assert stopped_at % BATCH == 0
    assert summary["batches"] == stopped_at // BATCH
    assert position() == stopped_at, "the checkpoint is not where the run stopped"
    assert_consistent(db, "after SIGTERM")

    rerun = start(case, db, archive, tmp_path / "rerun", cli_command, env)
    assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.err").read_text()
    resumed = json.loads((tmp_path / "rerun.out").read_text())
    assert resumed["events_in"] == CONFIG.events - stopped_at
    assert resumed["stopped_by"] is None
    assert_same_tables(
        comparable(dump_tables, query_rows, f"sqlite:///{db}"),
        clean_tables,
        "after SIGTERM and a rerun",
    )
    assert_same_archive(archive, case.clean_archive, "after SIGTERM and a rerun")


class CrashBeforeCommit(Exception):
    pass


class FailingStore:
    """Delegates to a real store, except that the transaction of batch `fail_at` (1-based)
    raises at its end, so it rolls back: a kill after the archive write, before the commit."""

    def __init__(self, inner: Store, fail_at: int) -> None:
        self.inner, self.fail_at, self.count = inner, fail_at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        self.count += 1
        with self.inner.transaction() as tx:
            yield tx
            if self.count == self.fail_at:
                raise CrashBeforeCommit


@pytest.mark.parametrize("resume_batch", [200, 300], ids=["same-batch-size", "other-batch-size"])
def test_a_batch_whose_commit_failed_is_replayed_exactly(
    tmp_path: Path,
    write_simulated: Callable[..., int],
    dump_tables: Callable[..., Any],
    resume_batch: int,
) -> None:
    """The deterministic version of a kill between a batch's archive write and its commit."""
    events = tmp_path / "events.jsonl"
    config = SimulatorConfig(events=1_000, seed=5, rate_duplicate=0.02, rate_invalid=0.02)
    write_simulated(events, config)

    def run(url: str, archive: Path, batch: int, fail_at: int = 0) -> None:
        store = open_store(url)
        runner = cast(Store, FailingStore(store, fail_at)) if fail_at else store
        try:
            store.prepare()
            pipeline = Pipeline(runner, ParquetArchive(str(archive)), PipelineOptions(batch))
            with open_source(f"file:{events}") as source:
                pipeline.run(source)
        finally:
            store.close()

    clean_url, clean_archive = f"sqlite:///{tmp_path / 'clean.db'}", tmp_path / "clean-raw"
    run(clean_url, clean_archive, 200)
    url, archive = f"sqlite:///{tmp_path / 'crashed.db'}", tmp_path / "crashed-raw"
    with pytest.raises(CrashBeforeCommit):
        run(url, archive, 200, fail_at=3)  # lines 401-600 are archived, not committed
    assert (tmp_path / "crashed.db").exists()
    run(url, archive, resume_batch)

    exclude = {"ingest_batches": ["batch_id"], "normalized_transactions": ["batch_id"]}
    crashed, clean = dump_tables(url, exclude=exclude), dump_tables(clean_url, exclude=exclude)
    if resume_batch != 200:  # other batches, same totals (source_checkpoints has them)
        del crashed["ingest_batches"], clean["ingest_batches"]
    for name in clean:
        assert crashed[name] == clean[name], f"{name} differs after the replay"
    rows, _ = archive_rows(archive)
    clean_rows, _ = archive_rows(clean_archive)
    if resume_batch == 200:
        assert rows == clean_rows, "the replayed batch did not overwrite its own archive files"
    else:
        # Documented limit (docs/architecture.md §3, ADR 0002): with other batch boundaries
        # the killed attempt's files stay, so its rows are there twice; none may be missing.
        # The batch after it (601-800) was prepared and archived while 401-600 committed.
        assert set(rows) == set(clean_rows)
        copies = Counter(rows) - Counter(clean_rows)
        assert {position for _, position in copies} <= set(range(401, 801))
