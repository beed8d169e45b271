"""`kafka://host:port[,host:port]/topic?group=NAME` — a Kafka consumer-group source.

Partitions are Kafka partitions; a message's position is its offset + 1, so a
checkpoint's position is the next offset to read. The database checkpoint is the
truth: on assignment each partition starts at its stored checkpoint when there is
one (or at the group's committed offset when that is further on: another worker stored
up to there since this one read the checkpoints), else at the group's committed offset
(else the earliest). Offsets are committed to Kafka in `ack`, after the batch is
durably stored, for lag tooling, for a consumer that starts without our checkpoints,
and for the next owner of a partition. Partitions move between
workers (`rebalancing`): the pipeline then recognises batches another worker
stored. confluent-kafka is imported lazily (`pip install 'paymetrics[kafka]'`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from paymetrics.sources.base import Checkpoint, RawBatch, Source

__all__ = ["KafkaSource"]

log = logging.getLogger("paymetrics.sources.kafka")

_OPTIONS = {"group", "offset_reset", "poll_seconds"}
#: A login or TLS handshake refused for this long, with no partition assigned, ends the run.
REFUSED_SECONDS = 30.0


class KafkaSource(Source):
    rebalancing = True

    def __init__(
        self,
        rest: str,
        *,
        options: Mapping[str, str] | None = None,
        consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        url = urlsplit(f"kafka:{rest}")
        topic = url.path.strip("/")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        # Dotted names are librdkafka properties (session.timeout.ms=…), passed through;
        # secrets (sasl.password) belong in the configuration, not in a URL.
        client = {k: v for k, v in query.items() if "." in k}
        unknown = sorted(set(query) - _OPTIONS - set(client))
        problems = []
        if not url.netloc:
            problems.append("no broker address (kafka://host:port/topic?group=NAME)")
        if not topic or "/" in topic:
            problems.append(f"the path must be one topic name, got {url.path!r}")
        if not query.get("group"):
            problems.append("option group=NAME (the consumer group) is required")
        if unknown:
            problems.append(
                f"unknown options {unknown}; valid: {sorted(_OPTIONS)} and librdkafka "
                "properties (names with dots)"
            )
        reset = query.get("offset_reset", "earliest")
        if reset not in {"earliest", "latest"}:
            problems.append(f"offset_reset must be earliest or latest, got {reset!r}")
        #: Longest a poll waits to fill a batch; None: `batch_max_seconds` (configuration).
        self.poll_seconds: float | None = None
        try:
            if "poll_seconds" in query:
                self.poll_seconds = float(query["poll_seconds"])
        except ValueError:
            problems.append(f"poll_seconds must be a number, got {query['poll_seconds']!r}")
        if problems:
            raise ValueError(f"kafka source kafka:{rest}: " + "; ".join(problems))
        self.topic = topic
        self.group = query["group"]
        self.source_id = f"kafka:{topic}?group={self.group}"  # addresses may change
        self.config: dict[str, Any] = {
            "bootstrap.servers": url.netloc,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": reset,
            "enable.partition.eof": False,
            "client.id": "paymetrics",
            **client,
            **(options or {}),
            # librdkafka's own log lines go through our logging (and its JSON format)
            "logger": logging.getLogger("paymetrics.librdkafka"),
            "error_cb": self._on_error,
        }
        self._refused: tuple[float, str] | None = None  # (first seen, last error) of a refusal
        self._fatal: str | None = None
        self._factory = consumer_factory
        self._consumer: Any = None
        self._checkpoints: dict[str, Checkpoint] = {}
        self._assigned: set[int] = set()
        #: Stop after this long without a message (`paymetrics run --until-idle`); None: never.
        self.idle_seconds: float | None = None

    def _kafka(self) -> Any:
        try:
            import confluent_kafka
        except ImportError:
            raise ValueError(
                "the kafka source needs confluent-kafka: pip install 'paymetrics[kafka]'"
            ) from None
        return confluent_kafka

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        self._checkpoints = dict(checkpoints)
        kafka = self._kafka()
        self._consumer = (self._factory or kafka.Consumer)(dict(self.config))
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_error(self, error: Any) -> None:
        """librdkafka's client-level errors. Most (a broker away, a timeout) it retries by
        itself; a refused login or TLS handshake it would retry for ever, so those end the
        run once they have lasted `REFUSED_SECONDS` without a partition assigned."""
        kafka = self._kafka()
        if error.fatal():
            self._fatal = error.str()
        elif error.code() in (kafka.KafkaError._AUTHENTICATION, kafka.KafkaError._SSL):
            first = self._refused[0] if self._refused else time.monotonic()
            self._refused = (first, error.str())
        else:
            log.warning("kafka %s: %s", self.topic, error.str())

    def _check_connection(self, idle: bool) -> None:
        if self._fatal is not None:
            raise ValueError(f"kafka source {self.source_id}: fatal error: {self._fatal}")
        if self._refused is None:
            return
        if self._assigned:  # it got through after all
            self._refused = None
            return
        first, text = self._refused
        if idle or time.monotonic() - first >= REFUSED_SECONDS:
            raise ValueError(
                f"kafka source {self.source_id}: cannot connect to "
                f"{self.config['bootstrap.servers']}: {text}"
            )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # Our copy of a checkpoint is as old as open() or our last ack of the partition.
        # The group's offset is committed only after the batch is stored, so one that is
        # further on means another worker stored up to there since: start there.
        known = [tp for tp in partitions if str(tp.partition) in self._checkpoints]
        committed = self._committed(consumer, known) if known else {}
        for tp in partitions:
            stored = self._checkpoints.get(str(tp.partition))
            if stored is not None:
                position = max(stored.position, committed.get(tp.partition, -1))
                if position > stored.position:
                    self._checkpoints[str(tp.partition)] = Checkpoint(str(tp.partition), position)
                tp.offset = position  # not the group's offset alone: the database is the truth
        consumer.assign(partitions)
        self._assigned = {tp.partition for tp in partitions}
        log.info("assigned partitions %s of %s", sorted(self._assigned), self.topic)

    def _committed(self, consumer: Any, partitions: list[Any]) -> dict[int, int]:
        """The group's committed offset of each partition that has one."""
        kafka = self._kafka()
        asked = [kafka.TopicPartition(self.topic, tp.partition) for tp in partitions]
        try:
            found = consumer.committed(asked, timeout=30)
        except kafka.KafkaException as error:
            log.warning("could not read the group offsets of %s: %s", self.topic, error)
            return {}
        return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned -= {tp.partition for tp in partitions}
        log.info(
            "revoked partitions %s of %s", sorted(tp.partition for tp in partitions), self.topic
        )

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        assert self._consumer is not None, "open() first"
        kafka = self._kafka()
        last_message = time.monotonic()
        while not self.should_stop():
            wait = self.batch_max_seconds if self.poll_seconds is None else self.poll_seconds
            messages = self._consumer.consume(num_messages=max_events, timeout=wait)
            if not messages:
                self.on_idle()
                idle = self.idle_seconds is not None and (
                    time.monotonic() - last_message >= self.idle_seconds
                )
                self._check_connection(idle)
                if idle:
                    return
                continue
            self._refused = None
            last_message = time.monotonic()
            by_partition: dict[int, list[Any]] = {}
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == kafka.KafkaError._PARTITION_EOF:
                        continue
                    raise ValueError(f"kafka source {self.source_id}: {error.str()}")
                by_partition.setdefault(message.partition(), []).append(message)
            for partition, part in by_partition.items():
                kept = [m for m in part if m.value()]  # a null or empty value is a blank line
                if not kept:
                    continue
                last = part[-1].offset()
                yield RawBatch(
                    self.source_id,
                    str(partition),
                    [m.value() for m in kept],
                    [m.offset() + 1 for m in kept],
                    Checkpoint(str(partition), last + 1),
                )

    def ack(self, batch: RawBatch) -> None:
        """Commit the group offset (after the database commit). A partition that moved to
        another worker meanwhile is not ours to commit: skipped, the database is the truth."""
        partition = int(batch.partition)
        self._checkpoints[batch.partition] = batch.checkpoint
        if partition not in self._assigned:
            return
        kafka = self._kafka()
        offset = kafka.TopicPartition(self.topic, partition, batch.checkpoint.position)
        try:
            self._consumer.commit(offsets=[offset], asynchronous=False)
        except kafka.KafkaException as error:
            log.warning(
                "could not commit the group offset of %s[%s] (stored in the database anyway): %s",
                self.topic,
                partition,
                error,
            )

    def lag(self) -> dict[str, int]:
        """High watermark minus the acknowledged position, per assigned partition.

        The high watermark is librdkafka's cached one, refreshed by every fetch
        response, so this asks the broker nothing.
        """
        if self._consumer is None:
            return {}
        kafka = self._kafka()
        out: dict[str, int] = {}
        for partition in sorted(self._assigned):
            key = str(partition)
            done = self._checkpoints.get(key)
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    kafka.TopicPartition(self.topic, partition), cached=True
                )
            except kafka.KafkaException:
                continue
            if high < 0 or done is None:
                continue  # not fetched yet, or nothing stored yet: unknown, not zero
            out[key] = max(high - done.position, 0)
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
