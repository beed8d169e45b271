"""The database schema, in SQLAlchemy Core. Alembic migrations create it.

Timestamps are aware UTC everywhere (`UTCDateTime`); on SQLite they are stored as
'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC, which sorts and compares correctly and
works with SQLite's date functions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "CUSTOMER_INDEX",
    "CUSTOMER_INDEX_DEFINITION",
    "CUSTOMER_INDEX_DEFINITION_POSTGRES",
    "METRIC_KEY_COLUMNS",
    "UTCDateTime",
    "aggregate_histograms",
    "compliance_alerts",
    "config_versions",
    "dynamic_metrics",
    "failed_items",
    "ingest_batches",
    "metadata",
    "normalized_transactions",
    "payment_metrics_5m",
    "source_checkpoints",
]

SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; naive ones are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC one")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":  # SQLAlchemy stores naive values as SQLITE_DATETIME_FORMAT
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(1024), nullable=False),
    sa.Column("partition", sa.String(1024), nullable=False),
    sa.Column("first_position", sa.BigInteger, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("messages", sa.Integer, nullable=False),
    sa.Column("normalized", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("dead_lettered", sa.Integer, nullable=False),
    sa.Column("committed_at", UTCDateTime, nullable=False),
    sa.Column("config_version", sa.Integer),
    comment="One row per stored batch: the provenance of normalized rows.",
)

normalized_transactions = sa.Table(
    "normalized_transactions",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("event_type", sa.String(16), nullable=False),
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("merchant_id", sa.String(64), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payment_method", sa.String(16), nullable=False),
    sa.Column("decline_code", sa.Text),
    sa.Column("card_network", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("country", sa.String(2)),
    sa.Column("channel", sa.String(16)),
    sa.Column("customer_id", sa.String(128)),
    sa.Column("pan_exposure", sa.Boolean, nullable=False),
    sa.Column("batch_id", sa.Integer, nullable=False),
    sa.Column("source_position", sa.BigInteger, nullable=False),
    comment="Valid, de-duplicated, masked events (one row per event_id).",
)

failed_items = sa.Table(
    "failed_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(1024), nullable=False),
    sa.Column("partition", sa.String(1024), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("event_id", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("source_id", "partition", "position", name="uq_failed_items_position"),
    comment="Dead letters: every message that could not become an event, with its reason.",
)

METRIC_KEY_COLUMNS = ("window_start", "merchant_id", "payment_method", "currency")

payment_metrics_5m = sa.Table(
    "payment_metrics_5m",
    metadata,
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("merchant_id", sa.String(64), primary_key=True),
    sa.Column("payment_method", sa.String(16), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("authorizations", sa.BigInteger, nullable=False),
    sa.Column("approved", sa.BigInteger, nullable=False),
    sa.Column("declined", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("approval_rate", sa.Float),
    sa.Column("approved_amount_minor", sa.BigInteger, nullable=False),
    sa.Column("captures", sa.BigInteger, nullable=False),
    sa.Column("captured_amount_minor", sa.BigInteger, nullable=False),
    sa.Column("refunds", sa.BigInteger, nullable=False),
    sa.Column("refunded_amount_minor", sa.BigInteger, nullable=False),
    sa.Column("chargebacks", sa.BigInteger, nullable=False),
    sa.Column("chargeback_amount_minor", sa.BigInteger, nullable=False),
    sa.Column("latency_p50_ms", sa.Float),
    sa.Column("latency_p95_ms", sa.Float),
    sa.Column("latency_p99_ms", sa.Float),
    sa.Column("latency_max_ms", sa.Float),
    comment="Exact 5-minute payment metrics per merchant, payment method and currency.",
    sqlite_with_rowid=False,  # migration 0005: stored once, clustered on the key
)

aggregate_histograms = sa.Table(
    "aggregate_histograms",
    metadata,
    sa.Column("histogram", sa.String(128), primary_key=True),
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("window_seconds", sa.Integer, primary_key=True),
    sa.Column("dimensions", sa.String(1024), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    comment="Mergeable histogram/sketch buckets; counts add up across batches and workers.",
    sqlite_with_rowid=False,  # migration 0005: stored once, clustered on the key
)

source_checkpoints = sa.Table(
    "source_checkpoints",
    metadata,
    sa.Column("source_id", sa.String(1024), primary_key=True),
    sa.Column("partition", sa.String(1024), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("byte_offset", sa.BigInteger),
    sa.Column("watermark", UTCDateTime),
    sa.Column("messages", sa.BigInteger, nullable=False),
    sa.Column("normalized", sa.BigInteger, nullable=False),
    sa.Column("duplicates", sa.BigInteger, nullable=False),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    comment="Where each source partition resumes, committed with the data it covers.",
)

config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
    sa.Column("applied_by", sa.String(1024), nullable=False),
    sa.Column("origin", sa.String(1024), nullable=False),
    sa.Column("last_applied_at", UTCDateTime, nullable=False),
    comment="Every distinct rules configuration ever applied (what decides the numbers).",
)

dynamic_metrics = sa.Table(
    "dynamic_metrics",
    metadata,
    sa.Column("metric_name", sa.String(64), primary_key=True),
    sa.Column("window_seconds", sa.Integer, primary_key=True),
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("dimensions", sa.String(1024), primary_key=True),
    sa.Column("config_version", sa.Integer, primary_key=True),
    sa.Column("aggregate", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("value_count", sa.BigInteger, nullable=False),
    sa.Column("sum", sa.Float),
    sa.Column("min", sa.Float),
    sa.Column("max", sa.Float),
    sa.Column("numerator", sa.BigInteger),
    comment="Config-defined metrics with their mergeable partials, per rule version.",
    sqlite_with_rowid=False,  # migration 0005: stored once, clustered on the key
)

sa.Index("ix_failed_items_reason", failed_items.c.reason)
sa.Index(
    "ix_payment_metrics_5m_merchant",
    payment_metrics_5m.c.merchant_id,
    payment_metrics_5m.c.window_start,
)

#: Created by migration 0003 on PostgreSQL only (BRIN on time columns); not declared
#: above because SQLite would build them as B-trees and pay for them on every insert.
POSTGRES_ONLY_INDEXES = frozenset(
    {
        "ix_normalized_transactions_occurred_at",
        "ix_failed_items_first_seen_at",
        "ix_dynamic_metrics_window_start",
    }
)

#: Built on demand (`SqlStore.prepare_compliance`) once a per-customer compliance rule
#: is enabled, not by a migration: a store without compliance does not pay for it on
#: every insert. Partial: authorizations with a customer are all those rules read.
CUSTOMER_INDEX = "ix_normalized_transactions_customer"
CUSTOMER_INDEX_WHERE = "WHERE customer_id IS NOT NULL AND event_type = 'authorization'"
#: The customer alone: the rule reads each matching row anyway (amount, status, ...), and
#: the time there; a narrower entry is a cheaper insert on every authorization.
CUSTOMER_INDEX_DEFINITION = f"ON normalized_transactions (customer_id) {CUSTOMER_INDEX_WHERE}"
#: PostgreSQL: a hash index, only ever probed for equality; its 4-byte entries cost 40%
#: less to insert than the B-tree's (docs/performance.md).
CUSTOMER_INDEX_DEFINITION_POSTGRES = (
    f"ON normalized_transactions USING hash (customer_id) {CUSTOMER_INDEX_WHERE}"
)

compliance_alerts = sa.Table(
    "compliance_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject_type", sa.String(32), nullable=False),
    sa.Column("subject_id", sa.String(128), nullable=False),
    sa.Column("period_start", UTCDateTime, nullable=False),
    sa.Column("period_seconds", sa.Integer, nullable=False),
    sa.Column("measured_value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("evidence_event_ids", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("config_version", sa.Integer),
    sa.Column("delivery_status", sa.String(16)),
    sa.Column("delivery_attempts", sa.Integer),
    sa.Column("last_delivery_error", sa.Text),
    sa.Column("delivered_at", UTCDateTime),
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

sa.Index("ix_compliance_alerts_created_at", compliance_alerts.c.created_at)
