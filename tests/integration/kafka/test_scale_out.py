"""Scale-out: workers of one consumer group, one PostgreSQL schema, exactly once.

The same simulated events (invalid, duplicate and late ones included, keyed by merchant)
are published to 4-partition topics with a deterministic partitioner, so every topic
holds the same messages at the same offsets. Each run writes into its own schema:

* the reference: one `paymetrics run` alone, in its own group;
* a rebalance: worker A consumes alone; worker B joins the group mid-run, so partitions
  move away from A while A is consuming;
* a kill: workers A and B share the partitions; A is SIGKILLed after storing batches,
  while its partitions have messages left; B takes them over; A is started again (one
  more rebalance); all exit via `--until-idle`.

Each topic is published in parts, as the workers start, share the partitions and are
killed, so that every worker has messages to read after each move. Every table
must equal the reference's, minus what differs by design (batch ids and batch
boundaries, the source id, which names topic and group, wall-clock columns), and
`ingest_batches` must account for every message exactly once: each partition's batches
tile its offsets. A message redelivered to the next owner of its partition (its group
offset was not committed yet when the partition moved or its worker was killed) is
counted where it was stored and nowhere else: the worker that reads it again reports it
as a duplicate and does not store it.

The workers are synchronised by polling their logs ("assigned partitions [...]") and
the database, never by sleeping.

A redelivered batch that trails or straddles the stored checkpoint (whether a run has
one depends on where batch boundaries fall) must not be stored again:
`test_a_redelivery_behind_the_checkpoint_is_not_stored_again` pins that down in miniature,
and every run here checks that `ingest_batches` ranges tile each partition exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import cli_command, cli_env, dump_table, run_cli

from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.simulator import SimulatorConfig, generate
from paymetrics.sources.base import Checkpoint, RawBatch, Source
from paymetrics.sources.kafka import KafkaSource
from paymetrics.storage import open_store

pytestmark = pytest.mark.slow

CONFIG = SimulatorConfig(
    events=16_000, seed=0, rate_invalid=0.01, rate_duplicate=0.03, rate_late=0.03
)
PARTITIONS = 4
ALL = set(range(PARTITIONS))
#: Messages published at the start; then a trickle while a worker joins (so that the
#: others consume while their partitions move) up to TRICKLED; the rest later, so that
#: every worker has messages to read after each move (and none is idle for long).
STARTING, TRICKLED = CONFIG.events * 2 // 5, CONFIG.events * 3 // 5
TRICKLE = (100, 0.2)  # messages, seconds: 500/s
BATCH = 300
IDLE_SECONDS = 5  # > a first join or a rebalance (~1-2 s)
MAX_LATENESS = 3_600  # the simulator's late events are 1 min to 6 h late: some too late
FAST = "session.timeout.ms=2000&heartbeat.interval.ms=300"
TIMEOUT = 120  # generous: each wait below normally takes a second or two

#: Compared whole, minus what differs between runs by design.
SAME = {
    "normalized_transactions": ["batch_id"],
    "payment_metrics_5m": [],
    "aggregate_histograms": [],
    "dynamic_metrics": [],
    "failed_items": ["source_id"],  # the source id names the topic and the group
    "source_checkpoints": ["source_id"],
}
ASSIGNMENT = re.compile(r"(assigned|revoked) partitions \[([\d, ]*)\] of ")


# -- the stream ------------------------------------------------------------------------


def messages() -> list[tuple[bytes, bytes]]:
    """(key, value) of CONFIG's stream, keyed by merchant ("" for unparsable lines)."""
    out = []
    for chunk in generate(CONFIG):
        for line in chunk:
            try:
                key = str(json.loads(line).get("merchant_id", ""))
            except (ValueError, AttributeError):  # the simulator's invalid lines
                key = ""
            out.append((key.encode(), line))
    return out


class Publisher:
    """Publishes to one topic; the same messages land at the same offsets in every topic."""

    def __init__(self, broker: Any) -> None:
        self.topic = broker.create_topic(partitions=PARTITIONS)
        # consistent: CRC32 of the key, also for "" (consistent_random spreads those)
        self.producer = broker.producer(
            **{"linger.ms": 5, "partitioner": "consistent", "enable.idempotence": True}
        )
        self.sizes: Counter[str] = Counter()

    def publish(self, batch: list[tuple[bytes, bytes]]) -> None:
        failed: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                failed.append(str(error))
            else:
                self.sizes[str(message.partition())] += 1

        for key, value in batch:
            self.producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
            self.producer.poll(0)
        assert self.producer.flush(60) == 0
        assert not failed, failed[:3]


