"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 12:14:59.573175
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paymetrics.storage.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregate_histograms",
        sa.Column("histogram", sa.String(length=128), nullable=False),
        sa.Column("window_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("dimensions", sa.String(length=1024), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "histogram",
            "window_start",
            "window_seconds",
            "dimensions",
            "bucket",
            name=op.f("pk_aggregate_histograms"),
        ),
        comment="Mergeable histogram/sketch buckets; counts add up across batches and workers.",
    )
    op.create_table(
        "failed_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=1024), nullable=False),
        sa.Column("partition", sa.String(length=1024), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failed_items")),
        sa.UniqueConstraint("source_id", "partition", "position", name="uq_failed_items_position"),
        comment="Dead letters: every message that could not become an event, with its reason.",
    )
    with op.batch_alter_table("failed_items", schema=None) as batch_op:
        batch_op.create_index("ix_failed_items_reason", ["reason"], unique=False)

    op.create_table(
        "ingest_batches",
        sa.Column("batch_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=1024), nullable=False),
        sa.Column("partition", sa.String(length=1024), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("normalized", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("dead_lettered", sa.Integer(), nullable=False),
        sa.Column("committed_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_ingest_batches")),
        comment="One row per stored batch: the provenance of normalized rows.",
    )
    op.create_table(
        "normalized_transactions",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payment_method", sa.String(length=16), nullable=False),
        sa.Column("decline_code", sa.Text(), nullable=True),
        sa.Column("card_network", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("pan_exposure", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("source_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_normalized_transactions")),
        comment="Valid, de-duplicated, masked events (one row per event_id).",
    )
    op.create_table(
        "payment_metrics_5m",
        sa.Column("window_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("payment_method", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("authorizations", sa.BigInteger(), nullable=False),
        sa.Column("approved", sa.BigInteger(), nullable=False),
        sa.Column("declined", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("approval_rate", sa.Float(), nullable=True),
        sa.Column("approved_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("captures", sa.BigInteger(), nullable=False),
        sa.Column("captured_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunds", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("chargebacks", sa.BigInteger(), nullable=False),
        sa.Column("chargeback_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p95_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("latency_max_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint(
            "window_start",
            "merchant_id",
            "payment_method",
            "currency",
            name=op.f("pk_payment_metrics_5m"),
        ),
        comment="Exact 5-minute payment metrics per merchant, payment method and currency.",
    )
    with op.batch_alter_table("payment_metrics_5m", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_metrics_5m_merchant", ["merchant_id", "window_start"], unique=False
        )

    op.create_table(
        "source_checkpoints",
        sa.Column("source_id", sa.String(length=1024), nullable=False),
        sa.Column("partition", sa.String(length=1024), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=True),
        sa.Column("watermark", UTCDateTime(timezone=True), nullable=True),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("normalized", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("dead_lettered", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "partition", name=op.f("pk_source_checkpoints")),
        comment="Where each source partition resumes, committed with the data it covers.",
    )


def downgrade() -> None:
    op.drop_table("source_checkpoints")
    with op.batch_alter_table("payment_metrics_5m", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_metrics_5m_merchant")

    op.drop_table("payment_metrics_5m")
    op.drop_table("normalized_transactions")
    op.drop_table("ingest_batches")
    with op.batch_alter_table("failed_items", schema=None) as batch_op:
        batch_op.drop_index("ix_failed_items_reason")

    op.drop_table("failed_items")
    op.drop_table("aggregate_histograms")
