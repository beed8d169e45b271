"""config versions and dynamic metrics

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paymetrics.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("applied_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_by", sa.String(length=1024), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("last_applied_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_config_versions")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_config_versions_content_hash")),
        comment="Every distinct rules configuration ever applied (what decides the numbers).",
    )
    op.create_table(
        "dynamic_metrics",
        sa.Column("metric_name", sa.String(length=64), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("window_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("dimensions", sa.String(length=1024), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=False),
        sa.Column("aggregate", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("value_count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=True),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("numerator", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "metric_name",
            "window_seconds",
            "window_start",
            "dimensions",
            "config_version",
            name=op.f("pk_dynamic_metrics"),
        ),
        comment="Config-defined metrics with their mergeable partials, per rule version.",
    )
    with op.batch_alter_table("ingest_batches") as batch:
        batch.add_column(sa.Column("config_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_batches") as batch:
        batch.drop_column("config_version")
    op.drop_table("dynamic_metrics")
    op.drop_table("config_versions")
