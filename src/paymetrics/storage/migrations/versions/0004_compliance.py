"""compliance counters and alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paymetrics.storage.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_counters",
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("period_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor_reporting", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "rule",
            "subject_type",
            "subject_id",
            "period_start",
            "period_seconds",
            name=op.f("pk_compliance_counters"),
        ),
        comment="Additive per-subject period counters of the compliance rules.",
    )
    op.create_table(
        "compliance_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("period_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("measured_value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("evidence_event_ids", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=True),
        sa.Column("delivery_status", sa.String(length=16), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=True),
        sa.Column("last_delivery_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_alerts")),
        sa.UniqueConstraint(
            "rule",
            "subject_type",
            "subject_id",
            "period_start",
            "period_seconds",
            name="uq_compliance_alerts_key",
        ),
        comment="Compliance alerts: one per rule, subject and period.",
    )
    op.create_index(
        "ix_compliance_alerts_created_at", "compliance_alerts", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_compliance_alerts_created_at", table_name="compliance_alerts")
    op.drop_table("compliance_alerts")
    op.drop_table("compliance_counters")
