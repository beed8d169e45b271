"""The production store: PostgreSQL through psycopg 3.

Bulk paths stream Arrow tables as CSV (written by pyarrow, in C++) into
temporary staging tables with COPY, then move them with one
`INSERT … SELECT … ORDER BY key ON CONFLICT …` each: de-duplication and
additive upserts happen in the database, in one transaction per batch. Rows are
applied in key order, so two writers touching the same rows lock them in the
same order and cannot deadlock.

Staging tables are `ON COMMIT DELETE ROWS` temporary tables, created once per
pooled connection.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from paymetrics.metrics.payment_5m import COUNT_COLUMNS, KEY_COLUMNS, LATENCY_HISTOGRAM
from paymetrics.normalize import WINDOW_SECONDS
from paymetrics.storage.sql import SqlStore, SqlTransaction
from paymetrics.storage.tables import normalized_transactions

__all__ = ["PostgresStore", "postgres_engine"]

_EVENT_COLUMNS = tuple(c.name for c in normalized_transactions.columns)
_METRIC_COLUMNS = (*KEY_COLUMNS, *COUNT_COLUMNS, "latency_max_ms")
_BUCKET_COLUMNS = ("window_start", "dimensions", "bucket", "count")

_STAGING = {
    "stage_events": "(LIKE normalized_transactions INCLUDING DEFAULTS)",
    "stage_metrics": "(LIKE payment_metrics_5m INCLUDING DEFAULTS)",
    "stage_buckets": "(window_start timestamptz, dimensions varchar(1024), bucket bigint, "
    "count bigint)",
    "stage_touched": "(k bigint, window_start timestamptz, dimensions varchar(1024))",
    "stage_percentiles": "(window_start timestamptz, merchant_id varchar(64), "
    "payment_method varchar(16), currency varchar(3), p50 double precision, "
    "p95 double precision, p99 double precision)",
}

_KEYS = ", ".join(KEY_COLUMNS)
_INSERT_EVENTS = (
    f"INSERT INTO normalized_transactions ({', '.join(_EVENT_COLUMNS)}) "
    f"SELECT {', '.join(_EVENT_COLUMNS)} FROM stage_events ORDER BY event_id "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_UPSERT_METRICS = (
    f"INSERT INTO payment_metrics_5m ({', '.join(_METRIC_COLUMNS)}, approval_rate) "
    f"SELECT {', '.join(_METRIC_COLUMNS)}, "
    "CASE WHEN authorizations > 0 THEN approved::float8 / authorizations END "
    f"FROM stage_metrics ORDER BY {_KEYS} "
    f"ON CONFLICT ({_KEYS}) DO UPDATE SET "
    + ", ".join(f"{c} = payment_metrics_5m.{c} + excluded.{c}" for c in COUNT_COLUMNS)
    + ", approval_rate = CASE WHEN payment_metrics_5m.authorizations + excluded.authorizations"
    " > 0 THEN (payment_metrics_5m.approved + excluded.approved)::float8"
    " / (payment_metrics_5m.authorizations + excluded.authorizations) END"
    ", latency_max_ms = greatest(payment_metrics_5m.latency_max_ms, excluded.latency_max_ms)"
)
_UPSERT_BUCKETS = (
    "INSERT INTO aggregate_histograms "
    "(histogram, window_start, window_seconds, dimensions, bucket, count) "
    "SELECT %(histogram)s, window_start, %(seconds)s, dimensions, bucket, count "
    "FROM stage_buckets ORDER BY window_start, dimensions, bucket "
    "ON CONFLICT (histogram, window_start, window_seconds, dimensions, bucket) "
    "DO UPDATE SET count = aggregate_histograms.count + excluded.count"
)
_FETCH_BUCKETS = (
    "SELECT t.k, h.bucket, h.count FROM stage_touched t "
    "JOIN aggregate_histograms h ON h.histogram = %(histogram)s "
    "AND h.window_start = t.window_start AND h.window_seconds = %(seconds)s "
    "AND h.dimensions = t.dimensions"
)
_UPDATE_PERCENTILES = (
    "UPDATE payment_metrics_5m m SET "
    "latency_p50_ms = least(s.p50, m.latency_max_ms), "
    "latency_p95_ms = least(s.p95, m.latency_max_ms), "
    "latency_p99_ms = least(s.p99, m.latency_max_ms) "
    "FROM stage_percentiles s WHERE "
    + " AND ".join(f"m.{k} = s.{k}" for k in KEY_COLUMNS)
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


def _csv(table: pa.Table) -> bytes:
    """CSV that PostgreSQL's COPY reads exactly: NULL unquoted and empty, strings quoted."""
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table,
        buffer,
        write_options=pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    return buffer.getvalue()


