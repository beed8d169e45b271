"""The PostgreSQL store's fast paths, against SQLite and against a concurrent writer.

* Store level: `insert_events` masks and every table equal SQLite's for the same
  batches (duplicates inside a batch, across batches, a replayed batch; a latency
  sketch merged across three batches, rows without latency in later batches, a late
  event into an old window).
* Concurrency: a second connection stores the same event_id or creates the same
  metric row first. Waiting on it is made deterministic by watching the first
  connection's backend wait on a lock in `pg_stat_activity` before the second commits.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from paymetrics.decode import Rejects, decode
from paymetrics.metrics.payment_5m import aggregate, dimensions_key
from paymetrics.metrics.sketch import bucket_indices, quantiles_from_buckets
from paymetrics.normalize import normalize
from paymetrics.storage.base import (
    BatchCounts,
    PartitionState,
    Store,
    Transaction,
    TransientStoreError,
)
from paymetrics.storage.postgres import PostgresStore, PostgresTransaction, postgres_engine
from paymetrics.storage.sqlite import SQLiteStore, sqlite_engine

SOURCE = "test:store"
PARTITION = "p0"
LOCK_WAIT_TIMEOUT_SECONDS = 30.0


def event(
    event_id: str,
    occurred_at: str,
    *,
    merchant: str = "m_1",
    event_type: str = "authorization",
    status: str = "approved",
    amount: int = 100,
    method: str = "card",
    currency: str = "USD",
    latency: float | None = None,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "transaction_id": f"txn_{event_id}",
        "occurred_at": occurred_at,
        "merchant_id": merchant,
        "amount_minor": amount,
        "currency": currency,
        "status": status,
        "payment_method": method,
    }
    if latency is not None:
        e["latency_ms"] = latency
    return e


def normalized(events: list[dict[str, Any]], first_position: int = 1) -> pa.Table:
    """Events as the pipeline hands them to the store (decoded and normalized)."""
    messages = [json.dumps(e).encode() for e in events]
    rejects = Rejects()
    decoded = decode(messages, [len(m) for m in messages], np.zeros(len(messages), bool), rejects)
    assert not len(rejects), rejects.message
    positions = np.arange(first_position, first_position + len(messages), dtype=np.int64)
    return normalize(
        decoded.events, decoded.index, positions, np.zeros(len(messages), dtype=np.int64)
    )


@dataclass
class Feeder:
    """Stores batches into one store as the pipeline would, keeping the checkpoint chain."""

    store: Store
    partition: str = PARTITION
    previous: PartitionState | None = None
    position: int = 0
    masks: list[list[bool]] = field(default_factory=list)

    def store_batch(self, events: list[dict[str, Any]]) -> list[bool]:
        with self.store.transaction() as tx:
            mask = self.write(tx, events)
        return mask

    def write(self, tx: Transaction, events: list[dict[str, Any]]) -> list[bool]:
        table = normalized(events, self.position + 1)
        first, last = self.position + 1, self.position + len(events)
        batch_id = tx.start_batch(SOURCE, self.partition, first, last)
        new = tx.insert_events(table, batch_id)
        tx.apply_payment_metrics(aggregate(table.filter(pa.array(new))))
        state = PartitionState(self.partition, last, None, None)
        normalized_count = int(new.sum())
        counts = BatchCounts(len(events), normalized_count, len(events) - normalized_count, 0)
        tx.finish_batch(batch_id, SOURCE, self.previous, state, counts)
        self.previous, self.position = state, last
        self.masks.append([bool(v) for v in new])
        return self.masks[-1]


@pytest.fixture
def pg_url(postgres_schema: Callable[[str], str]) -> str:
    return postgres_schema("store")


@pytest.fixture
def stores(pg_url: str, tmp_db_url: str) -> Iterator[tuple[PostgresStore, SQLiteStore]]:
    pg = PostgresStore(postgres_engine(pg_url))
    lite = SQLiteStore(sqlite_engine(tmp_db_url))
    pg.prepare()
    lite.prepare()
    try:
        yield pg, lite
    finally:
        pg.close()
        lite.close()


def both(stores: tuple[PostgresStore, SQLiteStore]) -> tuple[Feeder, Feeder]:
    return Feeder(stores[0]), Feeder(stores[1])


def test_insert_events_masks_equal_sqlite(
    stores: tuple[PostgresStore, SQLiteStore],
    pg_url: str,
    tmp_db_url: str,
    dump_tables: Callable[..., dict[str, list[tuple[Any, ...]]]],
) -> None:
    t = "2025-03-01T10:00:00Z"
    batches = [
        [event("e-03", t), event("e-01", t), event("e-02", t)],
        # across batches: e-01 and e-03 are stored, e-04 and e-05 are new
        [event("e-04", t), event("e-01", t), event("e-05", t), event("e-03", t)],
        # inside a batch: e-07 twice (the store keeps the first), plus an old one
        [event("e-07", t, amount=7), event("e-02", t), event("e-07", t, amount=8)],
        # a replayed batch: nothing is new
        [event("e-03", t), event("e-01", t), event("e-02", t)],
        # all new again, unsorted ids of different lengths
        [event("z", t), event("e-10", t), event("a-1", t)],
    ]
    pg, lite = both(stores)
    for batch in batches:
        assert pg.store_batch(batch) == lite.store_batch(batch)
    assert pg.masks == [
        [True, True, True],
        [True, False, True, False],
        [True, False, True],
        [False, False, False],
        [True, True, True],
    ]
    assert dump_tables(pg_url) == dump_tables(tmp_db_url)


def latencies_in_bucket_order(values: list[float]) -> dict[int, int]:
    indices, counts = np.unique(bucket_indices(np.asarray(values)), return_counts=True)
    return dict(zip(indices.tolist(), counts.tolist(), strict=True))


def test_a_sketch_merges_across_three_batches_as_on_sqlite(
    stores: tuple[PostgresStore, SQLiteStore],
    pg_url: str,
    tmp_db_url: str,
    dump_tables: Callable[..., dict[str, list[tuple[Any, ...]]]],
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    w = "2025-03-01T10:0{}:00Z"  # one 5-minute window
    other = "2025-03-01T11:00:00Z"
    old = "2025-02-28T09:00:00Z"  # a late event's window, stored in batch 1
    key = {"merchant": "m_1", "method": "card", "currency": "USD"}
    b1 = [
        event("b1-1", w.format(1), latency=10.0, **key),
        event("b1-2", w.format(2), latency=10.05, **key),  # same bucket as 10.0
        event("b1-3", w.format(3), latency=250.0, status="declined", **key),
        event("b1-4", other, latency=5.0, merchant="m_2"),
        event("b1-5", old, latency=1.0, merchant="m_3"),
    ]
    b2 = [
        event("b2-1", w.format(1), latency=10.02, **key),  # an existing bucket grows
        event("b2-2", w.format(2), latency=42.0, **key),  # a new bucket
        event("b2-3", w.format(4), latency=0.0, **key),  # the zero bucket
        # m_2's row exists; this batch brings it no latency (a capture): p50 stays
        event("b2-4", other, merchant="m_2", event_type="capture"),
        event("b1-1", w.format(1), latency=999.0, **key),  # a duplicate: not counted
    ]
    b3 = [
        event("b3-1", w.format(3), latency=10.01, **key),
        event("b3-2", w.format(3), latency=42.1, status="error", **key),
        event("b3-3", w.format(4), latency=3000.0, **key),  # a new maximum
        event("b3-4", other, merchant="m_4", latency=7.0),  # a new row in a known window
        event("b3-5", old, merchant="m_3", latency=2.0),  # late again, into the old sketch
    ]
    pg, lite = both(stores)
    for batch in (b1, b2, b3):
        assert pg.store_batch(batch) == lite.store_batch(batch)
    assert dump_tables(pg_url) == dump_tables(tmp_db_url)

    # and the merged sketch is the sketch of every stored latency of the key
    latencies = [10.0, 10.05, 250.0, 10.02, 42.0, 0.0, 10.01, 42.1, 3000.0]
    dims = dimensions_key("m_1", "card", "USD")
    stored = query_rows(
        pg_url,
        "SELECT bucket, count FROM aggregate_histograms WHERE dimensions = :d",
        d=dims,
    )
    assert {r["bucket"]: r["count"] for r in stored} == latencies_in_bucket_order(latencies)
    row = query_rows(
        pg_url,
        "SELECT authorizations, approved, latency_p50_ms, latency_p95_ms, latency_p99_ms, "
        "latency_max_ms FROM payment_metrics_5m WHERE merchant_id = 'm_1'",
    )
    assert len(row) == 1
    buckets = latencies_in_bucket_order(latencies)
    expected = quantiles_from_buckets(
        np.asarray(list(buckets), dtype=np.int64),
        np.asarray(list(buckets.values()), dtype=np.int64),
        (0.5, 0.95, 0.99),
        maximum=3000.0,
    )
    got = row[0]
    assert (got["authorizations"], got["approved"], got["latency_max_ms"]) == (9, 7, 3000.0)
    assert [got["latency_p50_ms"], got["latency_p95_ms"], got["latency_p99_ms"]] == expected
    m2 = query_rows(
        pg_url,
        "SELECT captures, latency_p50_ms FROM payment_metrics_5m WHERE merchant_id = 'm_2'",
    )
    assert m2 == [{"captures": 1, "latency_p50_ms": pytest.approx(5.0, rel=0.01)}]


def test_many_batches_of_simulated_traffic_equal_sqlite(
    stores: tuple[PostgresStore, SQLiteStore],
    pg_url: str,
    tmp_db_url: str,
    dump_tables: Callable[..., dict[str, list[tuple[Any, ...]]]],
) -> None:
    """Small batches of random traffic: most rows and buckets already exist."""
    rng = np.random.default_rng(5)
    start = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    pg, lite = both(stores)
    ids = [f"ev-{i:05d}" for i in range(1200)]
    for _ in range(12):
        batch = []
        for i in rng.choice(len(ids), size=150, replace=False):
            when = start + dt.timedelta(seconds=int(rng.integers(0, 3 * 3600)))
            kind = str(rng.choice(["authorization", "authorization", "capture", "refund"]))
            batch.append(
                event(
                    ids[i],
                    when.isoformat().replace("+00:00", "Z"),
                    merchant=f"m_{rng.integers(0, 4)}",
                    method=str(rng.choice(["card", "wallet"])),
                    currency=str(rng.choice(["USD", "EUR"])),
                    event_type=kind,
                    status=str(rng.choice(["approved", "approved", "declined", "error"])),
                    latency=float(rng.lognormal(4, 1)) if kind == "authorization" else None,
                )
            )
        assert pg.store_batch(batch) == lite.store_batch(batch)
    assert dump_tables(pg_url) == dump_tables(tmp_db_url)


# -- a concurrent writer ---------------------------------------------------------------


@dataclass
class Outcome:
    mask: list[bool] | None = None
    error: BaseException | None = None


class Contender:
    """Runs one batch in a thread; `pid` is its backend once its transaction has begun."""

    def __init__(self, feeder: Feeder, events: list[dict[str, Any]]) -> None:
        self.feeder = feeder
        self.events = events
        self.outcome = Outcome()
        self.started = threading.Event()
        self.pid = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.feeder.store.transaction() as tx:
                assert isinstance(tx, PostgresTransaction)
                driver = tx.conn.connection.driver_connection
                assert isinstance(driver, psycopg.Connection)
                self.pid = driver.info.backend_pid
                self.started.set()
                self.outcome.mask = self.feeder.write(tx, self.events)
        except BaseException as error:  # handed to the test thread
            self.outcome.error = error
        finally:
            self.started.set()

    def start(self) -> None:
        self.thread.start()
        assert self.started.wait(LOCK_WAIT_TIMEOUT_SECONDS)

    def wait_until_blocked(self, watcher: sa.Engine) -> None:
        """Until the contender's backend waits on a lock (or it finished, which fails)."""
        deadline = time.monotonic() + LOCK_WAIT_TIMEOUT_SECONDS
        with watcher.connect() as conn:
            while time.monotonic() < deadline:
                assert self.thread.is_alive(), f"did not block: {self.outcome}"
                waiting = conn.execute(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": self.pid},
                ).scalar()
                if waiting == "Lock":
                    return
                time.sleep(0.01)
        raise AssertionError("the contender never waited on a lock")

    def join(self) -> Outcome:
        self.thread.join(LOCK_WAIT_TIMEOUT_SECONDS)
        assert not self.thread.is_alive()
        return self.outcome


