"""The Alembic migrations build exactly the schema `paymetrics.storage.tables` declares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from paymetrics.storage import open_store
from paymetrics.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from paymetrics.storage.sqlite import sqlite_engine
from paymetrics.storage.tables import metadata

Run = Callable[..., Any]


def schema_of(url: str) -> list[tuple[str, str, str]]:
    """Every table, index and trigger SQLite holds, with its DDL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT type, name, coalesce(sql, '') FROM sqlite_master "
                    "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
                )
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def differences(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_declared_metadata(tmp_db_url: str) -> None:
    store = open_store(tmp_db_url)
    try:
        store.prepare()
    finally:
        store.close()
    assert differences(tmp_db_url) == []
    tables = {name for kind, name, _ in schema_of(tmp_db_url) if kind == "table"}
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_downgrade_to_base_and_back_round_trips(tmp_db_url: str) -> None:
    engine = sqlite_engine(tmp_db_url)
    try:
        upgrade(engine)
        migrated = schema_of(tmp_db_url)
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert {name for _, name, _ in schema_of(tmp_db_url)} == {"alembic_version"}
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    assert schema_of(tmp_db_url) == migrated
    assert differences(tmp_db_url) == []


def test_upgrading_a_current_database_is_a_no_op(
    run_cli: Run, tmp_path: Path, tmp_db_url: str, dump_tables: Callable[..., Any]
) -> None:
    source = tmp_path / "in.jsonl"
    event = {
        "event_id": "u1",
        "event_type": "authorization",
        "transaction_id": "t1",
        "occurred_at": "2024-03-01T12:00:00Z",
        "merchant_id": "m",
        "amount_minor": 1,
        "currency": "USD",
        "status": "approved",
        "payment_method": "card",
        "latency_ms": 12.0,
    }
    source.write_text(json.dumps(event) + "\n{}\n")
    result = run_cli("run", "--source", f"file:{source}", "--db", tmp_db_url, "--no-archive")
    assert result.returncode == 0, result.describe()
    schema = schema_of(tmp_db_url)
    data = dump_tables(tmp_db_url)
    assert data["normalized_transactions"]
    assert data["failed_items"]
    for _ in range(2):
        again = run_cli("db", "upgrade", "--db", tmp_db_url)
        assert again.returncode == 0, again.describe()
    engine = sqlite_engine(tmp_db_url)
    try:
        upgrade(engine)  # and through the API
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert versions == [(head_revision(),)]
    assert schema_of(tmp_db_url) == schema
    assert dump_tables(tmp_db_url) == data
    assert differences(tmp_db_url) == []


def test_run_against_a_fresh_path_creates_the_schema(run_cli: Run, tmp_path: Path) -> None:
    db = tmp_path / "does" / "not" / "exist" / "yet.db"
    source = tmp_path / "empty.jsonl"
    source.write_text("\n")
    url = f"sqlite:///{db}"
    result = run_cli("run", "--source", f"file:{source}", "--db", url, "--no-archive", "--json")
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout)["events_in"] == 0
    assert db.is_file()
    assert differences(url) == []
    current = run_cli("db", "current", "--db", url)
    assert current.stdout.strip() == head_revision(), current.describe()


def test_postgres_migrations_build_the_declared_schema_and_round_trip(
    postgres_schema: Callable[[str], str],
) -> None:
    from paymetrics.storage.tables import POSTGRES_ONLY_INDEXES

    url = postgres_schema("migrations")
    store = open_store(url)
    try:
        store.prepare()
        engine = store.engine  # type: ignore[attr-defined]
        unexpected = [
            d
            for d in differences(url)
            if not (d[0] == "remove_index" and d[1].name in POSTGRES_ONLY_INDEXES)
        ]
        assert unexpected == []
        with engine.connect() as conn:
            indexes = conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                )
            ).all()
        brin = {name for name, definition in indexes if "USING brin" in definition}
        assert brin == POSTGRES_ONLY_INDEXES
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current_revision(engine) is None
        store.prepare()
        assert current_revision(engine) == head_revision()
    finally:
        store.close()
