"""Where stored events, dead letters, metrics and checkpoints live (SQLAlchemy Core).

`open_store(url)` picks the implementation from the URL's dialect and names the
supported ones when it does not know it.
"""

from __future__ import annotations

import sqlalchemy as sa

from paymetrics.storage.base import Store

__all__ = ["DEFAULT_DB_URL", "Store", "open_store"]

DEFAULT_DB_URL = "sqlite:///paymetrics-data/paymetrics.db"


def open_store(url: str) -> Store:
    """A store for a SQLAlchemy URL, e.g. `sqlite:///paymetrics-data/paymetrics.db`."""
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
    raise ValueError(
        f"database {parsed.render_as_string(hide_password=True)!r}: backend {backend!r} "
        "is not supported; supported: sqlite"
    )
