"""Shared fixtures and helpers for the whole suite.

* `tmp_db_url`: a fresh SQLite file URL under the test's tmp_path.
* `dump_table` / `dump_tables`: a table (or every paymetrics table) as a sorted list of
  tuples, without the wall-clock columns (`WALL_CLOCK_COLUMNS`), so two databases that
  hold the same data compare equal whenever they were written.
* `write_simulated`: write a simulated JSON Lines file (`write_jsonl(SimulatorConfig(...))`).
* `run_cli`: run `python -m paymetrics ...` as a real subprocess (cwd = tmp_path, no
  inherited PAYMETRICS_DB_URL/COLUMNS), returning a `CliResult`.
* `build_once`: build an expensive read-only fixture directory once per test session, even
  when pytest-xdist runs the session in several worker processes.
* `postgres_url`: the service-test convention. It connects to
  `$PAYMETRICS_TEST_POSTGRES_URL` (default `DEFAULT_POSTGRES_URL`), creates a uniquely
  named schema for this test session (one per xdist worker), yields a URL whose
  connections use that schema (`options=-csearch_path=<schema>`), and drops the schema
  afterwards. Without psycopg or without a server answering it skips, unless
  `PAYMETRICS_REQUIRE_SERVICES=1`, where it fails instead. Tests using it are marked
  `postgres` automatically.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from paymetrics.simulator import SimulatorConfig, write_jsonl

POSTGRES_URL_ENV = "PAYMETRICS_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUIRE_SERVICES_ENV = "PAYMETRICS_REQUIRE_SERVICES"

PAYMETRICS_TABLES = (
    "aggregate_histograms",
    "compliance_alerts",
    "config_versions",
    "dynamic_metrics",
    "failed_items",
    "ingest_batches",
    "normalized_transactions",
    "payment_metrics_5m",
    "source_checkpoints",
)
WALL_CLOCK_COLUMNS: Mapping[str, frozenset[str]] = {
    # applied_by names the process (pid, host) that applied the version
    "config_versions": frozenset({"applied_at", "last_applied_at", "applied_by"}),
    "failed_items": frozenset({"id", "first_seen_at"}),
    "compliance_alerts": frozenset({"id", "created_at"}),
    "ingest_batches": frozenset({"committed_at"}),
    "source_checkpoints": frozenset({"updated_at"}),
}
"""Columns whose values depend on when (not what) something was written."""


# -- databases ----------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def tmp_db_url(tmp_path: Path) -> str:
    """A SQLite URL of a database file that does not exist yet."""
    return sqlite_url(tmp_path / "db" / "paymetrics.db")


def _sort_key(row: Sequence[Any]) -> tuple[tuple[int, Any], ...]:
    return tuple((1, "") if value is None else (0, value) for value in row)


def dump_table(
    url: str,
    table: str,
    *,
    exclude: Iterable[str] = (),
    keep_wall_clock: bool = False,
) -> list[tuple[Any, ...]]:
    """Rows of `table` as sorted tuples, minus wall-clock columns and `exclude`.

    Column values come through `paymetrics.storage.tables` types (aware UTC datetimes).
    """
    from paymetrics.storage.tables import metadata

    t = metadata.tables[table]
    dropped = set(exclude) | (set() if keep_wall_clock else WALL_CLOCK_COLUMNS.get(table, set()))
    columns = [c for c in t.columns if c.name not in dropped]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(*columns))]
    finally:
        engine.dispose()
    return sorted(rows, key=_sort_key)


def dump_table_columns(table: str, *, exclude: Iterable[str] = ()) -> list[str]:
    """The column names `dump_table` returns, in order."""
    from paymetrics.storage.tables import metadata

    dropped = set(exclude) | WALL_CLOCK_COLUMNS.get(table, set())
    return [c.name for c in metadata.tables[table].columns if c.name not in dropped]


def dump_tables(
    url: str, *, exclude: Mapping[str, Iterable[str]] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every paymetrics table (see `dump_table`), keyed by name."""
    exclude = exclude or {}
    return {
        name: dump_table(url, name, exclude=exclude.get(name, ())) for name in PAYMETRICS_TABLES
    }


def query_rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Plain SQL against a database, rows as dicts (no paymetrics types applied)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]
    finally:
        engine.dispose()


@pytest.fixture(name="dump_table", scope="session")
def _dump_table_fixture() -> Callable[..., list[tuple[Any, ...]]]:
    """`dump_table(url, table, exclude=())`: see `dump_table`."""
    return dump_table


@pytest.fixture(name="dump_tables", scope="session")
def _dump_tables_fixture() -> Callable[..., dict[str, list[tuple[Any, ...]]]]:
    """`dump_tables(url, exclude={table: columns})`: see `dump_tables`."""
    return dump_tables


@pytest.fixture(name="query_rows", scope="session")
def _query_rows_fixture() -> Callable[..., list[dict[str, Any]]]:
    """`query_rows(url, sql, **params)`: see `query_rows`."""
    return query_rows


