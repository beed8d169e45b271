"""`dead_letters.topic_url`: every dead letter also goes to a Kafka topic, with its
reason and origin in headers, its payload masked, and nothing lost when the broker
is away for a while."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import query_rows, run_cli
from tests.e2e.test_metrics_e2e import pans_in_payload
from tests.integration.kafka.test_kafka_source import FAST, publish

from paymetrics.dead_letter_topic import DeadLetterTopic, DeadLetterTopicUnavailable
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.storage.base import DeadLetters

pytestmark = pytest.mark.slow


def read_all(broker: Any, topic: str, expected: int) -> list[Any]:
    consumer = broker.consumer("dlq-reader")
    consumer.subscribe([topic])
    got: list[Any] = []
    try:
        for _ in range(60):
            got += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def test_dead_letters_reach_the_topic_with_reason_and_origin(
    kafka_broker: Any, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    config = SimulatorConfig(events=4_000, seed=21, rate_invalid=0.03, rate_pan_leak=0.02)
    with events.open("wb") as handle:
        write_jsonl(config, handle)
    lines = events.read_bytes().splitlines()
    topic = kafka_broker.create_topic(partitions=2)
    dlq = kafka_broker.create_topic(partitions=1)
    publish(kafka_broker, topic, lines)

    db = f"sqlite:///{tmp_path / 'w.db'}"
    spec = f"kafka://{kafka_broker.bootstrap_servers}/{topic}?group=pm&{FAST}"
    env = {"PAYMETRICS__DEAD_LETTERS__TOPIC_URL": f"kafka://{kafka_broker.bootstrap_servers}/{dlq}"}
    result = run_cli(
        "run", "--source", spec, "--db", db, "--no-archive", "--until-idle", "3",
        "--batch-max-events", "500", "--json", cwd=tmp_path, env=env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout)["events_in"] == len(lines)

    table = query_rows(db, "SELECT partition, position, reason, message, payload FROM failed_items")
    assert len(table) > 50
    messages = read_all(kafka_broker, dlq, len(table))
    assert len(messages) == len(table)  # one run, no redelivery: exactly once here
    got = []
    for m in messages:
        headers = {k: v.decode() for k, v in m.headers()}
        assert m.key().decode() == headers["paymetrics-partition"]
        assert headers["paymetrics-source"] == f"kafka:{topic}?group=pm"
        got.append(
            (
                headers["paymetrics-partition"],
                int(headers["paymetrics-position"]),
                headers["paymetrics-reason"],
                headers["paymetrics-error"],
                m.value().decode(),
            )
        )
    want = [(r["partition"], r["position"], r["reason"], r["message"], r["payload"]) for r in table]
    assert sorted(got) == sorted(want)
    for *_, payload in got:  # PCI DSS 3.4: the independent scanner finds no card number
        assert pans_in_payload(payload) == [], payload


def dead(n: int) -> DeadLetters:
    return DeadLetters(
        positions=list(range(1, n + 1)),
        reasons=["invalid_json"] * n,
        messages=["message: not valid JSON"] * n,
        event_ids=[None] * n,
        payloads=["{"] * n,
    )


def test_an_unreachable_broker_is_a_retryable_error_naming_the_topic() -> None:
    from tests.services import free_port

    topic = DeadLetterTopic(
        f"kafka://127.0.0.1:{free_port()}/dlq?message.timeout.ms=1000",
        flush_timeout_seconds=2,
    )
    with pytest.raises(DeadLetterTopicUnavailable, match=r"dead-letter topic dlq: .* of 3"):
        topic.publish("file:x", "0", dead(3))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("eventhubs://ns/hub", "the scheme must be kafka://"),
        ("kafka:///dlq", "no broker address"),
        ("kafka://h:9092/a/b", "the path must be one topic name"),
        ("kafka://h:9092/dlq?group=x", "unknown options ['group']"),
    ],
)
def test_a_bad_topic_url_names_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"dead_letters\.topic_url") as info:
        DeadLetterTopic(url)
    assert problem in str(info.value)
