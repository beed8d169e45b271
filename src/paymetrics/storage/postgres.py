"""The production store: PostgreSQL through psycopg 3.

Bulk data travels in PostgreSQL's binary formats, built column-wise from Arrow
(`paymetrics.storage.postgres_binary`): rows by `COPY … (FORMAT binary)` straight
into the tables, keys as binary array parameters. There are no staging tables,
and no row is written twice in a batch.

Events: COPY all of the batch's rows (sorted by event_id) inside a savepoint. If
one was stored before, the COPY fails with a unique violation; then we roll back
to the savepoint, look up which event_ids exist, and COPY only the new rows.

Payment metrics: lock the stored rows of the batch's keys (`SELECT … FOR UPDATE`,
in key order), read their latency sketches, merge counts, maxima and buckets in
NumPy, compute the percentiles, and write each touched row once: new rows by COPY,
stored ones by one `UPDATE … FROM unnest(…)`; the same for the sketch buckets.
Every writer of a sketch holds its metric row's lock first (the `INSERT … ON
CONFLICT` upsert of the earlier implementation did too), so what we read stays
true until we commit.

A concurrent writer that creates one of our new metric rows first makes our COPY
fail with a unique violation (for events, the fallback above absorbs it, unless
it happens again during the fallback's own COPY). That, deadlocks, serialization
failures and lost connections surface as `TransientStoreError`: the whole batch
is retried, and then sees the other writer's rows.

Joins against the batch's keys are index probes (nested loops: hash and merge
joins are off inside our transactions, where stale statistics could make them
scan whole tables), so a batch costs the same whatever the size of the tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from paymetrics.metrics.payment_5m import COUNT_COLUMNS, KEY_COLUMNS, LATENCY_HISTOGRAM, Partials
from paymetrics.metrics.sketch import grouped_quantiles
from paymetrics.metrics.windows import from_epoch_us
from paymetrics.normalize import WINDOW_SECONDS
from paymetrics.storage.base import BatchCounts, PartitionState, TransientStoreError
from paymetrics.storage.postgres_binary import (
    BOOL,
    FLOAT8,
    INT4,
    INT8,
    TEXT,
    TIMESTAMPTZ,
    ArrayParam,
    PgType,
    array_param,
    copy_payload,
    copy_rows,
    register_dumpers,
)
from paymetrics.storage.sql import (
    HISTORY_COLUMNS,
    QUANTILES,
    SqlStore,
    SqlTransaction,
    history_table,
)
from paymetrics.storage.tables import (
    CUSTOMER_INDEX,
    CUSTOMER_INDEX_DEFINITION_POSTGRES,
    UTCDateTime,
    aggregate_histograms,
    normalized_transactions,
    payment_metrics_5m,
)

__all__ = ["PostgresStore", "PostgresTransaction", "postgres_engine"]


def _pg_type(column: sa.Column[Any]) -> PgType:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return TIMESTAMPTZ
    if isinstance(kind, sa.Boolean):
        return BOOL
    if isinstance(kind, sa.BigInteger):
        return INT8
    if isinstance(kind, sa.Integer):
        return INT4
    if isinstance(kind, sa.Float):
        return FLOAT8
    if isinstance(kind, sa.String):
        return TEXT
    raise TypeError(f"no binary type for column {column.name} ({kind})")


_TYPES = {
    t.name: {c.name: _pg_type(c) for c in t.columns}
    for t in (normalized_transactions, payment_metrics_5m, aggregate_histograms)
}
_EVENT_COLUMNS = tuple(_TYPES["normalized_transactions"])
_PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
_FLOATS = ("approval_rate", *_PERCENTILES, "latency_max_ms")  # nullable; NaN stands for NULL
_UPDATABLE = (*COUNT_COLUMNS, *_FLOATS)
_SKETCH_KEY = ("histogram", "window_start", "window_seconds", "dimensions")
_BUCKET_ORDER = ("window_start", "dimensions", "bucket")  # the primary key's, after constants
_SAVEPOINT = "paymetrics_events"

# No JIT for statements that run in milliseconds; no hash or merge joins (see above).
_SETTINGS = "SET LOCAL jit = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
_EXISTING_EVENTS = (
    "SELECT k.i - 1 FROM unnest(%b) WITH ORDINALITY AS k(event_id, i) "
    "JOIN normalized_transactions n ON n.event_id = k.event_id"
)
_KEY_MATCH = " AND ".join(f"m.{k} = k.{k}" for k in KEY_COLUMNS)
_LOCK_METRICS = (
    "SELECT k.i - 1, "
    + ", ".join(f"m.{c}" for c in COUNT_COLUMNS)
    + ", "
    + ", ".join(f"coalesce(m.{c}, 'NaN')" for c in (*_PERCENTILES, "latency_max_ms"))
    + f" FROM unnest(%b, %b, %b, %b) WITH ORDINALITY AS k({', '.join(KEY_COLUMNS)}, i) "
    f"JOIN payment_metrics_5m m ON {_KEY_MATCH} "
    f"ORDER BY {', '.join(f'm.{k}' for k in KEY_COLUMNS)} FOR UPDATE OF m"
)
_UPDATE_METRICS = (
    "UPDATE payment_metrics_5m m SET "
    + ", ".join(f"{c} = k.{c}" for c in _UPDATABLE)
    + f" FROM unnest({', '.join(['%b'] * (len(KEY_COLUMNS) + len(_UPDATABLE)))}) "
    f"AS k({', '.join((*KEY_COLUMNS, *_UPDATABLE))}) WHERE {_KEY_MATCH}"
)
# The histogram name and window length are constants, but they come as arrays too: a
# constant would let the planner (misled by stale statistics) read all of a histogram's
# buckets and join them against the batch's sketches, instead of looking those up.
_SKETCH_MATCH = " AND ".join(f"h.{k} = k.{k}" for k in _SKETCH_KEY)
_FETCH_BUCKETS = (
    "SELECT k.i - 1, h.bucket, h.count "
    f"FROM unnest(%b, %b, %b, %b) WITH ORDINALITY AS k({', '.join(_SKETCH_KEY)}, i) "
    f"JOIN aggregate_histograms h ON {_SKETCH_MATCH}"
)
_UPDATE_BUCKETS = (
    "UPDATE aggregate_histograms h SET count = k.count "
    f"FROM unnest(%b, %b, %b, %b, %b, %b) AS k({', '.join(_SKETCH_KEY)}, bucket, count) "
    f"WHERE {_SKETCH_MATCH} AND h.bucket = k.bucket"
)

_DYNAMIC_KEY = ("metric_name", "window_seconds", "window_start", "dimensions", "config_version")
_DYNAMIC_COLUMNS = (
    *_DYNAMIC_KEY,
    "aggregate",
    "value",
    "count",
    "value_count",
    "sum",
    "min",
    "max",
    "numerator",
)
_DYNAMIC_TYPES = (
    TEXT,
    INT4,
    TIMESTAMPTZ,
    TEXT,
    INT4,
    TEXT,
    FLOAT8,
    INT8,
    INT8,
    FLOAT8,
    FLOAT8,
    FLOAT8,
    INT8,
)
# The same merge as SqlTransaction's SQLAlchemy upsert (sql._dynamic_upsert): partials add,
# least/greatest skip NULLs, the value is recomputed from the merged partials.
_SUM = (
    "CASE WHEN t.sum IS NULL THEN excluded.sum WHEN excluded.sum IS NULL THEN t.sum "
    "ELSE t.sum + excluded.sum END"
)
_COUNT = "(t.count + excluded.count)"
_NUMERATOR = "(coalesce(t.numerator, 0) + coalesce(excluded.numerator, 0))"
_UPSERT_DYNAMIC = (
    f"INSERT INTO dynamic_metrics AS t ({', '.join(_DYNAMIC_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(['%b'] * len(_DYNAMIC_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(_DYNAMIC_KEY)}) DO UPDATE SET "
    f"count = {_COUNT}, value_count = t.value_count + excluded.value_count, sum = {_SUM}, "
    "min = least(t.min, excluded.min), max = greatest(t.max, excluded.max), "
    f"numerator = CASE WHEN t.aggregate = 'ratio' THEN {_NUMERATOR} END, "
    "value = CASE t.aggregate "
    f"WHEN 'count' THEN {_COUNT}::float8 "
    f"WHEN 'sum' THEN {_SUM} "
    f"WHEN 'avg' THEN ({_SUM}) / nullif(t.value_count + excluded.value_count, 0)::float8 "
    "WHEN 'min' THEN least(t.min, excluded.min) "
    "WHEN 'max' THEN greatest(t.max, excluded.max) "
    f"WHEN 'ratio' THEN {_NUMERATOR}::float8 / nullif({_COUNT}, 0)::float8 END"
)

_EARLIER_AUTHORIZATIONS = (
    # `customer_id IS NOT NULL` and the literal match ix_normalized_transactions_customer's
    # WHERE; the (hash) index is probed once per customer of the array.
    f"SELECT {', '.join(HISTORY_COLUMNS)} "
    "FROM normalized_transactions WHERE customer_id = ANY(%b) AND customer_id IS NOT NULL "
    "AND event_type = 'authorization' AND occurred_at >= %s AND occurred_at < %s "
    "AND batch_id <> %s"
)

_UPSERT_SKETCH_BUCKETS = (
    f"INSERT INTO aggregate_histograms ({', '.join(_SKETCH_KEY)}, bucket, count) "
    "SELECT * FROM unnest(%b, %b, %b, %b, %b, %b) "
    f"ON CONFLICT ({', '.join(_SKETCH_KEY)}, bucket) DO UPDATE SET "
    "count = aggregate_histograms.count + excluded.count"
)

_TRANSIENT = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.OperationalError,
)


def postgres_engine(
    url: str | sa.URL,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_seconds: float = 30.0,
) -> sa.Engine:
    """A pooled engine; connections are checked before use (a restarted server is fine)."""
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_seconds,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 10,
            "application_name": sa.make_url(url).query.get("application_name", "paymetrics"),
        },
    )


@contextmanager
def _transient_errors(what: str) -> Iterator[None]:
    """Errors a retry of the whole batch can cure become `TransientStoreError`."""
    try:
        yield
    except _TRANSIENT as error:
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        raise TransientStoreError(f"{what}: {reason}") from error


@dataclass(frozen=True, slots=True)
class _CopyIn:
    """A binary COPY into a table: the statement and the encoded rows."""

    statement: str
    rows: pa.Array

    @classmethod
    def of(cls, table: str, rows: pa.Table) -> _CopyIn:
        columns = {name: rows[name] for name in rows.column_names}
        names, encoded = copy_rows(columns, _TYPES[table])
        return cls(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT binary)", encoded)

    def take(self, at: pa.Array | npt.NDArray[Any]) -> _CopyIn:
        """The COPY of rows `at` (indices, or a mask) only."""
        if isinstance(at, np.ndarray) and at.dtype == np.bool_:
            return _CopyIn(self.statement, self.rows.filter(pa.array(at)))
        return _CopyIn(self.statement, self.rows.take(at))


@contextmanager
def _copying(cursor: psycopg.Cursor[Any], copy_in: _CopyIn | None) -> Iterator[None]:
    """Send the COPY's data; the block runs while the server still works through it."""
    if copy_in is None:
        yield
        return
    with cursor.copy(copy_in.statement) as copy:
        for piece in copy_payload(copy_in.rows):
            copy.write(piece)
        yield


