"""Where stored events, dead letters, metrics and checkpoints live (SQLAlchemy Core).

`open_store(url)` picks the implementation from the URL's dialect and names the
supported ones when it does not know it.
"""

from __future__ import annotations

import sqlalchemy as sa

from paymetrics.storage.base import Store

__all__ = ["DEFAULT_DB_URL", "Store", "open_store"]

DEFAULT_DB_URL = "sqlite:///paymetrics-data/paymetrics.db"


def open_store(
    url: str,
    *,
    pool_size: int = 5,
    pool_max_overflow: int = 10,
    pool_timeout_seconds: float = 30.0,
) -> Store:
    """A store for a SQLAlchemy URL: `sqlite:///paymetrics-data/paymetrics.db` or
    `postgresql+psycopg://user@host/db` (pool sizes apply to PostgreSQL)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            f"database URL {url!r} is not a SQLAlchemy URL (e.g. sqlite:///path/to/file.db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        from paymetrics.storage.sqlite import SQLiteStore, sqlite_engine

        return SQLiteStore(sqlite_engine(parsed))
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ValueError(
                f"database {parsed.render_as_string(hide_password=True)!r}: use the psycopg 3 "
                "driver, e.g. postgresql+psycopg://user@host/db"
            )
        try:
            from paymetrics.storage.postgres import PostgresStore, postgres_engine

            engine = postgres_engine(
                parsed,
                pool_size=pool_size,
                max_overflow=pool_max_overflow,
                pool_timeout_seconds=pool_timeout_seconds,
            )
        except ImportError as error:
            raise ValueError(
                f"PostgreSQL needs psycopg 3 ({error}); install it with: "
                "pip install 'paymetrics[postgres]'"
            ) from None
        return PostgresStore(engine)
    raise ValueError(
        f"database {parsed.render_as_string(hide_password=True)!r}: backend {backend!r} "
        "is not supported; supported: sqlite, postgresql (postgresql+psycopg://…)"
    )