def run_args(topic: str, servers: str, group: str, url: str) -> list[str]:
    return [
        "run",
        "--source",
        f"kafka://{servers}/{topic}?group={group}&{FAST}",
        "--db",
        url,
        "--no-archive",
        "--until-idle",
        str(IDLE_SECONDS),
        "--batch-max-events",
        str(BATCH),
        "--max-lateness-seconds",
        str(MAX_LATENESS),
        "-q",
        "--json",
    ]


def batch_totals(url: str) -> dict[str, list[int]]:
    """Per partition: messages, normalized, duplicates, dead-lettered of its batches."""
    totals: dict[str, list[int]] = {}
    rows = dump_table(url, "ingest_batches", exclude=["batch_id", "source_id", "config_version"])
    for partition, _first, _last, *counts in rows:
        total = totals.setdefault(partition, [0, 0, 0, 0])
        for i, n in enumerate(counts):
            total[i] += n
    return totals


def comparable(url: str) -> dict[str, Any]:
    tables: dict[str, Any] = {t: dump_table(url, t, exclude=ex) for t, ex in SAME.items()}
    tables["ingest_batches (totals per partition)"] = batch_totals(url)
    return tables


def assert_tiles(url: str, sizes: Mapping[str, int]) -> None:
    """Each partition's batches cover its offsets 1..n, each offset once."""
    rows = dump_table(url, "ingest_batches", exclude=["batch_id", "source_id"])
    by_partition: dict[str, list[tuple[int, int, int]]] = {}
    for partition, first, last, messages_, *_ in rows:
        by_partition.setdefault(partition, []).append((first, last, messages_))
    assert sorted(by_partition) == sorted(sizes)
    for partition, batches in by_partition.items():
        batches.sort()
        expected = 1
        for first, last, count in batches:
            assert first == expected, (
                f"partition {partition}: batch {first}..{last} follows offset {expected - 1} "
                f"(stored twice or skipped); batches {[(f, la) for f, la, _ in batches]}"
            )
            assert count == last - first + 1, (partition, first, last, count)
            expected = last + 1
        assert expected - 1 == sizes[partition], (partition, expected - 1, sizes[partition])


@dataclass(frozen=True)
class Reference:
    lines: list[tuple[bytes, bytes]]
    sizes: dict[str, int]
    tables: dict[str, Any]


@pytest.fixture(scope="module")
def reference(
    kafka_broker: Any, postgres_schema: Callable[[str], str], tmp_path_factory: Any
) -> Reference:
    """The stream, and what one worker alone stores from it."""
    lines = messages()
    publisher = Publisher(kafka_broker)
    publisher.publish(lines)
    url = postgres_schema("alone")
    args = run_args(publisher.topic, kafka_broker.bootstrap_servers, "alone", url)
    result = run_cli(*args, cwd=tmp_path_factory.mktemp("alone"), timeout=TIMEOUT)
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout)["events_in"] == CONFIG.events
    sizes = dict(publisher.sizes)
    assert len(sizes) == PARTITIONS, sizes
    assert min(sizes.values()) > CONFIG.events // 8, sizes
    assert_tiles(url, sizes)
    tables = comparable(url)
    for name in ("normalized_transactions", "failed_items", "payment_metrics_5m"):
        assert tables[name], f"{name} is empty"
    reasons = Counter(row[2] for row in tables["failed_items"])
    assert reasons["too_late"], reasons
    assert len(reasons) > 2, reasons
    return Reference(lines, sizes, tables)


# -- workers ---------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    killed: bool = False

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def assignments(self) -> list[tuple[str, set[int]]]:
        """("assigned" | "revoked", partitions), in the order the worker logged them."""
        return [
            (kind, {int(p) for p in listed.split(",") if p.strip()})
            for kind, listed in ASSIGNMENT.findall(self.log())
        ]

    def holding(self) -> set[int]:
        held: set[int] = set()
        for kind, partitions in self.assignments():
            held = held | partitions if kind == "assigned" else held - partitions
        return held

    def ever_held(self) -> set[int]:
        return set().union(*(p for kind, p in self.assignments() if kind == "assigned"))

    def describe(self) -> str:
        return f"worker {self.name} (exit {self.process.poll()}):\n{self.log()[-3000:]}"


