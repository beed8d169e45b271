"""The SQLAlchemy Core store, dialect-neutral parts.

Bulk paths that differ per database (loading thousands of rows fast, telling
which events were new) are methods a dialect's subclass overrides; everything
else is plain Core with bound parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from paymetrics.metrics.payment_5m import COUNT_COLUMNS, KEY_COLUMNS, LATENCY_HISTOGRAM, Partials
from paymetrics.metrics.sketch import quantiles_from_buckets
from paymetrics.metrics.windows import from_epoch_us, to_epoch_us
from paymetrics.normalize import WINDOW_SECONDS
from paymetrics.storage import migrate
from paymetrics.storage.base import (
    BatchCounts,
    DeadLetters,
    PartitionState,
    Store,
    Transaction,
)
from paymetrics.storage.tables import (
    aggregate_histograms,
    failed_items,
    ingest_batches,
    payment_metrics_5m,
    source_checkpoints,
)

__all__ = ["SqlStore", "SqlTransaction"]

Clock = Callable[[], dt.datetime]
QUANTILES = (0.5, 0.95, 0.99)
_CHUNK = 400


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert support for database dialect {conn.dialect.name!r}")


def _greatest(conn: sa.Connection, a: Any, b: Any) -> Any:
    """Larger of two nullable values, ignoring NULL (as PostgreSQL's GREATEST does)."""
    if conn.dialect.name == "postgresql":
        return sa.func.greatest(a, b)
    return sa.func.coalesce(sa.func.max(a, b), a, b)


def _least(conn: sa.Connection, a: Any, b: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.func.least(a, b)
    return sa.func.coalesce(sa.func.min(a, b), a, b)


class SqlTransaction(Transaction):
    def __init__(self, conn: sa.Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock

    def start_batch(self, source_id: str, partition: str, first: int, last: int) -> int:
        stmt = (
            ingest_batches.insert()
            .values(
                source_id=source_id,
                partition=partition,
                first_position=first,
                last_position=last,
                messages=0,
                normalized=0,
                duplicates=0,
                dead_lettered=0,
                committed_at=self.clock(),
            )
            .returning(ingest_batches.c.batch_id)
        )
        return int(self.conn.execute(stmt).scalar_one())

    def add_dead_letters(self, source_id: str, partition: str, rows: DeadLetters) -> None:
        if not len(rows):
            return
        now = self.clock()
        stmt = _insert(self.conn, failed_items).on_conflict_do_nothing(
            index_elements=["source_id", "partition", "position"]
        )
        self.conn.execute(
            stmt,
            [
                {
                    "source_id": source_id,
                    "partition": partition,
                    "position": position,
                    "reason": reason,
                    "message": message,
                    "event_id": event_id,
                    "payload": payload,
                    "first_seen_at": now,
                }
                for position, reason, message, event_id, payload in zip(
                    rows.positions,
                    rows.reasons,
                    rows.messages,
                    rows.event_ids,
                    rows.payloads,
                    strict=True,
                )
            ],
        )

    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        raise NotImplementedError  # pragma: no cover - each dialect has its bulk path

    # -- metrics -----------------------------------------------------------------

    def apply_payment_metrics(self, partials: Partials) -> None:
        if not partials.rows.num_rows:
            return
        self._upsert_metric_rows(partials.rows)
        if partials.buckets.num_rows:
            self._upsert_buckets(partials.buckets)
            timed = partials.rows.filter(partials.rows["latency_max_ms"].is_valid())
            self._refresh_percentiles(timed)

    def _upsert_metric_rows(self, rows: pa.Table) -> None:
        t = payment_metrics_5m
        stmt = _insert(self.conn, t)
        ex = stmt.excluded
        assignments: dict[str, Any] = {name: t.c[name] + ex[name] for name in COUNT_COLUMNS}
        approved = t.c.approved + ex.approved
        auths = t.c.authorizations + ex.authorizations
        assignments["approval_rate"] = sa.case(
            (auths > 0, sa.cast(approved, sa.Float) / auths), else_=None
        )
        assignments["latency_max_ms"] = _greatest(self.conn, t.c.latency_max_ms, ex.latency_max_ms)
        stmt = stmt.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=assignments)
        params = []
        for row in rows.drop_columns(["dimensions"]).to_pylist():
            auth = row["authorizations"]
            row["approval_rate"] = row["approved"] / auth if auth else None
            params.append(row)
        self.conn.execute(stmt, params)

    def _upsert_buckets(self, buckets: pa.Table) -> None:
        h = aggregate_histograms
        stmt = _insert(self.conn, h)
        stmt = stmt.on_conflict_do_update(
            index_elements=["histogram", "window_start", "window_seconds", "dimensions", "bucket"],
            set_={"count": h.c.count + stmt.excluded["count"]},
        )
        params = [
            {
                "histogram": LATENCY_HISTOGRAM,
                "window_seconds": WINDOW_SECONDS,
                **row,
            }
            for row in buckets.to_pylist()
        ]
        self.conn.execute(stmt, params)

    def _refresh_percentiles(self, rows: pa.Table) -> None:
        """Recompute p50/p95/p99 of the touched rows from their merged sketches."""
        h = aggregate_histograms
        keys = list(
            zip(
                rows["window_start"].to_pylist(),
                rows["dimensions"].to_pylist(),
                strict=True,
            )
        )
        found: dict[tuple[int, str], tuple[list[int], list[int]]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = sa.select(h.c.window_start, h.c.dimensions, h.c.bucket, h.c.count).where(
                h.c.histogram == LATENCY_HISTOGRAM,
                h.c.window_seconds == WINDOW_SECONDS,
                sa.tuple_(h.c.window_start, h.c.dimensions).in_(chunk),
            )
            for window_start, dims, bucket, count in self.conn.execute(query):
                entry = found.setdefault((to_epoch_us(window_start), dims), ([], []))
                entry[0].append(bucket)
                entry[1].append(count)
        t = payment_metrics_5m
        update = (
            t.update()
            .where(*(t.c[k] == sa.bindparam(f"k_{k}") for k in KEY_COLUMNS))
            .values(
                latency_p50_ms=_least(
                    self.conn, sa.bindparam("p50", type_=sa.Float), t.c.latency_max_ms
                ),
                latency_p95_ms=_least(
                    self.conn, sa.bindparam("p95", type_=sa.Float), t.c.latency_max_ms
                ),
                latency_p99_ms=_least(
                    self.conn, sa.bindparam("p99", type_=sa.Float), t.c.latency_max_ms
                ),
            )
        )
        params = []
        for row in rows.select([*KEY_COLUMNS, "dimensions"]).to_pylist():
            buckets, counts = found[(to_epoch_us(row["window_start"]), row["dimensions"])]
            p50, p95, p99 = quantiles_from_buckets(
                np.asarray(buckets, dtype=np.int64), np.asarray(counts, dtype=np.int64), QUANTILES
            )
            params.append(
                {**{f"k_{k}": row[k] for k in KEY_COLUMNS}, "p50": p50, "p95": p95, "p99": p99}
            )
        self.conn.execute(update, params)

    # -- checkpoint --------------------------------------------------------------

    def finish_batch(
        self, batch_id: int, source_id: str, state: PartitionState, counts: BatchCounts
    ) -> None:
        now = self.clock()
        self.conn.execute(
            ingest_batches.update()
            .where(ingest_batches.c.batch_id == batch_id)
            .values(
                messages=counts.messages,
                normalized=counts.normalized,
                duplicates=counts.duplicates,
                dead_lettered=counts.dead_lettered,
                committed_at=now,
            )
        )
        c = source_checkpoints
        stmt = _insert(self.conn, c).values(
            source_id=source_id,
            partition=state.partition,
            position=state.position,
            byte_offset=state.byte_offset,
            watermark=None if state.watermark_us is None else from_epoch_us(state.watermark_us),
            messages=state.messages,
            normalized=state.normalized,
            duplicates=state.duplicates,
            dead_lettered=state.dead_lettered,
            updated_at=now,
        )
        ex = stmt.excluded
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["source_id", "partition"],
                set_={
                    "position": ex.position,
                    "byte_offset": ex.byte_offset,
                    "watermark": ex.watermark,
                    "messages": ex.messages,
                    "normalized": ex.normalized,
                    "duplicates": ex.duplicates,
                    "dead_lettered": ex.dead_lettered,
                    "updated_at": ex.updated_at,
                },
            )
        )


class SqlStore(Store):
    transaction_class: type[SqlTransaction] = SqlTransaction

    def __init__(self, engine: sa.Engine, clock: Clock = _utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.url_for_display = engine.url.render_as_string(hide_password=True)

    def prepare(self) -> None:
        migrate.upgrade(self.engine)

    def load_state(self, source_id: str) -> dict[str, PartitionState]:
        c = source_checkpoints
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c).where(c.c.source_id == source_id)).mappings()
            return {
                row["partition"]: PartitionState(
                    partition=row["partition"],
                    position=row["position"],
                    byte_offset=row["byte_offset"],
                    watermark_us=None
                    if row["watermark"] is None
                    else to_epoch_us(row["watermark"]),
                    messages=row["messages"],
                    normalized=row["normalized"],
                    duplicates=row["duplicates"],
                    dead_lettered=row["dead_lettered"],
                )
                for row in rows
            }

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.engine.begin() as conn:
            yield self.transaction_class(conn, self.clock)

    def close(self) -> None:
        self.engine.dispose()


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
