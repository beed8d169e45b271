"""event-time indexes on PostgreSQL (BRIN)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 15:00:00

Events and dead letters arrive roughly in time order, so a BRIN index on their time
column is a few pages big and costs next to nothing per insert, yet turns an event-time
range query (`WHERE occurred_at >= … AND occurred_at < …`) from a full scan into a
scan of the matching block ranges. SQLite has no BRIN; its queries on these tables are
local and small, so it gets none (a B-tree would slow every insert).
Metric tables need no more: `window_start` leads their primary keys, and
`ix_payment_metrics_5m_merchant` serves per-merchant ranges.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_normalized_transactions_occurred_at",
        "normalized_transactions",
        ["occurred_at"],
        postgresql_using="brin",
    )
    op.create_index(
        "ix_failed_items_first_seen_at",
        "failed_items",
        ["first_seen_at"],
        postgresql_using="brin",
    )
    op.create_index(
        "ix_dynamic_metrics_window_start",
        "dynamic_metrics",
        ["window_start"],
        postgresql_using="brin",
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_dynamic_metrics_window_start", table_name="dynamic_metrics")
    op.drop_index("ix_failed_items_first_seen_at", table_name="failed_items")
    op.drop_index("ix_normalized_transactions_occurred_at", table_name="normalized_transactions")