# -- expensive shared fixtures ------------------------------------------------------


def build_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """`build(directory)` once per session, across xdist workers (they share a lock file).

    The directory is for reading only once built: tests must copy anything they change.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    target = root / f"shared-{name}"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = target / ".built"
        if not done.exists():
            if target.exists():
                shutil.rmtree(target)  # a build that failed halfway
            target.mkdir()
            build(target)
            done.touch()
    return target


@pytest.fixture(name="build_once", scope="session")
def _build_once_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, Callable[[Path], None]], Path]:
    """`build_once(name, build)`: see `build_once`."""

    def run(name: str, build: Callable[[Path], None]) -> Path:
        return build_once(tmp_path_factory, name, build)

    return run


# -- simulated input ----------------------------------------------------------------


def write_simulated(path: Path, config: SimulatorConfig) -> int:
    """Write `config`'s stream to `path` as JSON Lines; returns the message count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        return write_jsonl(config, fh)


@pytest.fixture(name="write_simulated", scope="session")
def _write_simulated_fixture() -> Callable[[Path, SimulatorConfig], int]:
    return write_simulated


# -- the command line ---------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    def describe(self) -> str:
        return (
            f"paymetrics {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment CLI subprocesses run with: nothing inherited that changes output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PAYMETRICS_DB_URL", "PAYMETRICS_CONFIG", "COLUMNS", "LINES"}
        and not k.startswith(("PAYMETRICS__", "PAYMETRICS_APPCONFIG_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "paymetrics", *args]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> CliResult:
    """`python -m paymetrics *args` in `cwd`; never raises on a non-zero exit."""
    argv = tuple(str(a) for a in args)
    done = subprocess.run(
        cli_command(*argv),
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(argv, done.returncode, done.stdout, done.stderr)


@pytest.fixture(name="cli_command", scope="session")
def _cli_command_fixture() -> Callable[..., list[str]]:
    """`cli_command(*args)`: the argv of `python -m paymetrics *args` (for Popen)."""
    return cli_command


@pytest.fixture(name="cli_env", scope="session")
def _cli_env_fixture() -> Callable[..., dict[str, str]]:
    """`cli_env(extra=None)`: the environment CLI subprocesses run with."""
    return cli_env


@pytest.fixture(name="run_cli_in", scope="session")
def _run_cli_in_fixture() -> Callable[..., CliResult]:
    """`run_cli_in(*args, cwd=..., env=None)`: for fixtures wider than one test."""
    return run_cli


@pytest.fixture(name="run_cli")
def _run_cli_fixture(tmp_path: Path) -> Callable[..., CliResult]:
    """`run_cli(*args, env=None, cwd=tmp_path)`."""

    def run(
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 300,
    ) -> CliResult:
        return run_cli(*args, cwd=cwd or tmp_path, env=env, timeout=timeout)

    return run


# -- services -----------------------------------------------------------------------


def _service_unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(
            f"{reason} ({REQUIRE_SERVICES_ENV}=1: required services must be available)",
            pytrace=False,
        )
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL bound to a schema created for this test session (dropped after)."""
    base = os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
    try:
        url = sa.make_url(base)
    except sa.exc.ArgumentError:
        url = None
    if url is None:
        pytest.fail(f"{POSTGRES_URL_ENV}={base!r} is not a SQLAlchemy URL", pytrace=False)
    shown = url.render_as_string(hide_password=True)
    problem = None
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    except ImportError as error:
        problem = (
            f"PostgreSQL tests need the driver for {shown} ({error}); "
            "install it with: pip install 'paymetrics[postgres]'"
        )
    if problem:
        _service_unavailable(problem)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    schema = f"paymetrics_test_{worker}_{uuid.uuid4().hex[:12]}".lower()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except (sa.exc.SQLAlchemyError, OSError) as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        problem = f"no PostgreSQL server usable at {shown}: {cause}"
    if problem:
        engine.dispose()
        _service_unavailable(problem)
    options = " ".join(filter(None, [url.query.get("options"), f"-csearch_path={schema}"]))
    bound = url.update_query_dict({"options": options})
    try:
        yield bound.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_schema(postgres_url: str) -> Iterator[Callable[[str], str]]:
    """`postgres_schema(tag)`: a URL bound to a new, empty schema (all dropped at the end).

    For tests that need a database of their own (a whole run compared with another).
    """
    base = sa.make_url(postgres_url)
    engine = sa.create_engine(base)
    created: list[str] = []

    def make(tag: str) -> str:
        schema = f"pm_{tag}_{uuid.uuid4().hex[:10]}".lower()
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        created.append(schema)
        options = " ".join(
            o for o in (base.query.get("options") or "").split() if "search_path" not in o
        )
        options = f"{options} -csearch_path={schema}".strip()
        return base.update_query_dict({"options": options}).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with engine.begin() as conn:
            for schema in created:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use `postgres_url` carry the `postgres` marker (`-m "not postgres"`)."""
    for item in items:
        if {"postgres_url", "postgres_schema"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
