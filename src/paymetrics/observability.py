"""What an operator watches on a running worker: a progress line in the logs and,
on an optional port, Prometheus metrics.

Both are fed from the same place, the per-batch `BatchReport` after its commit, plus
the source's consumer lag. Nothing here is on the hot path: it costs a few dict
updates per batch. prometheus-client is imported only when a port is configured
(`pip install 'paymetrics[prometheus]'`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from paymetrics.metrics.windows import from_epoch_us
from paymetrics.pipeline import BatchReport

__all__ = ["LATENCY_BUCKETS_SECONDS", "ProgressLog", "PrometheusMetrics"]

log = logging.getLogger("paymetrics.progress")

#: Batch latency buckets (read → commit), from a small streaming batch to a stalled one.
LATENCY_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProgressLog:
    """One log line every `every_seconds`: rates, outcomes, dead-letter reasons, lag.

    The line is readable in console format; in JSON format the same numbers are
    fields of the record (`fields`), so a log pipeline can chart them.
    """

    def __init__(self, source_id: str, every_seconds: float) -> None:
        self.source_id = source_id
        self.every_seconds = every_seconds
        self._since = time.monotonic()
        self._window = _Totals()
        self.totals = _Totals()

    def observe(self, report: BatchReport, lag: Mapping[str, int]) -> None:
        self._window.add(report)
        self.totals.add(report)
        now = time.monotonic()
        if self.every_seconds > 0 and now - self._since >= self.every_seconds:
            self._emit(now, lag)

    def flush(self, lag: Mapping[str, int]) -> None:
        """Log what is not logged yet (at the end of a run)."""
        if self._window.messages:
            self._emit(time.monotonic(), lag)

    def _emit(self, now: float, lag: Mapping[str, int]) -> None:
        window, seconds = self._window, max(now - self._since, 1e-9)
        fields: dict[str, Any] = {
            "source": self.source_id,
            "interval_seconds": round(seconds, 3),
            "messages": window.messages,
            "events_per_second": round(window.messages / seconds, 1),
            "stored": window.stored,
            "duplicates": window.duplicates,
            "dead_lettered": window.dead_lettered,
            "dead_letter_reasons": dict(window.reasons),
            "batches": window.batches,
            "batch_seconds_max": round(window.latency_max, 3),
            "batch_seconds_mean": round(window.latency_sum / window.batches, 3)
            if window.batches
            else None,
            "consumer_lag": dict(lag),
            "total_messages": self.totals.messages,
        }
        watermark = window.watermark_us
        if watermark is not None:
            fields["watermark"] = from_epoch_us(watermark).isoformat()
        reasons = ", ".join(f"{k} {v:,}" for k, v in window.reasons.most_common())
        lag_text = (
            f"; lag {', '.join(f'{p}: {n:,}' for p, n in sorted(lag.items()))}" if lag else ""
        )
        log.info(
            "%s messages in %.1f s (%s/s): %s stored, %s duplicates, %s dead-lettered%s; "
            "%d batches, latency mean %.3f s max %.3f s%s",
            f"{window.messages:,}",
            seconds,
            f"{window.messages / seconds:,.0f}",
            f"{window.stored:,}",
            f"{window.duplicates:,}",
            f"{window.dead_lettered:,}",
            f" ({reasons})" if reasons else "",
            window.batches,
            fields["batch_seconds_mean"] or 0.0,
            window.latency_max,
            lag_text,
            extra={"fields": fields},
        )
        self._window = _Totals()
        self._since = now


class _Totals:
    __slots__ = (
        "batches",
        "dead_lettered",
        "duplicates",
        "latency_max",
        "latency_sum",
        "messages",
        "reasons",
        "stored",
        "watermark_us",
    )

    def __init__(self) -> None:
        self.messages = self.stored = self.duplicates = self.dead_lettered = self.batches = 0
        self.latency_sum = self.latency_max = 0.0
        self.reasons: Counter[str] = Counter()
        self.watermark_us: int | None = None

    def add(self, report: BatchReport) -> None:
        counts = report.counts
        self.messages += counts.messages
        self.stored += counts.normalized
        self.duplicates += counts.duplicates
        self.dead_lettered += counts.dead_lettered
        self.batches += 1
        self.latency_sum += report.seconds
        self.latency_max = max(self.latency_max, report.seconds)
        self.reasons.update(report.reasons)
        mark = report.watermark_us
        if mark is not None and (self.watermark_us is None or mark > self.watermark_us):
            self.watermark_us = mark


class PrometheusMetrics:
    """The worker's metrics in their own registry, served on `host:port` at /metrics.

    Counters by partition and outcome, dead letters by reason, a batch latency
    histogram, and gauges for consumer lag, event-time watermark and last commit.
    """

    def __init__(self, source_id: str) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ValueError(
                "monitoring.metrics_port needs prometheus-client: "
                "pip install 'paymetrics[prometheus]'"
            ) from None
        self._prom = prom
        self.source_id = source_id
        self.registry = prom.CollectorRegistry(auto_describe=True)
        labels = ("source", "partition")
        r = self.registry
        self.messages = prom.Counter(
            "paymetrics_messages",
            "Messages processed, by outcome (stored, duplicate, dead_lettered)",
            (*labels, "outcome"),
            registry=r,
        )
        self.dead_letters = prom.Counter(
            "paymetrics_dead_letters",
            "Dead letters by reason code",
            ("source", "reason"),
            registry=r,
        )
        self.batches = prom.Counter("paymetrics_batches", "Batches committed", labels, registry=r)
        self.latency = prom.Histogram(
            "paymetrics_batch_latency_seconds",
            "Seconds from reading a batch to its commit",
            ("source",),
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )
        self.lag = prom.Gauge(
            "paymetrics_consumer_lag_messages",
            "Messages in the partition past this worker's last commit",
            labels,
            registry=r,
        )
        self.watermark = prom.Gauge(
            "paymetrics_watermark_timestamp_seconds",
            "Newest event time seen on the partition (Unix seconds)",
            labels,
            registry=r,
        )
        self.last_commit = prom.Gauge(
            "paymetrics_last_commit_timestamp_seconds",
            "When this worker last committed a batch (Unix seconds)",
            ("source",),
            registry=r,
        )
        self._server: Any = None

    def observe(self, report: BatchReport, lag: Mapping[str, int]) -> None:
        source, partition, counts = self.source_id, report.partition, report.counts
        for outcome, n in (
            ("stored", counts.normalized),
            ("duplicate", counts.duplicates),
            ("dead_lettered", counts.dead_lettered),
        ):
            self.messages.labels(source, partition, outcome).inc(n)
        for reason, n in report.reasons.items():
            self.dead_letters.labels(source, reason).inc(n)
        self.batches.labels(source, partition).inc()
        self.latency.labels(source).observe(report.seconds)
        if report.watermark_us is not None:
            self.watermark.labels(source, partition).set(report.watermark_us / 1e6)
        self.last_commit.labels(source).set(time.time())
        self.set_lag(lag)

    def set_lag(self, lag: Mapping[str, int]) -> None:
        for partition, n in lag.items():
            self.lag.labels(self.source_id, partition).set(n)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on `host:port` (0: any free port) in a daemon thread; the port."""
        server, _thread = self._prom.start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
