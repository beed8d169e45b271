"""A running Kafka worker reports itself: Prometheus /metrics and progress log lines.

The numbers scraped while the worker idles must equal what it stored, and its
consumer lag must fall to zero once it has caught up.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import cli_command, cli_env, query_rows
from tests.integration.kafka.test_kafka_source import FAST, publish
from tests.services import free_port

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by their sorted labels (without the constant source label)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "source"))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def test_the_metrics_endpoint_and_progress_lines_match_what_was_stored(
    kafka_broker: Any, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(SimulatorConfig(events=3_000, seed=5, rate_invalid=0.02), handle)
    lines = events.read_bytes().splitlines()
    topic = kafka_broker.create_topic(partitions=2)
    publish(kafka_broker, topic, lines)

    db = tmp_path / "w.db"
    port = free_port()
    spec = f"kafka://{kafka_broker.bootstrap_servers}/{topic}?group=obs&{FAST}"
    args = [
        "run",
        "--source",
        spec,
        "--db",
        f"sqlite:///{db}",
        "--no-archive",
        "--batch-max-events",
        "400",
        "--metrics-port",
        str(port),
        "--until-idle",
        "6",
        "-q",
    ]
    env = cli_env(
        {
            "PAYMETRICS__MONITORING__PROGRESS_LOG_SECONDS": "0.2",
            "PAYMETRICS__LOGGING__FORMAT": "json",
        }
    )
    worker = subprocess.Popen(
        cli_command(*args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        got: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        while time.monotonic() < deadline:
            try:
                got = scrape(port)
            except OSError:
                got = {}
            done = sum(got.get("paymetrics_messages_total", {}).values())
            lag = got.get("paymetrics_consumer_lag_messages", {})
            if done == len(lines) and len(lag) == 2 and not any(lag.values()):
                break
            assert worker.poll() is None, worker.communicate()[1].decode()[-3000:]
            time.sleep(0.1)
        else:
            raise AssertionError(f"metrics never showed all {len(lines)} messages: {got}")
        _stdout, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr.decode()[-3000:]

    (counts,) = query_rows(
        f"sqlite:///{db}",
        "SELECT (SELECT count(*) FROM normalized_transactions) AS stored, "
        "(SELECT count(*) FROM failed_items) AS dead",
    )
    outcomes: dict[str, float] = {}
    for labels, value in got["paymetrics_messages_total"].items():
        outcome = dict(labels)["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + value
    assert outcomes["stored"] == counts["stored"]
    assert outcomes["dead_lettered"] == counts["dead"] > 0
    reasons = query_rows(
        f"sqlite:///{db}", "SELECT reason, count(*) AS n FROM failed_items GROUP BY reason"
    )
    assert {dict(k)["reason"]: v for k, v in got["paymetrics_dead_letters_total"].items()} == {
        r["reason"]: r["n"] for r in reasons
    }
    batches = sum(got["paymetrics_batches_total"].values())
    assert got["paymetrics_batch_latency_seconds_count"][()] == batches
    assert set(dict(k)["partition"] for k in got["paymetrics_watermark_timestamp_seconds"]) == {
        "0",
        "1",
    }

    records = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    progress = [r for r in records if r["logger"] == "paymetrics.progress" and "messages" in r]
    assert progress, stderr.decode()[-3000:]
    assert sum(r["messages"] for r in progress) == len(lines)
    assert sum(r["dead_lettered"] for r in progress) == counts["dead"]
    assert progress[-1]["total_messages"] == len(lines)
    assert any(r["message"].startswith("Prometheus metrics at http://127.0.0.1:") for r in records)
