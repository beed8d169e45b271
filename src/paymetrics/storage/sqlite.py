"""The embedded store: SQLite in WAL mode, one writer at a time.

Every transaction starts with BEGIN IMMEDIATE, so the write lock is taken up
front and two processes never deadlock upgrading a read lock. synchronous=FULL
makes a commit durable before the source is acknowledged; with one commit per
batch the fsync costs next to nothing.

Bulk writes go straight to the driver's executemany with tuples built from
Arrow columns (timestamps formatted vectorized): SQLAlchemy's per-row parameter
processing would cost more than SQLite itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from paymetrics.metrics.payment_5m import COUNT_COLUMNS, KEY_COLUMNS, LATENCY_HISTOGRAM
from paymetrics.metrics.windows import from_epoch_us
from paymetrics.normalize import WINDOW_SECONDS
from paymetrics.storage.base import StoreUnavailable
from paymetrics.storage.sql import HISTORY_COLUMNS, SqlStore, SqlTransaction, history_table
from paymetrics.storage.tables import SQLITE_DATETIME_FORMAT, normalized_transactions

__all__ = ["SQLiteStore", "sqlite_engine"]

_EVENT_COLUMNS = tuple(c.name for c in normalized_transactions.columns if c.name != "batch_id")


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


_INSERT_EVENTS = (
    f"INSERT INTO {normalized_transactions.name} ({', '.join(_EVENT_COLUMNS)}, batch_id) "
    f"VALUES ({_placeholders(len(_EVENT_COLUMNS) + 1)}) ON CONFLICT (event_id) DO NOTHING"
)
_METRIC_COLUMNS = (*KEY_COLUMNS, *COUNT_COLUMNS, "latency_max_ms", "approval_rate")
_UPSERT_METRICS = (
    f"INSERT INTO payment_metrics_5m ({', '.join(_METRIC_COLUMNS)}) "
    f"VALUES ({_placeholders(len(_METRIC_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNT_COLUMNS)
    + ", approval_rate = CASE WHEN authorizations + excluded.authorizations > 0 THEN "
    "CAST(approved + excluded.approved AS REAL) / (authorizations + excluded.authorizations) END"
    ", latency_max_ms = coalesce(max(latency_max_ms, excluded.latency_max_ms), "
    "latency_max_ms, excluded.latency_max_ms)"
)
_UPSERT_BUCKETS = (
    "INSERT INTO aggregate_histograms "
    "(histogram, window_start, window_seconds, dimensions, bucket, count) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (histogram, window_start, window_seconds, dimensions, bucket) "
    "DO UPDATE SET count = count + excluded.count"
)
_UPDATE_PERCENTILES = (
    "UPDATE payment_metrics_5m SET "
    "latency_p50_ms = min(?, latency_max_ms), "
    "latency_p95_ms = min(?, latency_max_ms), "
    "latency_p99_ms = min(?, latency_max_ms) "
    f"WHERE {' AND '.join(f'{k} = ?' for k in KEY_COLUMNS)}"
)


_EARLIER_AUTHORIZATIONS = (
    # The customers come as one JSON array (no temporary table to fill), first in the
    # join (CROSS JOIN fixes the order): one probe of the partial index per customer,
    # not a scan of the index. The literal matches the index's WHERE.
    f"SELECT {', '.join(f't.{c}' for c in HISTORY_COLUMNS)} FROM json_each(?) AS c "
    "CROSS JOIN normalized_transactions AS t "
    "ON t.customer_id = c.value AND t.event_type = 'authorization' "
    "AND t.occurred_at >= ? AND t.occurred_at < ? WHERE t.batch_id <> ?"
)


_SKETCH_READ = pa.schema(
    [
        ("window_start", pa.int64()),
        ("dimensions", pa.string()),
        ("bucket", pa.int64()),
        ("count", pa.int64()),
    ]
)
_MERCHANT_READ = pa.schema(
    [
        ("window_start", pa.int64()),
        ("merchant_id", pa.string()),
        ("authorizations", pa.int64()),
        ("approved", pa.int64()),
    ]
)


def _text(epoch_us: int) -> str:
    """An instant in SQLite's stored UTC text form (what UTCDateTime writes)."""
    return from_epoch_us(epoch_us).strftime(SQLITE_DATETIME_FORMAT)


