"""Kafka → SQLite on one worker: the broker-read ceiling, the real worker, and what Kafka adds.

Bar: a single worker sustains at least 50,000 events/s from the local broker into SQLite.

Starts its own Tansu broker on 127.0.0.1 exactly as the test suite does (the install and
start functions of tests/integration/kafka/conftest.py), publishes N simulated events
(the bench's realistic defects, keyed by merchant), then measures, interleaving the
repetitions so that load from other processes spreads over every configuration:

* produce: events/s into the broker (big linger and batches, no delivery callback);
* ceiling: a bare confluent-kafka consumer (`consume(num_messages=50_000)`, `.value()` of
  each message) over the whole topic, for several librdkafka fetch settings;
* read: `KafkaSource.batches()` alone, and faster prototypes of it (same batches, checked);
* split: the per-message Python work of `batches()` replayed on messages held in memory;
* worker: `KafkaSource` → `Pipeline` → a fresh SQLite database (what `paymetrics run
  --source kafka://… --until-idle` does), with and without the raw archive, measured
  from the partition assignment to the end of the last commit (the group join and the
  idle wait excluded), with the pipeline's stage seconds;
* file: the same events from a JSON Lines file through the same in-process pipeline
  (from the first read to the end of the last commit).

Also prints the CPU seconds per event of this process (all threads) and of the broker:
steadier than events/s on a shared machine.

    .venv/bin/python benchmarks/kafka_throughput.py --events 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import compress
from operator import methodcaller
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the suite's broker helpers (tests/ is not installed)

import confluent_kafka  # noqa: E402
import pytest  # noqa: E402
from tests.integration.kafka.conftest import FAST_GROUP, _install, _start, _stop  # noqa: E402

from paymetrics.archive import ParquetArchive  # noqa: E402
from paymetrics.bench import _cpu_model, realistic_config  # noqa: E402
from paymetrics.config import ConfigManager  # noqa: E402
from paymetrics.pipeline import Pipeline, RunStats  # noqa: E402
from paymetrics.simulator import generate  # noqa: E402
from paymetrics.simulator.publish import _key  # noqa: E402
from paymetrics.sources.base import Checkpoint, RawBatch  # noqa: E402
from paymetrics.sources.file import FileSource  # noqa: E402
from paymetrics.sources.kafka import KafkaSource  # noqa: E402
from paymetrics.storage import open_store  # noqa: E402

CONSUME_BATCH = 50_000

#: librdkafka fetch settings tried for the ceiling (on top of the defaults).
FETCH_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "partition-10MiB": {"max.partition.fetch.bytes": 10 * 2**20},
    "partition-10MiB+queue-256MiB": {
        "max.partition.fetch.bytes": 10 * 2**20,
        "queued.max.messages.kbytes": 256 * 1024,
        "queued.min.messages": 1_000_000,
    },
    "partition-50MiB+fetch-100MiB+queue-512MiB": {
        "fetch.max.bytes": 100 * 2**20,
        "max.partition.fetch.bytes": 50 * 2**20,
        "queued.max.messages.kbytes": 512 * 1024,
        "queued.min.messages": 1_000_000,
        "receive.message.max.bytes": 110 * 2**20,
    },
    "wait-10ms": {"fetch.wait.max.ms": 10},
    "partition-10MiB+wait-10ms": {"max.partition.fetch.bytes": 10 * 2**20, "fetch.wait.max.ms": 10},
}

PRODUCER_SETTINGS: dict[str, Any] = {
    "linger.ms": 100,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_097_151,
    "compression.type": "none",
    "client.id": "paymetrics-bench-produce",
}


# -- the broker ------------------------------------------------------------------------


@contextlib.contextmanager
def tansu(workdir: Path, cpu: int | None) -> Iterator[tuple[str, str, int]]:
    """The test suite's broker: (bootstrap servers, version, pid); stopped on the way out."""
    installed = _install()
    if isinstance(installed, str):
        raise SystemExit(f"no broker: {installed}")
    executable, version = installed
    try:
        process, port = _start(executable, workdir)
    except pytest.fail.Exception as error:  # _start reports through pytest.fail
        raise SystemExit(f"the broker did not start: {error}") from None
    try:
        if cpu is not None:
            os.sched_setaffinity(process.pid, {cpu})
        yield f"127.0.0.1:{port}", version, process.pid
    finally:
        _stop(process)


