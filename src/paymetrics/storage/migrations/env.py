"""Alembic environment: run with the connection `paymetrics.storage.migrate` hands in."""

from __future__ import annotations

from alembic import context

from paymetrics.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes a connection
    raise RuntimeError("paymetrics migrations run through paymetrics.storage.migrate.upgrade()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
