"""The SQLAlchemy Core store, dialect-neutral parts.

Bulk paths that differ per database (loading thousands of rows fast, telling
which events were new) are methods a dialect's subclass overrides; everything
else is plain Core with bound parameters.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from paymetrics.metrics.dynamic import metric_values
from paymetrics.metrics.payment_5m import KEY_COLUMNS, Partials
from paymetrics.metrics.sketch import grouped_quantiles
from paymetrics.metrics.windows import from_epoch_us, to_epoch_us
from paymetrics.normalize import WINDOW_SECONDS
from paymetrics.storage import migrate
from paymetrics.storage.base import (
    AppliedConfig,
    BatchCounts,
    CheckpointConflict,
    ConfigVersion,
    DeadLetters,
    PartitionState,
    Store,
    Transaction,
)
from paymetrics.storage.tables import (
    CUSTOMER_INDEX,
    CUSTOMER_INDEX_DEFINITION,
    aggregate_histograms,
    compliance_alerts,
    config_versions,
    dynamic_metrics,
    failed_items,
    ingest_batches,
    normalized_transactions,
    payment_metrics_5m,
    source_checkpoints,
)

if TYPE_CHECKING:
    from paymetrics.compliance import Alert, Compliance

__all__ = ["HISTORY_COLUMNS", "SqlStore", "SqlTransaction", "history_table"]

Clock = Callable[[], dt.datetime]
QUANTILES = (0.5, 0.95, 0.99)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


HISTORY_COLUMNS = (
    "event_id",
    "customer_id",
    "occurred_at",
    "event_type",
    "status",
    "amount_minor",
    "currency",
)
"""What `earlier_authorizations` selects, in `HISTORY_SCHEMA` order."""


def history_table(rows: Sequence[Sequence[Any]], *, text_times: bool = False) -> pa.Table:
    """Driver rows of an `earlier_authorizations` read (HISTORY_COLUMNS) as a
    `HISTORY_SCHEMA` table; with `text_times`, `occurred_at` is SQLite's UTC text."""
    # Imported here: the compliance package loads the configuration model.
    from paymetrics.compliance.base import HISTORY_SCHEMA

    columns = list(zip(*rows, strict=True)) if rows else [()] * len(HISTORY_SCHEMA)
    arrays = []
    for values, field in zip(columns, HISTORY_SCHEMA, strict=True):
        if text_times and pa.types.is_timestamp(field.type):
            text = pa.array(values, pa.string())
            arrays.append(text.cast(pa.timestamp("us")).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=HISTORY_SCHEMA)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert support for database dialect {conn.dialect.name!r}")


