"""SIGTERM and SIGINT drain a Kafka worker: the batch in flight is committed, its group
offset is committed to match the database checkpoint, the worker leaves its group and
exits 0, and a restarted worker finishes the topic with nothing counted twice."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import cli_command, cli_env, dump_table, query_rows, run_cli
from tests.integration.kafka.test_kafka_source import FAST, SAME, publish

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow


def stored_messages(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        rows = query_rows(f"sqlite:///{db}", "SELECT sum(messages) AS n FROM source_checkpoints")
    except Exception:  # not migrated yet
        return 0
    return int(rows[0]["n"] or 0)


def committed_offsets(broker: Any, group: str, topic: str, partitions: int) -> dict[str, int]:
    from confluent_kafka import TopicPartition

    consumer = broker.consumer(group)
    try:
        done = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    finally:
        consumer.close()
    return {str(tp.partition): tp.offset for tp in done if tp.offset >= 0}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_commits_offsets_and_a_restart_finishes(
    kafka_broker: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    events = tmp_path / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(SimulatorConfig(events=30_000, seed=8, rate_invalid=0.01), handle)
    lines = events.read_bytes().splitlines()
    topic = kafka_broker.create_topic(partitions=2)
    publish(kafka_broker, topic, lines)

    db = tmp_path / "kafka.db"
    group = f"drain-{sig.name.lower()}"
    spec = f"kafka://{kafka_broker.bootstrap_servers}/{topic}?group={group}&{FAST}"
    args = ["run", "--source", spec, "--db", f"sqlite:///{db}", "--no-archive", "-q"]
    worker = subprocess.Popen(
        cli_command(*args, "--batch-max-events", "300"),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while stored_messages(db) < 3_000:  # mid-run: some batches stored, most not
            assert worker.poll() is None, worker.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "the worker stored nothing in 60 s"
            time.sleep(0.05)
        worker.send_signal(sig)
        sent = time.monotonic()
        _out, err = worker.communicate(timeout=30)
        drained_in = time.monotonic() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err.decode()[-3000:]
    assert drained_in < 10, f"took {drained_in:.1f} s to drain"
    stopped_at = stored_messages(db)
    assert 3_000 <= stopped_at < len(lines), "stopped mid-run, with work left"

    checkpoints = {
        r["partition"]: r["position"]
        for r in query_rows(f"sqlite:///{db}", "SELECT partition, position FROM source_checkpoints")
    }
    # Every stored batch was acknowledged: the group's offsets are the database's.
    assert committed_offsets(kafka_broker, group, topic, 2) == checkpoints

    result = run_cli(*args, "--until-idle", "3", "--json", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.describe()
    assert stored_messages(db) == len(lines)

    reference = f"sqlite:///{tmp_path / 'file.db'}"
    result = run_cli(
        "run", "--source", f"file:{events}", "--db", reference, "--no-archive", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.describe()
    for table, exclude in SAME.items():
        assert dump_table(f"sqlite:///{db}", table, exclude=exclude) == dump_table(
            reference, table, exclude=exclude
        ), table


def test_a_signal_stops_an_idle_worker_within_a_poll(kafka_broker: Any, tmp_path: Path) -> None:
    topic = kafka_broker.create_topic(partitions=1)
    spec = f"kafka://{kafka_broker.bootstrap_servers}/{topic}?group=idle&{FAST}"
    worker = subprocess.Popen(
        cli_command("run", "--source", spec, "--db", f"sqlite:///{tmp_path / 'k.db'}", "-q"),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while b"assigned partitions" not in (err := _peek(worker)):
            assert worker.poll() is None, err.decode()
            assert time.monotonic() < deadline, "never joined its group"
        worker.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        worker.communicate(timeout=15)
        assert time.monotonic() - sent < 5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0


_seen: dict[int, bytes] = {}


def _peek(process: subprocess.Popen[bytes]) -> bytes:
    """What the worker wrote to stderr so far (non-blocking)."""
    import os
    import select

    assert process.stderr is not None
    buffer = _seen.setdefault(process.pid, b"")
    while select.select([process.stderr], [], [], 0.1)[0]:
        chunk = os.read(process.stderr.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
    _seen[process.pid] = buffer
    return buffer