def create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-{partitions}p-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    done = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    done[topic].result(timeout=15)
    deadline = time.monotonic() + 10
    while True:
        shown = admin.list_topics(topic, timeout=5).topics.get(topic)
        if shown is not None and shown.error is None and len(shown.partitions) == partitions:
            return topic
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {topic} not in metadata with {partitions} partitions")
        time.sleep(0.05)


def produce(bootstrap: str, topic: str, lines: list[bytes], keys: list[bytes | None]) -> float:
    """Publish every line as fast as the broker takes it; returns seconds (loop + flush)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    send = producer.produce
    started = time.perf_counter()
    for value, key in zip(lines, keys, strict=True):
        while True:
            try:
                send(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(300)
    seconds = time.perf_counter() - started
    if left:
        raise SystemExit(f"{left} message(s) not delivered to {topic}")
    return seconds


# -- the ceiling: a bare consumer ------------------------------------------------------


def _assigned_consumer(bootstrap: str, topic: str, partitions: int, extra: dict[str, Any]) -> Any:
    """A consumer assigned every partition from the beginning, without a group join."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **extra,
        }
    )
    consumer.assign(
        [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in range(partitions)
        ]
    )
    return consumer


def ceiling(
    bootstrap: str, topic: str, partitions: int, total: int, extra: dict[str, Any]
) -> float:
    """Seconds for a bare consume loop to read `total` messages: a consumer in a new group,
    like the worker's, timed from its assignment (the group join excluded, like the
    worker's window) to the last message."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ceiling-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            **FAST_GROUP,
            **extra,
        }
    )
    assigned: list[float] = []

    def on_assign(c: Any, tps: list[Any]) -> None:
        c.assign(tps)
        assigned.append(time.perf_counter())

    consumer.subscribe([topic], on_assign=on_assign)
    consume = consumer.consume
    seen = 0
    deadline = time.perf_counter() + 600
    while seen < total:
        # consume() waits out its timeout while it has fewer than num_messages: never ask
        # for more than are left (the worker's batches end on the topic's end when N is a
        # multiple of the batch size).
        messages = consume(num_messages=min(CONSUME_BATCH, total - seen), timeout=1.0)
        for message in messages:
            message.value()
        seen += len(messages)
        if time.perf_counter() > deadline:
            raise SystemExit(f"ceiling: only {seen:,} of {total:,} messages in 600 s")
    seconds = time.perf_counter() - assigned[0]
    consumer.close()
    if seen != total:
        raise SystemExit(f"ceiling: read {seen:,} messages, published {total:,}")
    return seconds


def capture(bootstrap: str, topic: str, partitions: int, total: int) -> list[list[Any]]:
    """Every message, as `consume` returned them (for replaying `batches()`' Python work)."""
    consumer = _assigned_consumer(bootstrap, topic, partitions, {})
    out: list[list[Any]] = []
    seen = 0
    while seen < total:
        messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=1.0)
        if messages:
            out.append(messages)
            seen += len(messages)
    consumer.close()
    return out


# -- batches(): the current form and prototypes ------------------------------------------

EOF = confluent_kafka.KafkaError._PARTITION_EOF
_error = methodcaller("error")
_value = methodcaller("value")
_offset = methodcaller("offset")
_partition = methodcaller("partition")