def _copy(cursor: psycopg.Cursor[Any], copy_in: _CopyIn | None) -> None:
    with _copying(cursor, copy_in):
        pass


def _query(cursor: psycopg.Cursor[Any], statement: str, params: Sequence[Any]) -> None:
    """Run a statement on arrays of the batch's keys. Never as a prepared statement: a
    generic plan cannot see how long the arrays are, nor how big the tables have grown."""
    cursor.execute(statement, params, prepare=False)


def _params(table: str, rows: pa.Table, columns: Sequence[str]) -> list[ArrayParam]:
    types = _TYPES[table]
    return [array_param(rows[c], types[c]) for c in columns]


def _index(values: npt.NDArray[np.int64]) -> pa.Array:
    return pa.array(values, pa.int64())


def _repeat(value: Any, n: int, kind: pa.DataType) -> pa.Array:
    return pa.array([value], kind).take(pa.array(np.zeros(n, dtype=np.int64)))


def _sketches(rows: pa.Table, at: npt.NDArray[np.int64]) -> pa.Table:
    """The `aggregate_histograms` key (less the bucket) of the latency sketch of rows `at`."""
    index = _index(at)
    return pa.table(
        {
            "histogram": _repeat(LATENCY_HISTOGRAM, len(at), pa.string()),
            "window_start": rows["window_start"].take(index),
            "window_seconds": _repeat(WINDOW_SECONDS, len(at), pa.int32()),
            "dimensions": rows["dimensions"].take(index),
        }
    )