def _columns(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Driver rows as a table of `schema`; a first column `window_start` (SQLite's UTC
    text) becomes epoch microseconds."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for values, field in zip(columns, schema, strict=True):
        if field.name == "window_start":
            text = pa.array(values, pa.string())
            arrays.append(text.cast(pa.timestamp("us")).cast(pa.int64()))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _pylist(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Driver-ready Python values; timestamps become SQLite's UTC text form."""
    if pa.types.is_timestamp(column.type):
        # A naive µs timestamp casts to 'YYYY-MM-DD HH:MM:SS.ffffff', 20x faster than strftime.
        column = column.cast(pa.timestamp("us")).cast(pa.string())
    values: list[Any] = column.to_pylist()
    return values


def sqlite_engine(url: str | sa.URL) -> sa.Engine:
    """An engine with the pragmas and transaction handling paymetrics relies on."""
    url = sa.make_url(url)
    if url.database and url.database != ":memory:":
        folder = Path(url.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(
                f"cannot create the folder {folder} for {url.database}: {error.strerror}"
            ) from None
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's recipe)
        cursor = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "busy_timeout=30000",
            "cache_size=-65536",
            "temp_store=MEMORY",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SQLiteTransaction(SqlTransaction):
    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        """Insert with ON CONFLICT DO NOTHING; new rows are those past the old max rowid.

        Inside BEGIN IMMEDIATE nobody else writes, so every row with a rowid above
        the maximum read just before the insert is one this statement added.
        """
        n = events.num_rows
        if n == 0:
            return np.zeros(0, dtype=bool)
        columns = [_pylist(events[name]) for name in _EVENT_COLUMNS]
        columns.append([batch_id] * n)
        before = self._scalar("SELECT max(rowid) FROM normalized_transactions") or 0
        result = self.conn.exec_driver_sql(_INSERT_EVENTS, list(zip(*columns, strict=True)))
        if result.rowcount == n:
            return np.ones(n, dtype=bool)
        new_ids = self.conn.exec_driver_sql(
            "SELECT event_id FROM normalized_transactions WHERE rowid > ?", (before,)
        ).scalars()
        new = pc.is_in(events["event_id"], value_set=pa.array(list(new_ids), pa.string()))
        return np.asarray(new, dtype=bool)

    def _scalar(self, sql: str) -> Any:
        return self.conn.exec_driver_sql(sql).scalar()

    def _upsert_metric_rows(self, rows: pa.Table) -> None:
        approved = rows["approved"].to_numpy()
        auths = rows["authorizations"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = pa.array(approved / auths, mask=auths == 0)
        columns = [_pylist(rows[name]) for name in _METRIC_COLUMNS[:-1]]
        columns.append(rate.to_pylist())
        self.conn.exec_driver_sql(_UPSERT_METRICS, list(zip(*columns, strict=True)))

    def _upsert_buckets(self, buckets: pa.Table) -> None:
        n = buckets.num_rows
        columns = [
            [LATENCY_HISTOGRAM] * n,
            _pylist(buckets["window_start"]),
            [WINDOW_SECONDS] * n,
            _pylist(buckets["dimensions"]),
            _pylist(buckets["bucket"]),
            _pylist(buckets["count"]),
        ]
        self.conn.exec_driver_sql(_UPSERT_BUCKETS, list(zip(*columns, strict=True)))

    def _fetch_buckets(
        self, window_start: pa.ChunkedArray, dimensions: pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        self.conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS touched_sketches "
            "(k INTEGER PRIMARY KEY, window_start DATETIME, dimensions VARCHAR)"
        )
        self.conn.exec_driver_sql("DELETE FROM touched_sketches")
        keys = zip(
            range(len(window_start)), _pylist(window_start), _pylist(dimensions), strict=True
        )
        self.conn.exec_driver_sql("INSERT INTO touched_sketches VALUES (?, ?, ?)", list(keys))
        driver = self.conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()  # plain tuples, no Row objects
        rows = cursor.execute(
            # CROSS JOIN pins the loop order: touched keys outside, primary-key lookups inside.
            "SELECT t.k, h.bucket, h.count FROM touched_sketches t "
            "CROSS JOIN aggregate_histograms h ON h.histogram = ? "
            "AND h.window_start = t.window_start "
            "AND h.window_seconds = ? AND h.dimensions = t.dimensions",
            (LATENCY_HISTOGRAM, WINDOW_SECONDS),
        ).fetchall()
        cursor.close()
        found = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return found[:, 0], found[:, 1], found[:, 2]

    def _update_percentiles(self, keys: pa.Table, quantiles: npt.NDArray[np.float64]) -> None:
        columns = [quantiles[:, i].tolist() for i in range(quantiles.shape[1])]
        columns += [_pylist(keys[name]) for name in KEY_COLUMNS]
        self.conn.exec_driver_sql(_UPDATE_PERCENTILES, list(zip(*columns, strict=True)))

    def _upsert_dynamic_rows(self, stmt: Any, rows: pa.Table) -> None:
        """The shared upsert, compiled once per batch and run by the driver with tuples
        built from Arrow columns (constants of the statement repeated)."""
        compiled = stmt.compile(dialect=self.conn.dialect)
        constants = {name: bind.value for name, bind in compiled.binds.items()}
        n = rows.num_rows
        columns = [
            _pylist(rows[name]) if name in rows.column_names else [constants[name]] * n
            for name in compiled.positiontup or ()
        ]
        self.conn.exec_driver_sql(compiled.string, list(zip(*columns, strict=True)))

    # -- compliance: the bulk paths, as for the metrics ------------------------------

    def read_sketch_buckets(self, histogram: str, start_us: int, end_us: int) -> pa.Table:
        """As SqlTransaction's, with the timestamps converted in Arrow, not per row."""
        found = self._driver_rows(
            "SELECT window_start, dimensions, bucket, count FROM aggregate_histograms "
            "WHERE histogram = ? AND window_seconds = ? AND window_start >= ? "
            "AND window_start < ?",
            (histogram, WINDOW_SECONDS, _text(start_us), _text(end_us)),
        )
        return _columns(found, _SKETCH_READ)

    def read_merchant_windows(self, start_us: int, end_us: int) -> pa.Table:
        """As SqlTransaction's, with the timestamps converted in Arrow, not per row."""
        found = self._driver_rows(
            "SELECT window_start, merchant_id, sum(authorizations), sum(approved) "
            "FROM payment_metrics_5m WHERE window_start >= ? AND window_start < ? "
            "GROUP BY window_start, merchant_id",
            (_text(start_us), _text(end_us)),
        )
        return _columns(found, _MERCHANT_READ)

    def _driver_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        driver = self.conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()  # plain tuples, no Row objects
        try:
            rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()
        return rows

    def earlier_authorizations(self, customers: pa.Array, start_us: int, end_us: int) -> pa.Table:
        """One read; it probes `ix_normalized_transactions_customer` once per customer."""
        if not len(customers):
            return history_table([])
        found = self._driver_rows(
            _EARLIER_AUTHORIZATIONS,
            (
                json.dumps(customers.to_pylist()),
                _text(start_us),
                _text(end_us),
                self.batch_id or -1,
            ),
        )
        return history_table(found, text_times=True)

    def add_sketch_buckets(self, histogram: str, buckets: pa.Table) -> None:
        n = buckets.num_rows
        if not n:
            return
        columns = [
            [histogram] * n,
            _pylist(buckets["window_start"]),
            [WINDOW_SECONDS] * n,
            _pylist(buckets["dimensions"]),
            _pylist(buckets["bucket"]),
            _pylist(buckets["count"]),
        ]
        self.conn.exec_driver_sql(_UPSERT_BUCKETS, list(zip(*columns, strict=True)))


class SQLiteStore(SqlStore):
    transaction_class = SQLiteTransaction
