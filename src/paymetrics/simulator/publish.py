"""Publish a simulated stream to a broker: `paymetrics simulate --to kafka://host:port/topic`.

Messages are keyed by `merchant_id` (a merchant's events stay in order on one
partition, as a payment gateway would publish them); lines the simulator made
invalid on purpose, whose merchant cannot be read, go without a key. Paced at
`events_per_second`, or as fast as the broker takes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from paymetrics.simulator.generator import SimulatorConfig, generate

__all__ = ["publish_kafka"]


class _Keyed(msgspec.Struct):
    merchant_id: str | None = None


_decoder = msgspec.json.Decoder(_Keyed)


def _key(line: bytes) -> bytes | None:
    try:
        merchant = _decoder.decode(line).merchant_id
    except ValueError:  # not JSON, not UTF-8, or no string merchant: the invalid on purpose
        return None
    return merchant.encode() if merchant else None


def publish_kafka(
    config: SimulatorConfig,
    url: str,
    *,
    events_per_second: float | None = None,
    options: Mapping[str, str] | None = None,
    producer_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> int:
    """Publish the stream to the topic of `url`; returns how many messages were sent."""
    parts = urlsplit(url)
    topic = parts.path.strip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
        raise ValueError(f"--to {url!r}: expected kafka://host:port/topic")
    client = {k: v for k, v in parse_qsl(parts.query) if "." in k}
    try:
        from confluent_kafka import Producer
    except ImportError:
        raise ValueError(
            "publishing to Kafka needs confluent-kafka: pip install 'paymetrics[kafka]'"
        ) from None
    settings: dict[str, Any] = {
        "bootstrap.servers": parts.netloc,
        "linger.ms": 20,
        "enable.idempotence": True,
        "client.id": "paymetrics-simulate",
        **client,
        **(options or {}),
    }
    producer = (producer_factory or Producer)(settings)
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    sent = 0
    started = time.monotonic()
    for chunk in generate(config):
        for line in chunk:
            while True:
                try:
                    producer.produce(topic, value=line, key=_key(line), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let the broker catch up
                    producer.poll(0.1)
            sent += 1
        producer.poll(0)
        if events_per_second:
            time.sleep(max(0.0, started + sent / events_per_second - time.monotonic()))
    left = producer.flush(60)
    if left or failures:
        raise ValueError(
            f"--to {url}: {left} message(s) not delivered"
            + (f"; first error: {failures[0]}" if failures else "")
        )
    return sent