class Cluster:
    """Workers of one group on one topic, writing into one schema."""

    def __init__(self, broker: Any, reference: Reference, url: str, group: str, workdir: Path):
        self.reference, self.url, self.workdir = reference, url, workdir
        self.publisher = Publisher(broker)
        self.args = run_args(self.publisher.topic, broker.bootstrap_servers, group, url)
        self.workers: list[Worker] = []
        self.engine = sa.create_engine(url)
        self.published = 0
        self.trickled = 0.0

    def publish(self, until: int) -> None:
        """Publish the stream up to message `until` (from where it was)."""
        lines = self.reference.lines
        self.publisher.publish(lines[self.published : until])
        self.published = max(self.published, until)
        if self.published == len(lines):
            assert dict(self.publisher.sizes) == self.reference.sizes, "not the same offsets"

    def trickle(self, until: int) -> None:
        """Publish a few more messages every TRICKLE seconds, up to message `until`."""
        count, every = TRICKLE
        if self.published < until and time.monotonic() - self.trickled >= every:
            self.publish(min(self.published + count, until))
            self.trickled = time.monotonic()

    def start(self, name: str) -> Worker:
        out, err = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                cli_command(*self.args),
                cwd=self.workdir,
                env=cli_env(),
                stdout=stdout,
                stderr=stderr,
            )
        worker = Worker(name, process, out, err)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGKILL)
        worker.killed = True
        assert worker.process.wait(timeout=TIMEOUT) == -signal.SIGKILL

    def stored(self) -> dict[int, int]:
        """Messages stored per partition (the checkpoints' counters)."""
        with self.engine.connect() as conn:
            try:
                rows = conn.execute(sa.text('SELECT "partition", messages FROM source_checkpoints'))
            except sa.exc.ProgrammingError:  # no table yet
                return {}
            return {int(p): n for p, n in rows}

    def wait(
        self,
        what: str,
        condition: Callable[[], bool],
        may_finish: tuple[Worker, ...] = (),
        trickle_until: int = 0,
    ) -> None:
        """Poll `condition` (trickling messages meanwhile, up to `trickle_until`); a worker
        that exits meanwhile (unless it `may_finish`, with exit 0, by `--until-idle`) fails
        the test at once."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            self.trickle(trickle_until)
            for worker in self.workers:
                code = worker.process.poll()
                finished = worker in may_finish and code == 0
                if code is not None and not worker.killed and not finished:
                    raise AssertionError(f"while waiting for {what}: {worker.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; stored {self.stored()}\n"
                    + "\n".join(w.describe() for w in self.workers)
                )
            time.sleep(0.02)

    def wait_shared(self, a: Worker, b: Worker) -> None:
        def shared() -> bool:
            held = a.holding(), b.holding()
            return all(held) and held[0].isdisjoint(held[1]) and held[0] | held[1] == ALL

        self.wait(f"{a.name} and {b.name} to share the partitions", shared, trickle_until=TRICKLED)

    def finish(self) -> list[dict[str, Any]]:
        """Wait for every worker not killed to exit 0; their summaries."""
        summaries = []
        for worker in self.workers:
            if worker.killed:
                continue
            try:
                code = worker.process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"did not exit: {worker.describe()}") from None
            assert code == 0, worker.describe()
            summaries.append(json.loads(worker.out.read_text()))
        return summaries

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        self.engine.dispose()

    def assert_same_as_alone(self, summaries: list[dict[str, Any]]) -> None:
        expected, got = self.reference.tables, comparable(self.url)
        assert stored_behind_the_checkpoint(self.url) == []
        for name, rows in expected.items():
            if got[name] == rows:
                continue
            if isinstance(rows, dict):
                raise AssertionError(f"{name}: {got[name]} != {rows} (one worker alone)")
            extra = Counter(got[name]) - Counter(rows)
            missing = Counter(rows) - Counter(got[name])
            raise AssertionError(
                f"{name} differs from one worker alone: {len(got[name])} vs {len(rows)} rows; "
                f"unexpected {list(extra)[:3]}; missing {list(missing)[:3]}"
            )
        assert_tiles(self.url, self.reference.sizes)
        with self.engine.connect() as conn:  # each event's batch holds its offset
            strays = conn.execute(
                sa.text(
                    "SELECT count(*) FROM normalized_transactions n JOIN ingest_batches b "
                    "USING (batch_id) WHERE n.source_position NOT BETWEEN b.first_position "
                    "AND b.last_position"
                )
            ).scalar_one()
        assert strays == 0
        # What the workers report: each message they read once, and a message read again
        # after another worker stored it as a duplicate (a killed worker reports nothing).
        read = sum(s["events_in"] for s in summaries)
        outcomes = sum(s["normalized"] + s["duplicates"] + s["dead_lettered"] for s in summaries)
        assert outcomes == read
        if not any(w.killed for w in self.workers):
            totals = expected["ingest_batches (totals per partition)"].values()
            normalized, duplicates, dead = (sum(t[i] for t in totals) for i in (1, 2, 3))
            again = read - CONFIG.events
            assert again >= 0
            assert sum(s["normalized"] for s in summaries) == normalized
            assert sum(s["duplicates"] for s in summaries) == duplicates + again
            assert sum(s["dead_lettered"] for s in summaries) == dead


def stored_behind_the_checkpoint(url: str) -> list[tuple[str, int, int]]:
    """Batches whose range overlaps another's: a redelivery stored again."""
    rows = dump_table(url, "ingest_batches", exclude=["batch_id", "source_id"])
    out: list[tuple[str, int, int]] = []
    reached: dict[str, int] = {}
    for partition, first, last, *_ in rows:  # sorted by partition, first position
        if first <= reached.get(partition, 0):
            out.append((partition, first, last))
        reached[partition] = max(last, reached.get(partition, 0))
    return out


