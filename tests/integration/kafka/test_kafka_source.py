"""`paymetrics run --source kafka://…`: a real broker into SQLite, exactly once.

The same simulated events are published (keyed by merchant) to a 4-partition topic and
written to a file; the run from Kafka must store what the run from the file stores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import dump_table, query_rows, run_cli

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

FAST = "session.timeout.ms=2000&heartbeat.interval.ms=300"
#: Position-dependent columns differ between a file and four partitions.
SAME = {
    "payment_metrics_5m": [],
    "aggregate_histograms": [],
    "normalized_transactions": ["batch_id", "source_position"],
}


def publish(broker: Any, topic: str, lines: list[bytes]) -> None:
    producer = broker.producer(**{"linger.ms": 5})
    for line in lines:
        try:
            key = str(json.loads(line).get("merchant_id", ""))
        except (ValueError, AttributeError):  # the simulator's invalid lines
            key = ""
        producer.produce(topic, value=line, key=key.encode())
    assert producer.flush(30) == 0


def test_a_topic_is_stored_like_the_same_events_from_a_file(
    kafka_broker: Any, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    config = SimulatorConfig(events=6_000, seed=13, rate_invalid=0.01, rate_duplicate=0.02)
    with events.open("wb") as handle:
        write_jsonl(config, handle)
    lines = events.read_bytes().splitlines()
    topic = kafka_broker.create_topic(partitions=4)
    publish(kafka_broker, topic, lines)

    from_file = f"sqlite:///{tmp_path / 'file.db'}"
    result = run_cli(
        "run", "--source", f"file:{events}", "--db", from_file, "--no-archive", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.describe()

    from_kafka = f"sqlite:///{tmp_path / 'kafka.db'}"
    spec = f"kafka://{kafka_broker.bootstrap_servers}/{topic}?group=pm&{FAST}"
    args = [
        "run",
        "--source",
        spec,
        "--db",
        from_kafka,
        "--no-archive",
        "--until-idle",
        "3",
        "--batch-max-events",
        "700",
        "--json",
    ]
    result = run_cli(*args, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.describe()
    summary = json.loads(result.stdout)
    assert summary["events_in"] == len(lines)
    assert summary["normalized"] + summary["duplicates"] + summary["dead_lettered"] == len(lines)

    for table, exclude in SAME.items():
        assert dump_table(from_kafka, table, exclude=exclude) == dump_table(
            from_file, table, exclude=exclude
        ), table
    reasons = "SELECT reason, count(*) AS n FROM failed_items GROUP BY reason ORDER BY reason"
    assert query_rows(from_kafka, reasons) == query_rows(from_file, reasons)
    partitions = query_rows(from_kafka, "SELECT partition, position FROM source_checkpoints")
    assert sorted(r["partition"] for r in partitions) == ["0", "1", "2", "3"]

    # Again: the checkpoints say everything is stored; nothing is read twice.
    before = {t: dump_table(from_kafka, t) for t in ("normalized_transactions", "failed_items")}
    again = run_cli(*args, cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.describe()
    assert json.loads(again.stdout)["events_in"] == 0
    assert {t: dump_table(from_kafka, t) for t in before} == before


def test_a_bad_kafka_spec_names_what_is_missing(tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--source",
        "kafka://127.0.0.1:9/",
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "the path must be one topic name" in result.stderr
    assert "option group=NAME (the consumer group) is required" in result.stderr


def test_simulate_publishes_the_same_stream_keyed_by_merchant(
    kafka_broker: Any, tmp_path: Path
) -> None:
    import io

    topic = kafka_broker.create_topic(partitions=3)
    result = run_cli(
        "simulate",
        "--events",
        "3000",
        "--seed",
        "4",
        "--rate-invalid",
        "0.02",
        "--to",
        f"kafka://{kafka_broker.bootstrap_servers}/{topic}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.describe()
    assert "published 3,000 events" in result.stderr

    consumer = kafka_broker.consumer("check")
    consumer.subscribe([topic])
    received: list[Any] = []
    deadline = 60.0
    import time

    until = time.monotonic() + deadline
    while len(received) < 3000 and time.monotonic() < until:
        received += [m for m in consumer.consume(500, timeout=1.0) if m.error() is None]
    consumer.close()
    assert len(received) == 3000

    expected = io.BytesIO()
    write_jsonl(SimulatorConfig(events=3000, seed=4, rate_invalid=0.02), expected)
    lines = expected.getvalue().splitlines()
    assert sorted(m.value() for m in received) == sorted(lines)
    partitions_of: dict[bytes, set[int]] = {}
    for m in received:
        if m.key() is not None:
            partitions_of.setdefault(m.key(), set()).add(m.partition())
            assert json.loads(m.value())["merchant_id"].encode() == m.key()
    assert partitions_of, "no keyed messages"
    assert all(len(p) == 1 for p in partitions_of.values()), "a merchant spread over partitions"
    # in order per merchant, as produced
    by_offset = sorted(received, key=lambda m: m.offset())
    for key in list(partitions_of)[:20]:
        got = [m.value() for m in by_offset if m.key() == key]
        want = [line for line in lines if merchant_of(line) == key]
        assert got == want


def merchant_of(line: bytes) -> bytes | None:
    try:
        merchant = json.loads(line).get("merchant_id")
    except (ValueError, AttributeError):
        return None
    return merchant.encode() if isinstance(merchant, str) and merchant else None
