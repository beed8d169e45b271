"""aggregate tables laid out for the batch's writes

* SQLite: the additive aggregate tables become WITHOUT ROWID tables. Their rows are found
  and upserted by their composite primary key only; as rowid tables SQLite keeps every
  row twice (table and key index) and each upsert touches both. Clustered on the key it
  keeps them once: a quarter fewer bytes written per batch with compliance and 20 metric
  rules (docs/performance.md).
* Both: `compliance_counters`' key puts the period before the subject. A batch only
  touches the current periods, so its upserts land in a small, hot part of the key
  instead of all over a key ordered by customer, which slowed every batch down as the
  table grew.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("aggregate_histograms", "compliance_counters", "dynamic_metrics", "payment_metrics_5m")
OLD_COUNTER_KEY = ("rule", "subject_type", "subject_id", "period_start", "period_seconds")
NEW_COUNTER_KEY = ("rule", "period_seconds", "period_start", "subject_type", "subject_id")
_SUFFIX = re.compile(r"\s*WITHOUT ROWID\s*$", re.IGNORECASE)


def _key(columns: tuple[str, ...]) -> str:
    return f"CONSTRAINT pk_compliance_counters PRIMARY KEY ({', '.join(columns)})"


def _rebuild(table: str, *, rowid: bool, counter_key: tuple[str, ...]) -> None:
    """Copy `table` into a new one created by the same statement with or without ROWID
    (and the counters' key in `counter_key` order), then swap them and recreate its
    indexes: SQLite cannot alter either in place."""
    conn = op.get_bind()
    create = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table},
    ).scalar_one()
    wanted = _SUFFIX.sub("", create)
    for columns in (OLD_COUNTER_KEY, NEW_COUNTER_KEY):
        wanted = wanted.replace(_key(columns), _key(counter_key))
    if not rowid:
        wanted = f"{wanted} WITHOUT ROWID"
    if wanted == create:
        return
    indexes = (
        conn.execute(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :name "
                "AND sql IS NOT NULL"
            ),
            {"name": table},
        )
        .scalars()
        .all()
    )
    staging = f"{table}__rebuild"
    head = re.compile(rf'^CREATE TABLE\s+"?{table}"?', re.IGNORECASE)
    conn.exec_driver_sql(head.sub(f'CREATE TABLE "{staging}"', wanted, count=1))
    conn.exec_driver_sql(f'INSERT INTO "{staging}" SELECT * FROM "{table}"')
    conn.exec_driver_sql(f'DROP TABLE "{table}"')
    conn.exec_driver_sql(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
    for index in indexes:
        conn.exec_driver_sql(index)


def _counter_key(columns: tuple[str, ...]) -> None:
    op.drop_constraint("pk_compliance_counters", "compliance_counters", type_="primary")
    op.create_primary_key("pk_compliance_counters", "compliance_counters", list(columns))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            _rebuild(table, rowid=False, counter_key=NEW_COUNTER_KEY)
    else:
        _counter_key(NEW_COUNTER_KEY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            _rebuild(table, rowid=True, counter_key=OLD_COUNTER_KEY)
    else:
        _counter_key(OLD_COUNTER_KEY)
