"""The worker's progress log line and Prometheus endpoint, fed with batch reports."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paymetrics.config.logs import JsonFormatter
from paymetrics.observability import ProgressLog, PrometheusMetrics
from paymetrics.pipeline import BatchReport
from paymetrics.storage.base import BatchCounts

REPORTS = [
    BatchReport(
        "0",
        BatchCounts(messages=100, normalized=90, duplicates=4, dead_lettered=6),
        authorizations=50,
        approved=45,
        metric_rows=3,
        reasons={"invalid_json": 4, "too_late": 2},
        watermark_us=1_767_225_600_000_000,  # 2026-01-01T00:00:00Z
        seconds=0.2,
    ),
    BatchReport(
        "1",
        BatchCounts(messages=10, normalized=10, duplicates=0, dead_lettered=0),
        authorizations=5,
        approved=5,
        metric_rows=1,
        seconds=0.05,
    ),
    BatchReport(
        "0",
        BatchCounts(messages=20, normalized=18, duplicates=0, dead_lettered=2),
        authorizations=9,
        approved=8,
        metric_rows=1,
        reasons={"invalid_json": 2},
        watermark_us=1_767_225_660_000_000,
        seconds=0.4,
    ),
]


def test_the_progress_line_sums_its_interval_and_carries_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = ProgressLog("kafka:payments?group=pm", every_seconds=3600)
    with caplog.at_level(logging.INFO, "paymetrics.progress"):
        for report in REPORTS:
            progress.observe(report, {"0": 7, "1": 0})
        assert not caplog.records  # the interval has not passed
        progress.flush({"0": 0, "1": 0})
    (record,) = caplog.records
    text = record.getMessage()
    assert "130 messages" in text
    assert "118 stored, 4 duplicates, 8 dead-lettered (invalid_json 6, too_late 2)" in text
    assert "3 batches" in text
    assert "max 0.400 s" in text
    assert "lag 0: 0, 1: 0" in text
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == text
    assert entry["messages"] == 130
    assert entry["stored"] == 118
    assert entry["dead_letter_reasons"] == {"invalid_json": 6, "too_late": 2}
    assert entry["watermark"] == "2026-01-01T00:01:00+00:00"
    assert entry["consumer_lag"] == {"0": 0, "1": 0}
    assert entry["batch_seconds_mean"] == pytest.approx(0.217, abs=1e-3)
    caplog.clear()
    with caplog.at_level(logging.INFO, "paymetrics.progress"):
        progress.flush({})
    assert not caplog.records  # nothing new since the last line


def test_a_zero_interval_never_logs(caplog: pytest.LogCaptureFixture) -> None:
    progress = ProgressLog("file:x", every_seconds=0)
    with caplog.at_level(logging.INFO, "paymetrics.progress"):
        progress.observe(REPORTS[0], {})
    assert not caplog.records
    assert progress.totals.messages == 100


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_endpoint_serves_counters_latency_lag_and_watermark() -> None:
    metrics = PrometheusMetrics("kafka:payments?group=pm")
    port = metrics.serve("127.0.0.1", 0)
    try:
        for report in REPORTS:
            metrics.observe(report, {"0": 12, "1": 3})
        metrics.set_lag({"0": 0})
        got = scrape(port)
    finally:
        metrics.close()
    src = ("source", "kafka:payments?group=pm")

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted({**dict([src]), **labels}.items())))]

    assert value("paymetrics_messages_total", partition="0", outcome="stored") == 108
    assert value("paymetrics_messages_total", partition="0", outcome="duplicate") == 4
    assert value("paymetrics_messages_total", partition="0", outcome="dead_lettered") == 8
    assert value("paymetrics_messages_total", partition="1", outcome="stored") == 10
    assert value("paymetrics_dead_letters_total", reason="invalid_json") == 6
    assert value("paymetrics_dead_letters_total", reason="too_late") == 2
    assert value("paymetrics_batches_total", partition="0") == 2
    assert value("paymetrics_batch_latency_seconds_count") == 3
    assert value("paymetrics_batch_latency_seconds_sum") == pytest.approx(0.65)
    assert value("paymetrics_batch_latency_seconds_bucket", le="0.1") == 1
    assert value("paymetrics_batch_latency_seconds_bucket", le="0.25") == 2
    assert value("paymetrics_consumer_lag_messages", partition="0") == 0
    assert value("paymetrics_consumer_lag_messages", partition="1") == 3
    assert value("paymetrics_watermark_timestamp_seconds", partition="0") == 1_767_225_660
    assert value("paymetrics_last_commit_timestamp_seconds") > 1_700_000_000


def test_closing_the_endpoint_frees_its_port() -> None:
    metrics = PrometheusMetrics("file:x")
    port = metrics.serve("127.0.0.1", 0)
    metrics.close()
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