@pytest.fixture
def two_stores(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore, sa.Engine]]:
    first = PostgresStore(postgres_engine(pg_url))
    second = PostgresStore(postgres_engine(pg_url))
    watcher = sa.create_engine(pg_url)
    first.prepare()
    try:
        yield first, second, watcher
    finally:
        first.close()
        second.close()
        watcher.dispose()


T = "2025-03-01T10:00:00Z"


def test_an_event_stored_concurrently_counts_as_a_duplicate(
    two_stores: tuple[PostgresStore, PostgresStore, sa.Engine],
) -> None:
    """The other writer commits e-2 while our COPY waits on it: our COPY fails, we look
    the ids up again and store the rest; e-2 is a duplicate, nothing is retried."""
    mine, theirs, watcher = two_stores
    other = Feeder(theirs, partition="p1")
    with theirs.transaction() as tx:
        other.write(tx, [event("e-2", T, latency=5.0)])
        contender = Contender(Feeder(mine), [event("e-1", T), event("e-2", T), event("e-3", T)])
        contender.start()
        contender.wait_until_blocked(watcher)
    outcome = contender.join()
    assert outcome.error is None
    assert outcome.mask == [True, False, True]


def test_an_event_stored_concurrently_during_the_lookup_is_a_transient_error(
    two_stores: tuple[PostgresStore, PostgresStore, sa.Engine],
) -> None:
    """e-1 is stored, so our COPY fails at once; the lookup cannot see the other writer's
    uncommitted e-2, whose commit then fails our second COPY: TransientStoreError."""
    mine, theirs, watcher = two_stores
    me = Feeder(mine)
    me.store_batch([event("e-1", T)])
    other = Feeder(theirs, partition="p1")
    with theirs.transaction() as tx:
        other.write(tx, [event("e-2", T)])
        contender = Contender(me, [event("e-1", T), event("e-2", T)])
        contender.start()
        contender.wait_until_blocked(watcher)
    outcome = contender.join()
    assert isinstance(outcome.error, TransientStoreError)
    assert isinstance(outcome.error.__cause__, psycopg.errors.UniqueViolation)