def split_current(source_id: str, messages: list[Any]) -> Iterator[RawBatch]:
    """The loop body of KafkaSource.batches() as it is (src/paymetrics/sources/kafka.py)."""
    by_partition: dict[int, list[Any]] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() == EOF:
                continue
            raise ValueError(f"kafka source {source_id}: {error.str()}")
        by_partition.setdefault(message.partition(), []).append(message)
    for partition, part in by_partition.items():
        kept = [m for m in part if m.value()]
        if not kept:
            continue
        last = part[-1].offset()
        yield RawBatch(
            source_id,
            str(partition),
            [m.value() for m in kept],
            [m.offset() + 1 for m in kept],
            Checkpoint(str(partition), last + 1),
        )


def split_map(source_id: str, messages: list[Any]) -> Iterator[RawBatch]:
    """Proposed: every per-message call through map() in C; errors looked at only when
    there is one; no grouping when the batch holds one partition."""
    errors = list(map(_error, messages))
    if errors.count(None) != len(errors):  # rare: end-of-partition events or a failure
        for error in errors:
            if error is not None and error.code() != EOF:
                raise ValueError(f"kafka source {source_id}: {error.str()}")
        messages = list(compress(messages, [error is None for error in errors]))
        if not messages:
            return
    partitions = list(map(_partition, messages))
    first = partitions[0]
    if partitions.count(first) == len(partitions):
        groups: Any = ((first, messages),)
    else:  # in order of first appearance, like the dict of the current form
        groups = (
            (p, list(compress(messages, map(p.__eq__, partitions))))
            for p in dict.fromkeys(partitions)
        )
    for partition, part in groups:
        values = list(map(_value, part))
        offsets = list(map(_offset, part))
        last = offsets[-1]
        if not all(values):  # a null or empty value is a blank line
            offsets = list(compress(offsets, values))
            values = list(compress(values, values))
            if not values:
                continue
        yield RawBatch(
            source_id,
            str(partition),
            values,
            [offset + 1 for offset in offsets],
            Checkpoint(str(partition), last + 1),
        )


def split_comp(source_id: str, messages: list[Any], *, ranges: bool = False) -> Iterator[RawBatch]:
    """Proposed: the same batches with less per-message work. error() is looked at in one
    comprehension (the per-message handling only when there is an error), no grouping when
    the batch holds one partition, value() taken once per message, offsets only for
    kept messages. Comprehensions, not map(methodcaller): those are slower on 3.11.

    `ranges`: positions from a range when a partition's offsets have no gap (first and last
    offset and the count agree), so two offset() calls per partition instead of one per
    message; this relies on a partition's offsets increasing within one consume()."""
    if [m for m in messages if m.error() is not None]:  # rare: end-of-partition or failure
        ok = []
        for message in messages:
            error = message.error()
            if error is None:
                ok.append(message)
            elif error.code() != EOF:
                raise ValueError(f"kafka source {source_id}: {error.str()}")
        messages = ok
        if not messages:
            return
    if len({m.partition() for m in messages}) == 1:
        groups: Any = ((messages[0].partition(), messages),)
    else:
        by_partition: dict[int, list[Any]] = {}
        for message in messages:
            by_partition.setdefault(message.partition(), []).append(message)
        groups = by_partition.items()
    for partition, part in groups:
        values = [v for m in part if (v := m.value())]  # a null or empty value is a blank line
        if not values:
            continue
        start, last = part[0].offset(), part[-1].offset()
        if len(values) == len(part) and ranges and last - start == len(part) - 1:
            positions = list(range(start + 1, last + 2))
        elif len(values) == len(part):
            positions = [m.offset() + 1 for m in part]
        else:
            positions = [m.offset() + 1 for m in part if m.value()]
        yield RawBatch(
            source_id,
            str(partition),
            values,
            positions,
            Checkpoint(str(partition), last + 1),
        )


SPLITS: dict[str, Callable[[str, list[Any]], Iterator[RawBatch]]] = {
    "current": split_current,
    "map": split_map,
    "comp": split_comp,
    "comp+range": functools.partial(split_comp, ranges=True),
}


class _FakeError:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"error {self._code}"


