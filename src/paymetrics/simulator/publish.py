"""Publish a simulated stream to a broker: `paymetrics simulate --to kafka://host:port/topic`
or `--to eventhubs://NAMESPACE/HUB`.

Messages are keyed by `merchant_id` (a merchant's events stay in order on one
partition, as a payment gateway would publish them); lines the simulator made
invalid on purpose, whose merchant cannot be read, go without a key. Paced at
`events_per_second`, or as fast as the broker takes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from paymetrics.simulator.generator import SimulatorConfig, generate
from paymetrics.sources.eventhubs import (
    ClientSettings,
    default_credential,
    fully_qualified_namespace,
    redact,
    secret_fragments,
)

__all__ = ["EVENTHUBS_CONNECTION_STRING_ENV", "publish_eventhubs", "publish_kafka"]

EVENTHUBS_CONNECTION_STRING_ENV = "PAYMETRICS_EVENTHUBS_CONNECTION_STRING"


class _Keyed(msgspec.Struct):
    merchant_id: str | None = None


_decoder = msgspec.json.Decoder(_Keyed)


def _key(line: bytes) -> bytes | None:
    try:
        merchant = _decoder.decode(line).merchant_id
    except ValueError:  # not JSON, not UTF-8, or no string merchant: the invalid on purpose
        return None
    return merchant.encode() if merchant else None


def _merchant(line: bytes) -> str | None:
    try:
        return _decoder.decode(line).merchant_id or None
    except ValueError:
        return None


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


def _default_producer(settings: ClientSettings) -> Any:
    try:
        from azure.eventhub import EventHubProducerClient
    except ImportError:
        raise ValueError(
            "publishing to Event Hubs needs azure-eventhub: pip install 'paymetrics[azure]'"
        ) from None
    if settings.connection_string:
        return EventHubProducerClient.from_connection_string(
            settings.connection_string, eventhub_name=settings.eventhub_name
        )
    return EventHubProducerClient(
        settings.fully_qualified_namespace, settings.eventhub_name, default_credential()
    )


def publish_eventhubs(
    config: SimulatorConfig,
    url: str,
    *,
    events_per_second: float | None = None,
    options: Mapping[str, str] | None = None,
    client_factory: Callable[[ClientSettings], Any] | None = None,
) -> int:
    """Publish the stream to the event hub of `url`; returns how many events were sent.

    Each generated chunk is grouped by merchant into `EventDataBatch`es created with that
    merchant as partition key (a batch goes whole to one partition, so a merchant's events
    keep their order), each sent when full. The connection string comes from `options`,
    else `$PAYMETRICS_EVENTHUBS_CONNECTION_STRING`, else DefaultAzureCredential.
    """
    parts = urlsplit(url)
    hub = parts.path.strip("/")
    namespace = fully_qualified_namespace(parts.netloc) if parts.netloc else None
    if parts.scheme != "eventhubs" or namespace is None or not hub or "/" in hub or parts.query:
        raise ValueError(f"--to {url!r}: expected eventhubs://NAMESPACE/HUB")
    options = dict(options or {})
    unknown = sorted(set(options) - {"connection_string"})
    if unknown:
        raise ValueError(f"--to {url}: unknown options {unknown}; valid: ['connection_string']")
    connection = options.get("connection_string") or os.environ.get(EVENTHUBS_CONNECTION_STRING_ENV)
    secrets = secret_fragments({"connection_string": connection or ""})
    try:
        from azure.eventhub import EventData
        from azure.eventhub.exceptions import EventHubError
    except ImportError:
        raise ValueError(
            "publishing to Event Hubs needs azure-eventhub: pip install 'paymetrics[azure]'"
        ) from None
    settings = ClientSettings(namespace, hub, connection_string=connection)
    try:
        producer = (client_factory or _default_producer)(settings)
    except ValueError as error:
        raise ValueError(redact(f"--to {url}: {error}", secrets)) from None
    sent = 0
    started = time.monotonic()

    def send(batch: Any) -> None:
        nonlocal sent
        producer.send_batch(batch)
        sent += len(batch)
        if events_per_second:
            time.sleep(max(0.0, started + sent / events_per_second - time.monotonic()))

    try:
        with producer:
            for chunk in generate(config):
                by_merchant: dict[str | None, list[bytes]] = {}
                for line in chunk:
                    by_merchant.setdefault(_merchant(line), []).append(line)
                for merchant, lines in by_merchant.items():
                    batch = producer.create_batch(partition_key=merchant)
                    for line in lines:
                        event = EventData(line)
                        try:
                            batch.add(event)
                        except ValueError:  # full: send it, start the next one
                            if not len(batch):
                                raise ValueError(
                                    f"--to {url}: a message of {len(line):,} bytes does not "
                                    "fit in an event hub batch"
                                ) from None
                            send(batch)
                            batch = producer.create_batch(partition_key=merchant)
                            batch.add(event)
                    if len(batch):
                        send(batch)
    except EventHubError as error:
        raise ValueError(
            redact(f"--to {url}: {type(error).__name__}: {error} ({sent:,} sent)", secrets)
        ) from None
    return sent