class PostgresTransaction(SqlTransaction):
    def _driver(self) -> Any:
        driver = self.conn.connection.driver_connection
        assert driver is not None
        return driver

    def _staging(self) -> None:
        info = self.conn.connection.info
        if info.get("paymetrics_staging"):
            return
        with self._driver().cursor() as cursor:
            for name, shape in _STAGING.items():
                cursor.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {name} {shape} ON COMMIT DELETE ROWS"
                )
        info["paymetrics_staging"] = True

    def _copy(self, table_name: str, columns: Sequence[str], rows: pa.Table) -> None:
        self._staging()
        data = _csv(rows.select(list(columns)))
        statement = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
        with self._driver().cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(data)

    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        n = events.num_rows
        if n == 0:
            return np.zeros(n, dtype=bool)
        rows = events.append_column("batch_id", pa.array(np.full(n, batch_id, dtype=np.int64)))
        self._copy("stage_events", _EVENT_COLUMNS, rows)
        with self._driver().cursor() as cursor:
            cursor.execute(_INSERT_EVENTS)
            new_ids = [row[0] for row in cursor.fetchall()]
        if len(new_ids) == n:
            return np.ones(n, dtype=bool)
        new = pc.is_in(events["event_id"], value_set=pa.array(new_ids, pa.string()))
        return np.asarray(new, dtype=bool)

    def _upsert_metric_rows(self, rows: pa.Table) -> None:
        self._copy("stage_metrics", _METRIC_COLUMNS, rows)
        with self._driver().cursor() as cursor:
            cursor.execute(_UPSERT_METRICS)

    def _upsert_buckets(self, buckets: pa.Table) -> None:
        self._copy("stage_buckets", _BUCKET_COLUMNS, buckets)
        with self._driver().cursor() as cursor:
            cursor.execute(
                _UPSERT_BUCKETS, {"histogram": LATENCY_HISTOGRAM, "seconds": WINDOW_SECONDS}
            )

    def _fetch_buckets(
        self, window_start: pa.ChunkedArray, dimensions: pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        touched = pa.table(
            {
                "k": pa.array(np.arange(len(window_start), dtype=np.int64)),
                "window_start": window_start,
                "dimensions": dimensions,
            }
        )
        self._copy("stage_touched", ("k", "window_start", "dimensions"), touched)
        with self._driver().cursor() as cursor:
            cursor.execute(
                _FETCH_BUCKETS, {"histogram": LATENCY_HISTOGRAM, "seconds": WINDOW_SECONDS}
            )
            found = np.asarray(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
        return found[:, 0], found[:, 1], found[:, 2]

    def _update_percentiles(self, keys: pa.Table, quantiles: npt.NDArray[np.float64]) -> None:
        rows = keys.select(list(KEY_COLUMNS))
        for i, name in enumerate(("p50", "p95", "p99")):
            rows = rows.append_column(name, pa.array(quantiles[:, i]))
        self._copy("stage_percentiles", rows.column_names, rows)
        with self._driver().cursor() as cursor:
            cursor.execute(_UPDATE_PERCENTILES)


class PostgresStore(SqlStore):
    transaction_class = PostgresTransaction