class _FakeMessage:
    def __init__(
        self, partition: int, offset: int, value: bytes | None, error: _FakeError | None = None
    ) -> None:
        self._p, self._o, self._v, self._e = partition, offset, value, error

    def error(self) -> _FakeError | None:
        return self._e

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v


def check_splits() -> None:
    """Every form gives the current form's batches (or its error) on the cases the
    simulator's stream does not have: blank values, gaps, end-of-partition events,
    interleaved partitions, errors."""
    import random

    rng = random.Random(5)
    eof = _FakeError(EOF)
    cases: list[list[_FakeMessage]] = [
        [_FakeMessage(0, 7, b"a")],
        [_FakeMessage(0, 7, None), _FakeMessage(0, 8, b"")],  # all blank
        [_FakeMessage(0, 1, b"a"), _FakeMessage(0, 2, b""), _FakeMessage(0, 3, b"c")],
        [_FakeMessage(0, 1, b"a"), _FakeMessage(0, 5, b"b")],  # a gap (compaction)
        [_FakeMessage(0, 1, b"a"), _FakeMessage(0, 2, None, eof)],
        [_FakeMessage(1, 2, None, eof)],
        [_FakeMessage(0, 1, b"a"), _FakeMessage(0, 2, None, _FakeError(-195))],
    ]
    for _ in range(200):
        offsets = [0, 0, 0, 0]
        case = []
        for _ in range(rng.randrange(1, 60)):
            p = rng.randrange(rng.choice([1, 2, 4]))
            offsets[p] += rng.choice([1, 1, 1, 2])
            value = rng.choice([b"x", b"yz", b"", None]) if rng.random() < 0.2 else b"v"
            error = eof if rng.random() < 0.03 else None
            case.append(_FakeMessage(p, offsets[p], value, error))
        cases.append(case)
    for case in cases:
        try:
            expect: Any = list(split_current("s", case))
        except ValueError as error:
            expect = str(error)
        for name, fn in SPLITS.items():
            try:
                got: Any = list(fn("s", case))
            except ValueError as error:
                got = str(error)
            if got != expect:
                raise SystemExit(f"split {name} differs from the current form on {case!r}")