@pytest.fixture
def cluster(
    kafka_broker: Any,
    reference: Reference,
    postgres_schema: Callable[[str], str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Cluster]:
    url = postgres_schema("group")
    store = open_store(url)  # the schema first: the workers race on partitions, not on it
    try:
        store.prepare()
    finally:
        store.close()
    group = re.sub(r"\W", "-", request.node.name)[:60]
    made = Cluster(kafka_broker, reference, url, group, tmp_path)
    try:
        yield made
    finally:
        made.close()


# -- the tests -------------------------------------------------------------------------


def test_a_worker_joining_mid_run_gives_the_tables_of_one_worker(cluster: Cluster) -> None:
    cluster.publish(STARTING)
    a = cluster.start("a")
    cluster.wait("A to take all partitions", lambda: a.holding() == ALL)
    cluster.wait("A to store batches", lambda: sum(cluster.stored().values()) >= 2 * BATCH)
    b = cluster.start("b")
    cluster.wait_shared(a, b)  # A held all four: it holds fewer once assigned again
    cluster.publish(CONFIG.events)  # messages on every partition, after the move
    summaries = cluster.finish()
    assert len(summaries) == 2
    assert a.ever_held() == ALL
    assert b.ever_held()
    assert [s["events_in"] > 0 for s in summaries] == [True, True]
    cluster.assert_same_as_alone(summaries)


def test_a_worker_killed_mid_run_and_restarted_gives_the_tables_of_one_worker(
    cluster: Cluster,
) -> None:
    cluster.publish(STARTING)
    a = cluster.start("a")
    # B only once A recorded the configuration: two workers starting together can race
    # on it (see test_two_workers_starting_together_record_one_config_version).
    cluster.wait("A to record its configuration", lambda: "config version" in a.log())
    b = cluster.start("b")
    cluster.wait_shared(a, b)
    cluster.publish(CONFIG.events * 17 // 20)  # new messages on A's partitions too
    mine = a.holding()
    at_share = cluster.stored()
    # A partition's previous owner may commit one batch (<= BATCH) after it moved.
    cluster.wait(
        "A to store a batch of its partitions",
        lambda: any(cluster.stored().get(p, 0) > at_share.get(p, 0) + BATCH for p in mine),
    )
    cluster.kill(a)
    stored = cluster.stored()
    published = cluster.publisher.sizes
    left = {p: published[str(p)] - stored.get(p, 0) for p in mine}
    assert sum(left.values()) > 0, f"A's partitions were done when it was killed: {left}"
    # B reads on while A's session times out
    cluster.wait(
        "B to take over A's partitions", lambda: b.holding() == ALL, trickle_until=CONFIG.events
    )
    cluster.publish(CONFIG.events)
    again = cluster.start("a-again")
    # B may have read everything and left by the time A is back: then A takes them all.
    cluster.wait("A, started again, to be assigned partitions", again.holding, may_finish=(b,))
    summaries = cluster.finish()
    assert len(summaries) == 2
    cluster.assert_same_as_alone(summaries)


# -- what the tests above found --------------------------------------------------------


class _Consumer:
    """What `KafkaSource._on_assign` uses of a confluent-kafka consumer."""

    def __init__(self, committed: dict[int, int]) -> None:
        self.offsets = committed
        self.assigned: list[Any] = []
        self.asked: list[int] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        self.asked += [tp.partition for tp in partitions]
        return [
            TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001))
            for tp in partitions
        ]

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions


