"""Dead letters also published to a Kafka topic (`dead_letters.topic_url`), for teams
that repair and replay them with their own consumers.

The `failed_items` table stays the record; the topic is a copy. Each dead letter
becomes one message: the value is the masked payload as received, the key is the
source partition (one partition's dead letters stay in order), and headers carry
the reason code, the error message and where the message came from:

    paymetrics-reason      invalid_json
    paymetrics-error       message: not valid JSON (…)
    paymetrics-source      kafka:payments?group=pm
    paymetrics-partition   3
    paymetrics-position    1042
    paymetrics-event-id    evt_…            (when one could be read)

Delivery is at least once: a batch's dead letters are published and flushed *before*
its database transaction, so a crash in between publishes them again on redelivery
(source, partition and position identify a repeat). Azure Event Hubs takes the same
producer through its Kafka endpoint. confluent-kafka is imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from paymetrics.storage.base import DeadLetters

__all__ = ["DeadLetterTopic", "DeadLetterTopicUnavailable"]

log = logging.getLogger("paymetrics.dead_letter_topic")

#: Longest error text put in a header (the table keeps the whole message).
MAX_ERROR_HEADER_CHARS = 1000


class DeadLetterTopicUnavailable(RuntimeError):
    """The broker did not confirm every dead letter in time: retried with backoff."""


class DeadLetterTopic:
    """A producer for `kafka://host:port[,host:port]/topic[?librdkafka.props]`."""

    def __init__(
        self,
        url: str,
        *,
        options: Mapping[str, str] | None = None,
        flush_timeout_seconds: float = 30.0,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        parts = urlsplit(url)
        topic = parts.path.strip("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        problems = []
        if parts.scheme != "kafka":
            problems.append("the scheme must be kafka:// (Event Hubs: its Kafka endpoint)")
        if not parts.netloc:
            problems.append("no broker address (kafka://host:port/topic)")
        if not topic or "/" in topic:
            problems.append(f"the path must be one topic name, got {parts.path!r}")
        unknown = sorted(k for k in query if "." not in k)
        if unknown:
            problems.append(f"unknown options {unknown}; only librdkafka properties (dotted)")
        if problems:
            raise ValueError(f"dead_letters.topic_url {url.split('?')[0]}: " + "; ".join(problems))
        self.topic = topic
        self.flush_timeout_seconds = flush_timeout_seconds
        self.config: dict[str, Any] = {
            "bootstrap.servers": parts.netloc,
            "client.id": "paymetrics-dead-letters",
            "enable.idempotence": True,  # no broker-side duplicates from producer retries
            "acks": "all",
            "linger.ms": 20,
            **query,
            **(options or {}),
        }
        self._factory = producer_factory
        self._producer: Any = None

    def _client(self) -> Any:
        if self._producer is None:
            try:
                from confluent_kafka import Producer
            except ImportError:
                raise ValueError(
                    "dead_letters.topic_url needs confluent-kafka: pip install 'paymetrics[kafka]'"
                ) from None
            self._producer = (self._factory or Producer)(dict(self.config))
        return self._producer

    def publish(self, source_id: str, partition: str, dead: DeadLetters) -> None:
        """Publish `dead` and wait until the broker has every one of them."""
        if not len(dead):
            return
        producer = self._client()
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        key = partition.encode()
        common = [("paymetrics-source", source_id.encode()), ("paymetrics-partition", key)]
        for position, reason, message, event_id, payload in zip(
            dead.positions, dead.reasons, dead.messages, dead.event_ids, dead.payloads, strict=True
        ):
            headers = [
                ("paymetrics-reason", reason.encode()),
                ("paymetrics-error", message[:MAX_ERROR_HEADER_CHARS].encode()),
                *common,
                ("paymetrics-position", str(position).encode()),
            ]
            if event_id is not None:
                headers.append(("paymetrics-event-id", event_id.encode()))
            while True:
                try:
                    producer.produce(
                        self.topic,
                        value=payload.encode(),
                        key=key,
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    producer.poll(0.1)
        left = producer.flush(self.flush_timeout_seconds)
        if left or failures:
            raise DeadLetterTopicUnavailable(
                f"dead-letter topic {self.topic}: {left} of {len(dead)} messages unconfirmed "
                f"after {self.flush_timeout_seconds:g} s"
                + (f"; first delivery error: {failures[0]}" if failures else "")
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.flush_timeout_seconds)
            self._producer = None