class _TimedConsumer:
    """A confluent-kafka Consumer whose consume() and commit() calls are timed."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._real = confluent_kafka.Consumer(config)
        self.consumes: list[tuple[float, float, int]] = []  # (called, returned, messages)
        self.commit_seconds = 0.0

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        called = time.perf_counter()
        messages = self._real.consume(*args, **kwargs)
        self.consumes.append((called, time.perf_counter(), len(messages)))
        return messages

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        called = time.perf_counter()
        try:
            return self._real.commit(*args, **kwargs)
        finally:
            self.commit_seconds += time.perf_counter() - called

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class BenchKafkaSource(KafkaSource):
    """KafkaSource whose batches() is its own ("current") or a prototype of SPLITS. Records
    when the partitions were assigned (the measured window starts there: the group join
    is excluded, the first fetch is not), when each batch was asked for and delivered
    (the pipeline's "read"), and the time spent inside consume() and commit()."""

    def __init__(self, rest: str, *, split: str, options: dict[str, Any]) -> None:
        self.timed: _TimedConsumer | None = None
        super().__init__(
            rest, options={k: str(v) for k, v in options.items()}, consumer_factory=self._make
        )
        self.split = split
        self.reads: list[tuple[float, float, int]] = []
        self.assigned_at: float | None = None

    def _make(self, config: dict[str, Any]) -> _TimedConsumer:
        self.timed = _TimedConsumer(config)
        return self.timed

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        super()._on_assign(consumer, partitions)
        if self.assigned_at is None:
            self.assigned_at = time.perf_counter()

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        current = self.split == "current"
        inner = super().batches(max_events) if current else self._batches(max_events)
        return _timed(inner, self.reads)

    def _batches(self, max_events: int) -> Iterator[RawBatch]:
        """KafkaSource.batches() with its loop body replaced by SPLITS[self.split]."""
        assert self._consumer is not None
        split = SPLITS[str(self.split)]
        last_message = time.monotonic()
        while not self.should_stop():
            messages = self._consumer.consume(num_messages=max_events, timeout=self.poll_seconds)
            if not messages:
                getattr(self, "on_idle", lambda: None)()  # newer pipelines settle acks here
                if self.idle_seconds is not None and (
                    time.monotonic() - last_message >= self.idle_seconds
                ):
                    return
                continue
            last_message = time.monotonic()
            yield from split(self.source_id, messages)

    def window(self, end: float) -> dict[str, float]:
        """From the assignment to `end`: seconds, read seconds (the pipeline's "read"),
        and of them seconds inside consume(); commit seconds (acks, whole run)."""
        assert self.assigned_at is not None
        assert self.timed is not None
        start = self.assigned_at
        last = max(b for _, b, n in self.timed.consumes if n)  # then only the idle wait
        inside = [(max(a, start), b) for a, b, _ in self.timed.consumes if start < b <= last]
        return {
            "seconds": end - start,
            "read": sum(b - max(a, start) for a, b, _ in self.reads),
            "consume": sum(b - a for a, b in inside),
            "ack_commit": self.timed.commit_seconds,
        }


class BenchFileSource(FileSource):
    """FileSource recording when each batch was asked for and delivered."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: list[tuple[float, float, int]] = []

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        return _timed(super().batches(max_events), self.reads)

    def window(self, end: float) -> dict[str, float]:
        """From the first read to `end`: seconds, read seconds."""
        return {
            "seconds": end - self.reads[0][0],
            "read": sum(b - a for a, b, _ in self.reads),
        }


def _timed(inner: Iterator[RawBatch], reads: list[tuple[float, float, int]]) -> Iterator[RawBatch]:
    """`inner`, recording when each batch was asked for and when it came (not the last,
    empty, ask: a broker source's idle wait)."""
    while True:
        asked = time.perf_counter()
        batch = next(inner, None)
        if batch is None:
            return
        reads.append((asked, time.perf_counter(), len(batch)))
        yield batch


def read_only(
    bootstrap: str,
    topic: str,
    total: int,
    split: str,
    batch: int,
    fetch: dict[str, Any],
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Iterate a source's batches() to the end of the topic, doing nothing with them."""
    source = BenchKafkaSource(
        f"//{bootstrap}/{topic}?group=read-{uuid.uuid4().hex[:8]}",
        split=split,
        options={**FAST_GROUP, **fetch},
    )
    source.idle_seconds = 30.0
    source.open({})
    seen = 0
    try:
        if profile is not None:
            profile.enable()
        for got in source.batches(batch):
            seen += len(got)
            if seen >= total:
                break
        end = time.perf_counter()
        if profile is not None:
            profile.disable()
    finally:
        source.close()
    if seen != total:
        raise SystemExit(f"read {seen:,} messages, published {total:,}")
    return {**source.window(end), "events": seen}


# -- the worker: a source through the pipeline into a fresh SQLite database ---------------


def worker(
    source: BenchKafkaSource | BenchFileSource,
    work: Path,
    *,
    archive: bool,
    batch: int,
    total: int,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """One measured `paymetrics run`: the CLI's configuration (built-in defaults and these
    flags), in process, so the window runs from the first batch to the last commit."""
    db_path = work / "worker.db"
    for stale in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        stale.unlink(missing_ok=True)
    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    manager = ConfigManager(
        environ={},
        flags={
            ("source", "url"): "file:unused",
            ("storage", "db_url"): f"sqlite:///{db_path}",
            ("storage", "archive_url"): str(raw) if archive else None,
            ("batching", "batch_max_events"): batch,
        },
        applied_by="benchmarks/kafka_throughput.py",
    )
    settings = manager.settings
    store = open_store(settings.storage.db_url.get_secret_value())
    archiver = ParquetArchive(str(raw)) if archive else None
    commits: list[float] = []

    gc.collect()
    try:
        store.prepare()
        options = manager.attach(store)
        with source:
            pipeline = Pipeline(store, archiver, options)
            commit = pipeline._commit_with_retry

            def timed_commit(*args: Any, **kwargs: Any) -> Any:
                # When each commit ends (on the writer thread): the acknowledgement, and so
                # on_batch, of the last batch may wait for the source's idle poll.
                done = commit(*args, **kwargs)
                commits.append(time.perf_counter())
                return done

            pipeline._commit_with_retry = timed_commit  # type: ignore[method-assign]
            if profile is not None:
                profile.enable()
            stats: RunStats = pipeline.run(source)
            if profile is not None:
                profile.disable()
    finally:
        manager.close()
        store.close()
    if stats.messages != total:
        raise SystemExit(f"worker stored {stats.messages:,} messages, expected {total:,}")
    window = source.window(commits[-1])
    stages = dict(stats.stage_seconds)
    stages["read"] = window.pop("read")  # without the group join and the idle wait
    stages.update({f"({name})": seconds for name, seconds in window.items() if name != "seconds"})
    return {
        "seconds": window["seconds"],
        "events": stats.messages,
        "batches": stats.batches,
        "normalized": stats.normalized,
        "duplicates": stats.duplicates,
        "dead_lettered": stats.dead_lettered,
        "stage_seconds": stages,
    }


def kafka_worker_source(
    bootstrap: str, topic: str, split: str, fetch: dict[str, Any]
) -> BenchKafkaSource:
    source = BenchKafkaSource(
        f"//{bootstrap}/{topic}?group=worker-{uuid.uuid4().hex[:8]}",
        split=split,
        options={**FAST_GROUP, **fetch},
    )
    source.idle_seconds = 2.0  # --until-idle 2: outside the measured window
    return source


# -- results ----------------------------------------------------------------------------


def cpu_seconds(broker_pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of this process (every thread: Python, the commit
    thread, librdkafka's) and of the broker."""
    own = os.times()
    fields = Path(f"/proc/{broker_pid}/stat").read_text().rsplit(")", 1)[1].split()
    broker = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own.user + own.system, broker


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "confluent_kafka": getattr(confluent_kafka, "__version__", confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_at_start": [round(x, 2) for x in load],
    }


def summarize(runs: list[float], events: int) -> dict[str, Any]:
    rates = [events / s for s in runs]
    return {
        "runs_events_per_second": [round(r) for r in rates],
        "median": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
    }


def print_table(results: dict[str, Any]) -> None:
    rows = results["rows"]
    width = max(len(name) for name in rows) + 2
    print(
        f"\n{'measurement':<{width}}{'median ev/s':>12}{'min':>10}{'max':>10}"
        f"{'CPU µs/ev':>11}{'broker':>8}   runs (events/s)"
    )
    for name, row in rows.items():
        runs = ", ".join(f"{r:,}" for r in row["runs_events_per_second"])
        print(
            f"{name:<{width}}{row['median']:>12,}{row['min']:>10,}{row['max']:>10,}"
            f"{row['cpu_us_per_event_self']:>11.2f}{row['cpu_us_per_event_broker']:>8.2f}   {runs}"
        )
    print("(CPU µs/ev: this process, all threads, and the broker, over the whole measured call)")
    for name, stages in results["stages"].items():
        text = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in stages.items())
        print(f"\nstage seconds, median over runs ({name}): {text}")
    for name, value in results.get("split_us_per_event", {}).items():
        print(f"split {name}: {value}")
    m = results["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['cores']} cores ({m['cpus_allowed']} allowed), Python "
        f"{m['python']}, confluent-kafka {m['confluent_kafka']}, librdkafka {m['librdkafka']}, "
        f"broker {results['broker']}, load average at start {m['load_average_at_start']}, "
        f"at end {results['load_average_at_end']}"
    )
    print(f"input: {results['events']:,} events, {results['input_mib']:.0f} MiB")


def _median_stages(runs: list[dict[str, Any]]) -> dict[str, float]:
    names = runs[0]["stage_seconds"]
    return {n: round(statistics.median(r["stage_seconds"][n] for r in runs), 3) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="a multiple of --batch-max-events, or the last batch waits out consume's timeout",
    )
    parser.add_argument("--partitions", type=int, nargs="+", default=[1])
    parser.add_argument("--batch-max-events", type=int, default=50_000)
    parser.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="worker runs with (or without) the raw archive; default: both",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fetch",
        nargs="*",
        default=list(FETCH_SETTINGS),
        choices=list(FETCH_SETTINGS),
        help="fetch settings to try for the ceiling (default: all)",
    )
    parser.add_argument(
        "--worker-fetch",
        default="default",
        choices=list(FETCH_SETTINGS),
        help="fetch settings of the worker and read-only runs",
    )
    parser.add_argument(
        "--splits",
        nargs="*",
        default=list(SPLITS),
        choices=list(SPLITS),
        help="batches() forms replayed on messages held in memory",
    )
    parser.add_argument(
        "--read-splits",
        nargs="*",
        default=["current", "comp"],
        choices=list(SPLITS),
        help="batches() forms run alone against the broker",
    )
    parser.add_argument("--no-file", action="store_true", help="skip the file baseline")
    parser.add_argument("--no-worker", action="store_true", help="skip the pipeline runs")
    parser.add_argument(
        "--worker-splits",
        nargs="*",
        default=["current", "comp"],
        choices=list(SPLITS),
        help="batches() forms to run the whole worker with",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="this process (worker, librdkafka threads) on CPU 1, the broker on CPU 0",
    )
    parser.add_argument("--profile", type=Path, help="write cProfile tables here")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    archives = [args.archive] if args.archive is not None else [False, True]
    if args.pin:
        os.sched_setaffinity(0, {1})
    info = machine()
    check_splits()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    print(f"generating {args.events:,} events (seed {args.seed}) ...", flush=True)
    lines = [line for chunk in generate(realistic_config(events=args.events, seed=args.seed))
             for line in chunk]  # fmt: skip
    keys = [_key(line) for line in lines]
    events_file = work / "events.jsonl"
    with events_file.open("wb") as handle:
        for line in lines:
            handle.write(line + b"\n")
    total = len(lines)
    input_mib = sum(map(len, lines)) / 2**20
    warm_file = work / "warm-up.jsonl"
    warm = lines[: min(total, 2 * args.batch_max_events)]
    warm_file.write_bytes(b"\n".join(warm) + b"\n")

    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    worker_runs: dict[str, list[dict[str, Any]]] = {}
    split_us: dict[str, str] = {}
    profiles: list[tuple[str, cProfile.Profile]] = []

    def measured(name: str, fn: Callable[..., Any], *fn_args: Any, **fn_kwargs: Any) -> Any:
        """fn(*fn_args, **fn_kwargs) returns its measured seconds, or a dict with them; note
        the rate and the CPU used by this process and by the broker over the whole call."""
        before = cpu_seconds(pid)
        out = fn(*fn_args, **fn_kwargs)
        after = cpu_seconds(pid)
        seconds = out if isinstance(out, float) else out["seconds"]
        used = (after[0] - before[0], after[1] - before[1])
        runs.setdefault(name, []).append(seconds)
        cpu.setdefault(name, []).append(used)
        print(
            f"  {name}: {total / seconds:,.0f} events/s ({seconds:.2f} s; CPU s: this process "
            f"{used[0]:.2f}, broker {used[1]:.2f})",
            flush=True,
        )
        return out

    with tansu(work, 0 if args.pin else None) as (bootstrap, version, pid):
        print(f"broker {version} on {bootstrap}", flush=True)
        wf = FETCH_SETTINGS[args.worker_fetch]
        batch = args.batch_max_events
        if not args.no_worker:  # first-use costs (imports, compiled rules, caches) unmeasured
            worker(
                BenchFileSource(str(warm_file)), work, archive=True, batch=batch, total=len(warm)
            )
        for partitions in args.partitions:
            topic = create_topic(bootstrap, partitions)
            tag = f"{partitions}p"
            measured(f"produce [{tag}]", produce, bootstrap, topic, lines, keys)

            # The per-message Python work of batches(), replayed on messages held in memory
            # (checked first: every form must yield the batches of the current one).
            held = capture(bootstrap, topic, partitions, total)
            expect = [list(split_current("s", m)) for m in held]
            for name in args.splits:
                if [list(SPLITS[name]("s", m)) for m in held] != expect:
                    raise SystemExit(f"split {name} gives other batches than the current form")
            timings: dict[str, list[float]] = {name: [] for name in args.splits}
            for name in [n for _ in range(max(args.repeat, 5)) for n in args.splits]:
                fn = SPLITS[name]
                started = time.perf_counter()
                for m in held:
                    for _batch in fn("s", m):
                        pass
                timings[name].append((time.perf_counter() - started) / total * 1e6)
            for name, us in timings.items():
                split_us[f"{name} [{tag}]"] = (
                    f"median {statistics.median(us):.3f} µs/event (min {min(us):.3f}, "
                    f"max {max(us):.3f}, {len(us)} runs)"
                )
                print(f"  split {name} [{tag}]: {split_us[f'{name} [{tag}]']}", flush=True)
            del held, expect
            gc.collect()

            for rep in range(args.repeat):
                print(f"[{tag}] repetition {rep + 1}/{args.repeat}", flush=True)
                for fetch in args.fetch:
                    extra = FETCH_SETTINGS[fetch]
                    name = f"ceiling {fetch} [{tag}]"
                    measured(name, ceiling, bootstrap, topic, partitions, total, extra)
                for split in args.read_splits:
                    name = f"batches() {split} [{tag}]"
                    profile = cProfile.Profile() if args.profile and rep == 0 else None
                    measured(name, read_only, bootstrap, topic, total, split, batch, wf, profile)
                    if profile is not None:
                        profiles.append((name, profile))
                if args.no_worker:
                    continue
                for archive in archives:
                    label = "archive" if archive else "no archive"
                    for split in args.worker_splits:
                        profile = cProfile.Profile() if args.profile and rep == 0 else None
                        name = f"worker kafka {split}, {label} [{tag}]"
                        source = kafka_worker_source(bootstrap, topic, split, wf)
                        result = measured(name, worker, source, work, archive=archive,
                                          batch=batch, total=total, profile=profile)  # fmt: skip
                        worker_runs.setdefault(name, []).append(result)
                        if profile is not None:
                            profiles.append((name, profile))
                    if not args.no_file and partitions == args.partitions[0]:
                        name = f"worker file, {label}"
                        source = BenchFileSource(str(events_file))
                        result = measured(name, worker, source, work, archive=archive,
                                          batch=batch, total=total)  # fmt: skip
                        worker_runs.setdefault(name, []).append(result)

    results = {
        "events": total,
        "input_mib": input_mib,
        "batch_max_events": args.batch_max_events,
        "broker": version,
        "machine": info,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": {
            name: {
                **summarize(seconds, total),
                "cpu_us_per_event_self": round(
                    statistics.median(c[0] for c in cpu[name]) / total * 1e6, 2
                ),
                "cpu_us_per_event_broker": round(
                    statistics.median(c[1] for c in cpu[name]) / total * 1e6, 2
                ),
            }
            for name, seconds in runs.items()
        },
        "stages": {name: _median_stages(r) for name, r in worker_runs.items()},
        "worker_runs": worker_runs,
        "split_us_per_event": split_us,
    }
    print_table(results)
    if args.profile:
        with args.profile.open("w") as out:
            for name, profile in profiles:
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
                out.write(f"==== {name}\n{text.getvalue()}\n")
        print(f"profiles: {args.profile}")
    if args.json:
        print(json.dumps(results, indent=2))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
