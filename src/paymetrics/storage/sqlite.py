"""The embedded store: SQLite in WAL mode, one writer at a time.

Every transaction starts with BEGIN IMMEDIATE, so the write lock is taken up
front and two processes never deadlock upgrading a read lock. synchronous=FULL
makes a commit durable before the source is acknowledged; with one commit per
batch the fsync costs next to nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from paymetrics.storage.sql import SqlStore, SqlTransaction
from paymetrics.storage.tables import SQLITE_DATETIME_FORMAT, normalized_transactions

__all__ = ["SQLiteStore", "sqlite_engine"]

_EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "transaction_id",
    "occurred_at",
    "merchant_id",
    "amount_minor",
    "currency",
    "status",
    "payment_method",
    "decline_code",
    "card_network",
    "latency_ms",
    "country",
    "channel",
    "customer_id",
    "pan_exposure",
    "source_position",
)
_INSERT_EVENTS = (
    f"INSERT INTO {normalized_transactions.name} ({', '.join(_EVENT_COLUMNS)}, batch_id) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)}, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)


def sqlite_engine(url: str | sa.URL) -> sa.Engine:
    """An engine with the pragmas and transaction handling paymetrics relies on."""
    url = sa.make_url(url)
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
        columns: list[list[Any]] = []
        for name in _EVENT_COLUMNS:
            column = events[name]
            if name == "occurred_at":
                column = pc.strftime(column, format=SQLITE_DATETIME_FORMAT.replace(".%f", ""))
            columns.append(column.to_pylist())
        columns.append([batch_id] * n)
        table = normalized_transactions.name
        before = self.conn.exec_driver_sql(f"SELECT max(rowid) FROM {table}").scalar() or 0
        result = self.conn.exec_driver_sql(_INSERT_EVENTS, list(zip(*columns, strict=True)))
        if result.rowcount == n:
            return np.ones(n, dtype=bool)
        new_ids = self.conn.exec_driver_sql(
            f"SELECT event_id FROM {table} WHERE rowid > ?", (before,)
        ).scalars()
        new = pc.is_in(events["event_id"], value_set=pa.array(list(new_ids), pa.string()))
        return np.asarray(new, dtype=bool)


class SQLiteStore(SqlStore):
    transaction_class = SQLiteTransaction