def test_a_metric_row_created_concurrently_is_a_transient_error(
    two_stores: tuple[PostgresStore, PostgresStore, sa.Engine],
) -> None:
    """Both writers create the same payment_metrics_5m row: the second fails, retryably."""
    mine, theirs, watcher = two_stores
    other = Feeder(theirs, partition="p1")
    with theirs.transaction() as tx:
        other.write(tx, [event("e-1", T, latency=5.0)])
        contender = Contender(Feeder(mine), [event("e-2", T, latency=7.0)])
        contender.start()
        contender.wait_until_blocked(watcher)
    outcome = contender.join()
    assert isinstance(outcome.error, TransientStoreError)
    assert isinstance(outcome.error.__cause__, psycopg.errors.UniqueViolation)


def test_a_locked_metric_row_is_merged_after_the_other_writer_commits(
    two_stores: tuple[PostgresStore, PostgresStore, sa.Engine],
    tmp_db_url: str,
    pg_url: str,
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    """Both writers add to an existing row and sketch: ours waits for their lock, then
    reads what they committed, so the sums and the sketch hold all three batches."""
    mine, theirs, watcher = two_stores
    first = [event("e-1", T, latency=5.0)]
    second = [event("e-2", T, latency=50.0, status="declined")]
    third = [event("e-3", T, latency=500.0)]
    me = Feeder(mine)
    me.store_batch(first)
    other = Feeder(theirs, partition="p1")
    with theirs.transaction() as tx:
        other.write(tx, second)
        contender = Contender(me, third)
        contender.start()
        contender.wait_until_blocked(watcher)
    outcome = contender.join()
    assert outcome.error is None, outcome.error

    lite = SQLiteStore(sqlite_engine(tmp_db_url))
    lite.prepare()
    try:
        feeder = Feeder(lite)
        for batch in (first, second, third):
            feeder.store_batch(batch)
    finally:
        lite.close()
    sql = (
        "SELECT authorizations, approved, declined, latency_p50_ms, latency_p95_ms, "
        "latency_max_ms FROM payment_metrics_5m"
    )
    assert query_rows(pg_url, sql) == query_rows(tmp_db_url, sql)
    assert query_rows(pg_url, sql)[0]["authorizations"] == 3
    buckets = "SELECT bucket, count FROM aggregate_histograms ORDER BY bucket"
    assert query_rows(pg_url, buckets) == query_rows(tmp_db_url, buckets)