def test_an_assigned_partition_starts_past_what_another_worker_stored() -> None:
    """A worker's checkpoints are as old as its start (or its last batch of a partition);
    when a partition comes to it, the group offset that another worker committed after
    storing batches is newer. (Before the fix it re-read from its own old checkpoint:
    thousands of messages, each judged again; see the scale-out tests.)"""
    from confluent_kafka import TopicPartition

    consumer = _Consumer({0: 250, 1: 200, 3: 40})
    source = KafkaSource("//h:9092/t?group=g", consumer_factory=lambda _: consumer)
    # 0: another worker stored 101..250; 1: this worker's batch up to 300 is stored, its
    # group offset not committed yet; 2: nothing committed; 3: no checkpoint of ours.
    source.open({p: Checkpoint(p, n) for p, n in {"0": 100, "1": 300, "2": 70}.items()})
    source._on_assign(consumer, [TopicPartition("t", p) for p in range(4)])
    assert {tp.partition: tp.offset for tp in consumer.assigned} == {
        0: 250,
        1: 300,
        2: 70,
        3: -1001,  # OFFSET_INVALID: librdkafka starts at the group offset (else earliest)
    }
    assert sorted(consumer.asked) == [0, 1, 2]


BASE = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


class _Redelivering(Source):
    """One partition's messages `start`..`stop` in batches of `size` (positions 1-based)."""

    source_id = "test:redelivery"
    rebalancing = True

    def __init__(self, lines: list[bytes], start: int, stop: int, size: int) -> None:
        self.lines, self.start, self.stop, self.size = lines, start, stop, size
        self.before_first: Callable[[], None] = lambda: None

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        self.before_first()
        for first in range(self.start, self.stop, self.size):
            positions = list(range(first + 1, min(first + self.size, self.stop) + 1))
            lines = self.lines[first : positions[-1]]
            yield RawBatch(self.source_id, "0", lines, positions, Checkpoint("0", positions[-1]))


def _event(n: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{n}",
            "event_type": "authorization",
            "transaction_id": f"t{n}",
            "occurred_at": (BASE + dt.timedelta(minutes=n)).isoformat(),
            "merchant_id": f"m{n % 3}",
            "amount_minor": 100 + n,
            "currency": "EUR",
            "status": "approved",
            "payment_method": "card",
        }
    ).encode()


def _run(url: str, source: Source) -> None:
    store = open_store(url)
    try:
        store.prepare()
        options = PipelineOptions(max_lateness_seconds=3_600)
        Pipeline(store, None, options).run(source)
    finally:
        store.close()


def test_a_redelivery_behind_the_checkpoint_is_not_stored_again(tmp_path: Path) -> None:
    """The Kafka failure in miniature: another worker stored 1..100 and committed less to
    the group (its last batch was in flight when the partition moved, or it was killed
    before `ack`); the next owner reads from 0 in batches of 30 (other boundaries)."""
    lines = [_event(n) for n in range(1, 201)]
    alone = f"sqlite:///{tmp_path / 'alone.db'}"
    _run(alone, _Redelivering(lines, 0, 200, 50))
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    second = _Redelivering(lines, 0, 200, 30)
    second.before_first = lambda: _run(shared, _Redelivering(lines, 0, 100, 50))
    _run(shared, second)

    assert_tiles(shared, {"0": 200})  # before the fix: 31..60, 61..90, 91..120 stored again
    for table in ("normalized_transactions", "failed_items", "payment_metrics_5m"):
        exclude = ["batch_id"] if table == "normalized_transactions" else []
        assert dump_table(shared, table, exclude=exclude) == dump_table(
            alone, table, exclude=exclude
        ), table
    assert batch_totals(shared) == batch_totals(alone)


def test_two_workers_starting_together_record_one_config_version(
    postgres_schema: Callable[[str], str],
) -> None:
    """Found when the kill test started both workers at once: one exited 1. Here both
    have read "no such version" before either inserts (a barrier holds the inserts)."""
    url = postgres_schema("config")
    stores = [open_store(url) for _ in range(2)]
    try:
        stores[0].prepare()
        barrier = threading.Barrier(2, timeout=30)

        def hold(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO CONFIG_VERSIONS"):
                barrier.wait()

        for store in stores:
            sa.event.listen(store.engine, "before_cursor_execute", hold)  # type: ignore[attr-defined]
        document = {"metrics": {}, "max_lateness_seconds": 60}
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(s.record_config, document, f"worker {i}", "test")
                for i, s in enumerate(stores)
            ]
            applied = [run.result() for run in runs]
    finally:
        for store in stores:
            store.close()
    assert sorted((a.version, a.new) for a in applied) == [(1, False), (1, True)]
