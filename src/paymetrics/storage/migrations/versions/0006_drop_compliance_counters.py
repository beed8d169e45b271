"""compliance totals from the stored events: drop `compliance_counters`

The per-customer compliance rules (daily aggregate, structuring, velocity) now add the
batch's authorizations to the same customers' earlier stored ones, read through a
partial index built on demand (`SqlStore.prepare_compliance`), instead of keeping an
upserted counter per customer, rule and period (ADR 0010). The counters are no longer
read or written. Downgrading recreates the table empty: counters rebuilt from nothing
would undercount the open periods, so a downgrade should be followed by a replay.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 20:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("compliance_counters")


def downgrade() -> None:
    op.create_table(
        "compliance_counters",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_seconds", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("amount_minor_reporting", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "rule",
            "period_seconds",
            "period_start",
            "subject_type",
            "subject_id",
            name="pk_compliance_counters",
        ),
        comment="Additive per-subject period counters of the compliance rules.",
        sqlite_with_rowid=False,
    )