class SqlTransaction(Transaction, abc.ABC):
    def __init__(self, conn: sa.Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        #: The batch this transaction stores (set by `start_batch`): compliance reads
        #: exclude its events, which it judges from memory.
        self.batch_id: int | None = None

    def start_batch(
        self,
        source_id: str,
        partition: str,
        first: int,
        last: int,
        config_version: int | None = None,
    ) -> int:
        stmt = (
            ingest_batches.insert()
            .values(
                config_version=config_version,
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
        self.batch_id = int(self.conn.execute(stmt).scalar_one())
        return self.batch_id

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

    # -- metrics -----------------------------------------------------------------

    def apply_payment_metrics(self, partials: Partials) -> None:
        """Add the partials, then recompute percentiles of the rows whose sketch changed.

        The metric rows are upserted first: on a database with row locks that
        serializes concurrent writers of the same row before they read its sketch.
        """
        if not partials.rows.num_rows:
            return
        self._upsert_metric_rows(partials.rows)
        if not partials.buckets.num_rows:
            return
        self._upsert_buckets(partials.buckets)
        timed = partials.rows.filter(pc.is_valid(partials.rows["latency_max_ms"]))
        group, bucket, count = self._fetch_buckets(timed["window_start"], timed["dimensions"])
        quantiles = grouped_quantiles(group, bucket, count, timed.num_rows, QUANTILES)
        self._update_percentiles(timed.select(list(KEY_COLUMNS)), quantiles)

    @abc.abstractmethod
    def _upsert_metric_rows(self, rows: pa.Table) -> None:
        """Add KEY_COLUMNS + COUNT_COLUMNS + latency_max_ms rows to payment_metrics_5m."""

    @abc.abstractmethod
    def _upsert_buckets(self, buckets: pa.Table) -> None:
        """Add (window_start, dimensions, bucket, count) rows to the latency sketches."""

    @abc.abstractmethod
    def _fetch_buckets(
        self, window_start: pa.ChunkedArray, dimensions: pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """All stored buckets of the given sketches as (index of the sketch, bucket, count)."""

    @abc.abstractmethod
    def _update_percentiles(self, keys: pa.Table, quantiles: npt.NDArray[np.float64]) -> None:
        """Set p50/p95/p99 (capped at the row's exact maximum) of each keyed row."""

    def apply_dynamic_metrics(self, partials: pa.Table) -> None:
        if not partials.num_rows:
            return
        t = dynamic_metrics
        columns = [c.name for c in t.columns if c.name != "value"]
        rows = partials.select(columns).append_column("value", _initial_values(partials))
        self._upsert_dynamic_rows(_dynamic_upsert(self.conn), rows)

    def replace_dynamic_metrics(
        self, ranges: Sequence[tuple[str, dt.datetime, dt.datetime]], partials: pa.Table
    ) -> int:
        """Delete every row (any config version, any window) of each metric whose window
        starts in its [start, end), then store `partials`; returns the rows deleted."""
        t = dynamic_metrics
        deleted = 0
        for name, start, end in ranges:
            result = self.conn.execute(
                sa.delete(t).where(
                    t.c.metric_name == name, t.c.window_start >= start, t.c.window_start < end
                )
            )
            deleted += result.rowcount
        self.apply_dynamic_metrics(partials)
        return deleted

    def _upsert_dynamic_rows(self, stmt: Any, rows: pa.Table) -> None:
        """Run the upsert for each row (the stores override this with their bulk path)."""
        self.conn.execute(stmt, rows.to_pylist())

    # -- compliance --------------------------------------------------------------

    def apply_compliance(
        self,
        compliance: Compliance,
        events: pa.Table,
        *,
        source_id: str,
        partition: str,
        previous_watermark_us: int | None,
        watermark_us: int | None,
        config_version: int | None = None,
    ) -> int:
        return compliance.evaluate(
            events,
            self,
            source_id=source_id,
            partition=partition,
            previous_watermark_us=previous_watermark_us,
            watermark_us=watermark_us,
            config_version=config_version,
        )

    def earlier_authorizations(self, customers: pa.Array, start_us: int, end_us: int) -> pa.Table:
        t = normalized_transactions
        ids = customers.to_pylist()
        found: list[Any] = []
        for at in range(0, len(ids), 1000):  # bound the IN list
            stmt = sa.select(*(t.c[name] for name in HISTORY_COLUMNS)).where(
                t.c.customer_id.in_(ids[at : at + 1000]),
                t.c.event_type == "authorization",
                t.c.occurred_at >= from_epoch_us(start_us),
                t.c.occurred_at < from_epoch_us(end_us),
                t.c.batch_id != (self.batch_id or -1),
            )
            found.extend(self.conn.execute(stmt).all())
        return history_table(found)

    def add_histogram_buckets(self, buckets: pa.Table) -> None:
        """Config-defined histograms: counts add (rows in key order: one lock order)."""
        if not buckets.num_rows:
            return
        t = aggregate_histograms
        insert = _insert(self.conn, t)
        stmt = insert.on_conflict_do_update(
            index_elements=[c.name for c in t.primary_key.columns],
            set_={"count": t.c.count + insert.excluded["count"]},
        )
        self.conn.execute(stmt, buckets.select([c.name for c in t.columns]).to_pylist())

    def add_sketch_buckets(self, histogram: str, buckets: pa.Table) -> None:
        if not buckets.num_rows:
            return
        t = aggregate_histograms
        insert = _insert(self.conn, t)
        stmt = insert.on_conflict_do_update(
            index_elements=[c.name for c in t.primary_key.columns],
            set_={"count": t.c.count + insert.excluded["count"]},
        )
        rows = buckets.to_pylist()
        for row in rows:
            row["histogram"] = histogram
            row["window_seconds"] = WINDOW_SECONDS
        self.conn.execute(stmt, rows)

    def read_sketch_buckets(self, histogram: str, start_us: int, end_us: int) -> pa.Table:
        t = aggregate_histograms
        found = self.conn.execute(
            sa.select(t.c.window_start, t.c.dimensions, t.c.bucket, t.c["count"]).where(
                t.c.histogram == histogram,
                t.c.window_start >= from_epoch_us(start_us),
                t.c.window_start < from_epoch_us(end_us),
                t.c.window_seconds == WINDOW_SECONDS,
            )
        ).all()
        columns = list(zip(*found, strict=True)) if found else [(), (), (), ()]
        return pa.table(
            {
                "window_start": pa.array([to_epoch_us(w) for w in columns[0]], pa.int64()),
                "dimensions": pa.array(columns[1], pa.string()),
                "bucket": pa.array(columns[2], pa.int64()),
                "count": pa.array(columns[3], pa.int64()),
            }
        )

    def read_merchant_windows(self, start_us: int, end_us: int) -> pa.Table:
        t = payment_metrics_5m
        found = self.conn.execute(
            sa.select(
                t.c.window_start,
                t.c.merchant_id,
                sa.func.sum(t.c.authorizations),
                sa.func.sum(t.c.approved),
            )
            .where(
                t.c.window_start >= from_epoch_us(start_us),
                t.c.window_start < from_epoch_us(end_us),
            )
            .group_by(t.c.window_start, t.c.merchant_id)
        ).all()
        columns = list(zip(*found, strict=True)) if found else [(), (), (), ()]
        return pa.table(
            {
                "window_start": pa.array([to_epoch_us(w) for w in columns[0]], pa.int64()),
                "merchant_id": pa.array(columns[1], pa.string()),
                "authorizations": pa.array([int(v) for v in columns[2]], pa.int64()),
                "approved": pa.array([int(v) for v in columns[3]], pa.int64()),
            }
        )

    def insert_alerts(self, alerts: Sequence[Alert], config_version: int | None) -> int:
        if not alerts:
            return 0
        t = compliance_alerts
        stmt = (
            _insert(self.conn, t)
            .on_conflict_do_nothing(
                index_elements=[
                    "rule",
                    "subject_type",
                    "subject_id",
                    "period_start",
                    "period_seconds",
                ]
            )
            .returning(t.c.id)
        )
        now = self.clock()
        rows = [
            {
                "rule": a.rule,
                "severity": a.severity,
                "subject_type": a.subject_type,
                "subject_id": a.subject_id,
                "period_start": a.period_start,
                "period_seconds": a.period_seconds,
                "measured_value": a.measured_value,
                "threshold": a.threshold,
                "currency": a.currency,
                "evidence_event_ids": json.dumps(list(a.evidence_event_ids)),
                "evidence": json.dumps(a.evidence, sort_keys=True),
                "created_at": now,
                "config_version": config_version,
            }
            for a in sorted(alerts, key=lambda a: a.key)  # one lock order for all writers
        ]
        return len(self.conn.execute(stmt, rows).all())

    # -- checkpoint --------------------------------------------------------------

    def finish_batch(
        self,
        batch_id: int,
        source_id: str,
        previous: PartitionState | None,
        state: PartitionState,
        counts: BatchCounts,
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
        values = {
            "position": state.position,
            "byte_offset": state.byte_offset,
            "watermark": None if state.watermark_us is None else from_epoch_us(state.watermark_us),
            "messages": state.messages,
            "normalized": state.normalized,
            "duplicates": state.duplicates,
            "dead_lettered": state.dead_lettered,
            "updated_at": now,
        }
        if previous is None:
            stmt = _insert(self.conn, c).values(
                source_id=source_id, partition=state.partition, **values
            )
            result = self.conn.execute(stmt.on_conflict_do_nothing().returning(c.c.position))
        else:
            result = self.conn.execute(
                c.update()
                .where(
                    c.c.source_id == source_id,
                    c.c.partition == state.partition,
                    c.c.position == previous.position,
                )
                .values(**values)
                .returning(c.c.position)
            )
        # RETURNING, not rowcount: drivers disagree on rowcount after ON CONFLICT DO NOTHING.
        if len(result.all()) != 1:
            raise CheckpointConflict(
                f"partition {state.partition!r} of source {source_id!r} was advanced by another "
                "run while this one processed it; this run stopped without storing its batch"
            )


def _dynamic_upsert(conn: sa.Connection) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE of `dynamic_metrics`: partials add (min/max keep
    the extreme, NULL meaning none), and `value` is recomputed from the merged partials."""
    t = dynamic_metrics
    insert = _insert(conn, t)
    new = insert.excluded
    total = {c: t.c[c] + new[c] for c in ("count", "value_count")}
    numerator = sa.func.coalesce(t.c.numerator, 0) + sa.func.coalesce(new.numerator, 0)
    summed = sa.case(
        (t.c.sum.is_(None), new.sum),
        (new.sum.is_(None), t.c.sum),
        else_=t.c.sum + new.sum,
    )
    lowest = sa.case(
        (t.c.min.is_(None), new.min),
        (new.min.is_(None), t.c.min),
        (new.min < t.c.min, new.min),
        else_=t.c.min,
    )
    highest = sa.case(
        (t.c.max.is_(None), new.max),
        (new.max.is_(None), t.c.max),
        (new.max > t.c.max, new.max),
        else_=t.c.max,
    )
    return insert.on_conflict_do_update(
        index_elements=[c.name for c in t.primary_key.columns],
        set_={
            **total,
            "sum": summed,
            "min": lowest,
            "max": highest,
            "numerator": sa.case((t.c.aggregate == "ratio", numerator), else_=None),
            "value": _metric_value(t.c.aggregate, total, summed, lowest, highest, numerator),
        },
    )


def _metric_value(
    aggregate: Any, total: dict[str, Any], summed: Any, lowest: Any, highest: Any, numerator: Any
) -> Any:
    count = sa.cast(total["count"], sa.Float)
    return sa.case(
        (aggregate == "count", count),
        (aggregate == "sum", summed),
        (aggregate == "avg", summed / sa.func.nullif(sa.cast(total["value_count"], sa.Float), 0)),
        (aggregate == "min", lowest),
        (aggregate == "max", highest),
        (aggregate == "ratio", sa.cast(numerator, sa.Float) / sa.func.nullif(count, 0)),
        else_=None,
    )


def _initial_values(partials: pa.Table) -> pa.Array:
    """New rows' values from their own partials, per aggregate, vectorized."""
    aggregate = partials["aggregate"]
    values = pa.nulls(partials.num_rows, pa.float64())
    for name in pc.unique(aggregate).to_pylist():
        values = pc.if_else(pc.equal(aggregate, name), metric_values(name, partials), values)
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class SqlStore(Store):
    transaction_class: type[SqlTransaction]

    def __init__(self, engine: sa.Engine, clock: Clock = _utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.url_for_display = engine.url.render_as_string(hide_password=True)

    def prepare(self) -> None:
        migrate.upgrade(self.engine)

    def prepare_compliance(self) -> None:
        """The partial customer index (see `CUSTOMER_INDEX`): built once, the first time
        a per-customer rule is enabled."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {CUSTOMER_INDEX} {CUSTOMER_INDEX_DEFINITION}"
            )

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

    def newest_watermark(self) -> dt.datetime | None:
        """The newest event-time watermark of any source partition (None: nothing stored)."""
        c = source_checkpoints
        with self.engine.connect() as conn:
            newest: dt.datetime | None = conn.execute(
                sa.select(sa.func.max(c.c.watermark))
            ).scalar()
        if newest is not None and newest.tzinfo is None:  # SQLite's max() returns the text
            newest = newest.replace(tzinfo=dt.UTC)
        return newest

    def committed_batch(
        self, source_id: str, partition: str, first: int, last: int
    ) -> BatchCounts | None:
        b = ingest_batches
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(b.c.messages, b.c.normalized, b.c.duplicates, b.c.dead_lettered)
                .where(
                    b.c.source_id == source_id,
                    b.c.partition == partition,
                    b.c.first_position == first,
                    b.c.last_position == last,
                )
                .order_by(b.c.batch_id.desc())
                .limit(1)
            ).first()
        return None if row is None else BatchCounts(*row)

    def record_config(
        self, document: dict[str, Any], applied_by: str, origin: str
    ) -> AppliedConfig:
        from paymetrics.config.versions import canonical_json, content_hash, rule_versions

        digest = content_hash(document)
        now = self.clock()
        c = config_versions
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(c.c.version).where(c.c.content_hash == digest)
            ).scalar_one_or_none()
            version: int | None = found
            if found is None:
                version = conn.execute(
                    _insert(conn, c)
                    .values(
                        content_hash=digest,
                        document=canonical_json(document),
                        applied_at=now,
                        last_applied_at=now,
                        applied_by=applied_by[:1024],
                        origin=origin[:1024],
                    )
                    .on_conflict_do_nothing(index_elements=["content_hash"])
                    .returning(c.c.version)
                ).scalar_one_or_none()
                if version is None:  # another worker recorded it since the select
                    found = conn.execute(
                        sa.select(c.c.version).where(c.c.content_hash == digest)
                    ).scalar_one()
            if found is not None:
                version = found
                conn.execute(c.update().where(c.c.version == found).values(last_applied_at=now))
            history = [
                (row.version, json.loads(row.document))
                for row in conn.execute(sa.select(c.c.version, c.c.document).order_by(c.c.version))
            ]
        assert version is not None
        return AppliedConfig(version, found is None, rule_versions(document, history))

    def config_history(self) -> list[ConfigVersion]:
        c = config_versions
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c).order_by(c.c.version)).mappings().all()
        return [
            ConfigVersion(
                version=row["version"],
                content_hash=row["content_hash"],
                document=json.loads(row["document"]),
                applied_at=row["applied_at"],
                last_applied_at=row["last_applied_at"],
                applied_by=row["applied_by"],
                origin=row["origin"],
            )
            for row in rows
        ]

    def table_counts(self) -> dict[str, int]:
        tables = (normalized_transactions, failed_items, payment_metrics_5m, aggregate_histograms)
        with self.engine.connect() as conn:
            counts = {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in tables
            }
            windows = sa.select(sa.func.count(sa.distinct(payment_metrics_5m.c.window_start)))
            counts["windows"] = int(conn.execute(windows).scalar_one())
        return counts

    def close(self) -> None:
        self.engine.dispose()