class PostgresTransaction(SqlTransaction):
    _settings_done = False

    def _driver(self, then: str = "") -> psycopg.Connection[Any]:
        """The psycopg connection, with our settings made; runs `then` (no parameters)
        in the same round trip."""
        driver = self.conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        info = self.conn.connection.info  # lives as long as the DBAPI connection
        if not info.get("paymetrics_dumpers"):
            register_dumpers(driver.adapters)
            info["paymetrics_dumpers"] = True
        statements = [then] if then else []
        if not self._settings_done:
            statements.insert(0, _SETTINGS)
            self._settings_done = True
        if statements:
            driver.execute("; ".join(statements))  # no parameters: one simple query
        return driver

    # -- events ------------------------------------------------------------------

    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        n = events.num_rows
        if n == 0:
            return np.zeros(0, dtype=bool)
        # Encoded in arrival order, sent in event_id order: B-tree inserts go left to
        # right, and two writers of the same events lock them in the same order.
        order = pc.sort_indices(events["event_id"])  # stable
        table = events.select([c for c in _EVENT_COLUMNS if c != "batch_id"])
        table = table.append_column("batch_id", pa.array(np.full(n, batch_id, dtype=np.int32)))
        rows = _CopyIn.of("normalized_transactions", table).take(order)
        new = np.ones(n, dtype=bool)
        # The savepoint stays until COMMIT: releasing it would cost a round trip.
        savepoint = f"SAVEPOINT {_SAVEPOINT}"
        with _transient_errors("storing events"), self._driver(savepoint).cursor() as cursor:
            try:
                _copy(cursor, rows)
            except psycopg.errors.UniqueViolation:
                # Stored before, by a writer that committed while we waited, or twice
                # in this batch: the first is stored, all count as new (as on SQLite).
                cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                ids = events["event_id"].take(order)
                _query(cursor, _EXISTING_EVENTS, [array_param(ids, TEXT)])
                new[np.asarray([i for (i,) in cursor.fetchall()], dtype=np.int64)] = False
                first = np.ones(n, dtype=bool)
                first[1:] = np.asarray(pc.not_equal(ids[1:], ids[:-1]))  # sorted ids
                if (keep := new & first).any():
                    _copy(cursor, rows.take(keep))
        mask = np.empty(n, dtype=bool)
        mask[np.asarray(order)] = new
        return mask

    # -- payment metrics ---------------------------------------------------------

    def apply_payment_metrics(self, partials: Partials) -> None:
        """Merge the partials into the stored rows and sketches; write each row once."""
        rows = partials.rows
        if not rows.num_rows:
            return
        timed = np.asarray(rows["latency_max_ms"].is_valid(), dtype=bool)
        with _transient_errors("storing payment metrics"), self._driver().cursor() as cursor:
            _query(cursor, _LOCK_METRICS, _params("payment_metrics_5m", rows, KEY_COLUMNS))
            merged = _Merged(rows, cursor.fetchall())
            refetch = np.flatnonzero(merged.stored & timed)
            found = np.zeros((0, 3), dtype=np.int64)
            if len(refetch):
                sketches = _sketches(rows, refetch)
                _query(
                    cursor, _FETCH_BUCKETS, _params("aggregate_histograms", sketches, _SKETCH_KEY)
                )
                found = np.asarray(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
            buckets = _Buckets.merged(rows, partials.buckets, refetch[found[:, 0]], found[:, 1:])
            n = rows.num_rows
            quantiles = grouped_quantiles(buckets.row, buckets.bucket, buckets.count, n, QUANTILES)
            merged.set_percentiles(timed, quantiles)
            table = merged.table()
            new_rows = table.filter(pa.array(~merged.stored))
            copy_new = _CopyIn.of("payment_metrics_5m", new_rows) if new_rows.num_rows else None
            with _copying(cursor, copy_new):
                # encoded while the server stores the new rows
                updates = table.filter(pa.array(merged.stored))
                update_rows = _params("payment_metrics_5m", updates, (*KEY_COLUMNS, *_UPDATABLE))
                copy_buckets, update_buckets = buckets.writes(rows)
            if updates.num_rows:
                _query(cursor, _UPDATE_METRICS, update_rows)
            _copy(cursor, copy_buckets)
            if update_buckets:
                _query(cursor, _UPDATE_BUCKETS, update_buckets)

    # -- compliance reads: epoch microseconds computed by the server ---------------

    def read_sketch_buckets(self, histogram: str, start_us: int, end_us: int) -> pa.Table:
        return self._read(
            "SELECT (extract(epoch FROM window_start) * 1000000)::int8, dimensions, bucket, "
            "count FROM aggregate_histograms WHERE histogram = %s AND window_seconds = %s "
            "AND window_start >= %s AND window_start < %s",
            (histogram, WINDOW_SECONDS, from_epoch_us(start_us), from_epoch_us(end_us)),
            ("window_start", "dimensions", "bucket", "count"),
        )

    def read_merchant_windows(self, start_us: int, end_us: int) -> pa.Table:
        return self._read(
            "SELECT (extract(epoch FROM window_start) * 1000000)::int8, merchant_id, "
            "sum(authorizations)::int8, sum(approved)::int8 FROM payment_metrics_5m "
            "WHERE window_start >= %s AND window_start < %s GROUP BY window_start, merchant_id",
            (from_epoch_us(start_us), from_epoch_us(end_us)),
            ("window_start", "merchant_id", "authorizations", "approved"),
        )

    def _read(self, sql: str, params: tuple[Any, ...], names: Sequence[str]) -> pa.Table:
        """Rows as a table of int8 columns, but `dimensions` and `merchant_id` (text)."""
        with _transient_errors("reading compliance state"), self._driver().cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchall()
        columns = list(zip(*found, strict=True)) if found else [()] * len(names)
        text = {"dimensions", "merchant_id"}
        return pa.table(
            {
                name: pa.array(values, pa.string() if name in text else pa.int64())
                for name, values in zip(names, columns, strict=True)
            }
        )

    # -- compliance: earlier authorizations of the batch's customers ---------------

    def earlier_authorizations(self, customers: pa.Array, start_us: int, end_us: int) -> pa.Table:
        """One indexed read with the customers as a binary array parameter."""
        if not len(customers):
            return history_table([])
        params = [
            array_param(customers, TEXT),
            from_epoch_us(start_us),
            from_epoch_us(end_us),
            self.batch_id or -1,
        ]
        with _transient_errors("reading earlier authorizations"), self._driver().cursor() as cursor:
            _query(cursor, _EARLIER_AUTHORIZATIONS, params)
            return history_table(cursor.fetchall())

    def add_sketch_buckets(self, histogram: str, buckets: pa.Table) -> None:
        n = buckets.num_rows
        if not n:
            return
        params = [
            array_param(_repeat(histogram, n, pa.string()), TEXT),
            array_param(buckets["window_start"], TIMESTAMPTZ),
            array_param(_repeat(WINDOW_SECONDS, n, pa.int32()), INT4),
            array_param(buckets["dimensions"], TEXT),
            array_param(buckets["bucket"], INT8),
            array_param(buckets["count"], INT8),
        ]
        with _transient_errors("storing compliance sketches"), self._driver().cursor() as cursor:
            _query(cursor, _UPSERT_SKETCH_BUCKETS, params)

    # SqlTransaction.apply_payment_metrics, overridden above, is all that calls these.

    def _upsert_metric_rows(self, rows: pa.Table) -> None:
        raise NotImplementedError("PostgresTransaction.apply_payment_metrics writes metric rows")

    def _upsert_buckets(self, buckets: pa.Table) -> None:
        raise NotImplementedError("PostgresTransaction.apply_payment_metrics writes buckets")

    def _fetch_buckets(
        self, window_start: pa.ChunkedArray, dimensions: pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        raise NotImplementedError("PostgresTransaction.apply_payment_metrics reads buckets")

    def _update_percentiles(self, keys: pa.Table, quantiles: npt.NDArray[np.float64]) -> None:
        raise NotImplementedError("PostgresTransaction.apply_payment_metrics sets percentiles")

    # -- the rest, through SQLAlchemy --------------------------------------------

    def _upsert_dynamic_rows(self, stmt: Any, rows: pa.Table) -> None:
        """One upsert from binary arrays, in key order (one lock order for all writers)."""
        rows = rows.take(pc.sort_indices(rows, [(k, "ascending") for k in _DYNAMIC_KEY]))
        params = [
            array_param(rows[n], t) for n, t in zip(_DYNAMIC_COLUMNS, _DYNAMIC_TYPES, strict=True)
        ]
        with _transient_errors("storing dynamic metrics"), self._driver().cursor() as cursor:
            _query(cursor, _UPSERT_DYNAMIC, params)

    def apply_dynamic_metrics(self, partials: pa.Table) -> None:
        with _transient_errors("storing dynamic metrics"):
            super().apply_dynamic_metrics(partials)

    def finish_batch(
        self,
        batch_id: int,
        source_id: str,
        previous: PartitionState | None,
        state: PartitionState,
        counts: BatchCounts,
    ) -> None:
        with _transient_errors("storing the checkpoint"):
            super().finish_batch(batch_id, source_id, previous, state, counts)


class _Merged:
    """The batch's metric rows plus what is stored: counts, maxima, stored percentiles.

    `stored`: the row exists (and is locked by us); its new values replace the old.
    """

    def __init__(self, rows: pa.Table, stored: Sequence[tuple[Any, ...]]) -> None:
        n = rows.num_rows
        self.rows = rows
        self.stored = np.zeros(n, dtype=bool)
        self.counts = {c: rows[c].to_numpy().astype(np.int64, copy=True) for c in COUNT_COLUMNS}
        self.percentiles = {c: np.full(n, np.nan) for c in _PERCENTILES}
        self.maximum = pc.fill_null(rows["latency_max_ms"], np.nan).to_numpy().astype(np.float64)
        if stored:  # (index, COUNT_COLUMNS…, p50, p95, p99, max), NULL as NaN
            columns = list(zip(*stored, strict=True))
            at = np.asarray(columns[0], dtype=np.int64)
            self.stored[at] = True
            for j, c in enumerate(COUNT_COLUMNS, start=1):
                self.counts[c][at] += np.asarray(columns[j], dtype=np.int64)
            for j, c in enumerate(_PERCENTILES, start=len(COUNT_COLUMNS) + 1):
                self.percentiles[c][at] = np.asarray(columns[j], dtype=np.float64)
            self.maximum[at] = np.fmax(self.maximum[at], np.asarray(columns[-1], dtype=np.float64))

    def set_percentiles(
        self, timed: npt.NDArray[np.bool_], quantiles: npt.NDArray[np.float64]
    ) -> None:
        """New estimates for rows whose sketch changed, capped at the exact maximum
        (rows without latency in this batch keep theirs)."""
        for column, name in enumerate(_PERCENTILES):
            self.percentiles[name][timed] = np.minimum(
                quantiles[timed, column], self.maximum[timed]
            )

    def table(self) -> pa.Table:
        """Every column of payment_metrics_5m, one row per batch row."""
        authorizations = self.counts["authorizations"]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(authorizations > 0, self.counts["approved"] / authorizations, np.nan)
        floats = {"approval_rate": rate, **self.percentiles, "latency_max_ms": self.maximum}
        columns: dict[str, Any] = {k: self.rows[k] for k in KEY_COLUMNS}
        columns.update((c, pa.array(v)) for c, v in self.counts.items())
        columns.update((c, pa.array(v, mask=np.isnan(v))) for c, v in floats.items())
        return pa.table(columns)


@dataclass(frozen=True, slots=True)
class _Buckets:
    """Merged sketch buckets, one per (metric row, bucket), in that order."""

    row: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    from_batch: npt.NDArray[np.bool_]
    stored: npt.NDArray[np.bool_]

    @classmethod
    def merged(
        cls,
        rows: pa.Table,
        batch: pa.Table,
        stored_row: npt.NDArray[np.int64],
        stored: npt.NDArray[np.int64],
    ) -> _Buckets:
        """The batch's buckets plus the stored ones (`stored_row`, (bucket, count) pairs)."""
        keys = rows.select(["window_start", "dimensions"]).append_column(
            "row", pa.array(np.arange(rows.num_rows, dtype=np.int64))
        )
        located = batch.join(keys, ["window_start", "dimensions"], use_threads=False)
        row = np.concatenate([np.asarray(located["row"], dtype=np.int64), stored_row])
        bucket = np.concatenate([np.asarray(located["bucket"], dtype=np.int64), stored[:, 0]])
        count = np.concatenate([np.asarray(located["count"], dtype=np.int64), stored[:, 1]])
        source = np.r_[np.zeros(located.num_rows, dtype=bool), np.ones(len(stored_row), bool)]
        if not len(row):
            return cls(row, bucket, count, source, source)
        order = np.lexsort((bucket, row))
        row, bucket, count, source = row[order], bucket[order], count[order], source[order]
        first = np.flatnonzero(np.r_[True, (row[1:] != row[:-1]) | (bucket[1:] != bucket[:-1])])
        return cls(
            row=row[first],
            bucket=bucket[first],
            count=np.add.reduceat(count, first),
            from_batch=np.logical_or.reduceat(~source, first),
            stored=np.logical_or.reduceat(source, first),
        )

    def writes(self, rows: pa.Table) -> tuple[_CopyIn | None, list[ArrayParam] | None]:
        """The COPY of new buckets (encoded) and the UPDATE parameters of grown ones."""

        def located(where: npt.NDArray[np.bool_]) -> pa.Table:
            table = _sketches(rows, self.row[where])
            table = table.append_column("bucket", pa.array(self.bucket[where]))
            return table.append_column("count", pa.array(self.count[where]))

        copy_in = update = None
        if (new := self.from_batch & ~self.stored).any():
            table = located(new)  # in primary-key order: B-tree inserts go left to right
            table = table.take(pc.sort_indices(table, [(k, "ascending") for k in _BUCKET_ORDER]))
            copy_in = _CopyIn.of("aggregate_histograms", table)
        if (grown := self.from_batch & self.stored).any():
            table = located(grown)
            update = _params("aggregate_histograms", table, table.column_names)
        return copy_in, update


class PostgresStore(SqlStore):
    transaction_class = PostgresTransaction

    def prepare_compliance(self) -> None:
        """Built CONCURRENTLY: enabling compliance on a large store does not stop the
        writers of a running worker group for the build. A build that failed half way
        leaves an invalid index, which is dropped and built again."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            valid = conn.execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"
                ),
                {"name": CUSTOMER_INDEX},
            ).scalar()
            if valid:
                return
            if valid is not None:
                conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {CUSTOMER_INDEX}")
            try:
                conn.exec_driver_sql(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {CUSTOMER_INDEX} "
                    f"{CUSTOMER_INDEX_DEFINITION_POSTGRES}"
                )
            except sa.exc.DBAPIError as error:  # another worker's build got there first
                if not isinstance(error.orig, psycopg.errors.UniqueViolation):
                    raise
