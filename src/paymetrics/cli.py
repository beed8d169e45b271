"""The `paymetrics` command line: run, simulate, query, bench, demo, db.

Fatal errors print one line naming the cause and exit non-zero; database URLs
are shown with the password hidden.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from paymetrics import __version__

if TYPE_CHECKING:
    from paymetrics.config import ConfigManager
    from paymetrics.storage.sql import SqlStore

__all__ = ["app", "main"]

app = typer.Typer(
    name="paymetrics",
    help="Payment events in, trustworthy payment metrics out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
query_app = typer.Typer(
    help="Read stored metrics, config-defined metrics and dead letters.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema: upgrade and inspect.", no_args_is_help=True)
app.add_typer(query_app, name="query")
app.add_typer(db_app, name="db")


def _config_app() -> typer.Typer:
    from paymetrics.config.cli import config_app

    return config_app


app.add_typer(_config_app(), name="config")


def _register_query_raw() -> None:
    from paymetrics.archive.cli import query_raw

    query_app.command("raw")(query_raw)


_register_query_raw()

console = Console(stderr=True, soft_wrap=True)  # one error, one line
out = Console(soft_wrap=True)

DEFAULT_DATA_DIR = Path("paymetrics-data")
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="SQLAlchemy database URL. Default: $PAYMETRICS_DB_URL, else "
        "sqlite:///paymetrics-data/paymetrics.db",
        show_default=False,
    ),
]


T = TypeVar("T")


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Fatal(Exception):
    """An error that ends the command with one line and exit code 2."""


def db_url(option: str | None) -> str:
    """--db, else the configuration's storage.db_url (file, environment, default)."""
    if option:
        return option
    from paymetrics.config import load_settings

    return load_settings().settings.storage.db_url.get_secret_value()


def parse_instant(text: str | None, name: str) -> dt.datetime | None:
    """ISO 8601 with an offset (or a bare date, taken as UTC midnight) → aware UTC."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 date-time", param_hint=name
        ) from None
    if value.tzinfo is None:
        if len(text) == 10:
            return value.replace(tzinfo=dt.UTC)
        raise typer.BadParameter(f"{text!r} has no UTC offset; add Z or ±hh:mm", param_hint=name)
    return value.astimezone(dt.UTC)


@contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn expected failures into one clear line on stderr and exit code 2."""
    import sqlalchemy as sa

    from paymetrics.config.loader import ConfigError
    from paymetrics.storage.base import CheckpointConflict, StoreUnavailable

    try:
        yield
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    except StoreUnavailable as error:
        console.print(f"[red]error:[/red] database: {error}", highlight=False)
        raise typer.Exit(2) from None
    except (Fatal, ValueError, FileNotFoundError, CheckpointConflict) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    except sa.exc.OperationalError as error:
        cause = str(error.orig).splitlines()[0] if error.orig else str(error).splitlines()[0]
        console.print(f"[red]error:[/red] database: {cause}", highlight=False)
        raise typer.Exit(2) from None


class _StopFlag:
    """SIGINT/SIGTERM: finish the batch in flight, then stop."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signal.Signals(signum).name


# -- run -------------------------------------------------------------------------


def execute_run(
    manager: ConfigManager,
    *,
    expected_total: int | None = None,
    show_progress: bool = True,
    hot_reload: bool = False,
    watch: bool = False,
    until_idle_seconds: float | None = None,
) -> dict[str, Any]:
    """Run the pipeline; returns the summary. Shared by `run`, `demo` and `bench`.

    With `hot_reload`, SIGHUP reloads the configuration at the next batch
    boundary; with `watch` too, so do edits of the file (and App Configuration).
    """
    from paymetrics.archive import ParquetArchive
    from paymetrics.dead_letter_topic import DeadLetterTopic
    from paymetrics.observability import ProgressLog, PrometheusMetrics
    from paymetrics.pipeline import BatchReport, Pipeline
    from paymetrics.sources import open_source
    from paymetrics.storage import open_store

    settings = manager.settings
    if not settings.source.url:
        raise Fatal("no source: give --source SPEC or set source.url in the configuration")
    source = open_source(settings.source.url, settings.source.client_options())
    source.batch_max_seconds = settings.batching.batch_max_seconds
    if until_idle_seconds is not None and hasattr(source, "idle_seconds"):
        source.idle_seconds = until_idle_seconds
    store = open_store(
        settings.storage.db_url.get_secret_value(),
        pool_size=settings.storage.pool_size,
        pool_max_overflow=settings.storage.pool_max_overflow,
        pool_timeout_seconds=settings.storage.pool_timeout_seconds,
    )
    archive_url = settings.storage.archive_url
    archive = (
        ParquetArchive(archive_url, **settings.storage.archive_storage_options())
        if archive_url
        else None
    )
    dead_letter_topic = (
        DeadLetterTopic(
            settings.dead_letters.topic_url,
            options=settings.dead_letters.client_options(),
            flush_timeout_seconds=settings.dead_letters.flush_timeout_seconds,
        )
        if settings.dead_letters.topic_url
        else None
    )
    stop = _StopFlag()
    stop.install()
    metrics: PrometheusMetrics | None = None
    if hot_reload:
        signal.signal(signal.SIGHUP, lambda *_: manager.request_reload("SIGHUP"))
    try:
        store.prepare()
        options = manager.attach(store)
        if hot_reload and watch:
            manager.watch()
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not show_progress,
        )
        monitoring = settings.monitoring
        reporter = ProgressLog(source.source_id, monitoring.progress_log_seconds)
        if monitoring.metrics_port is not None:
            metrics = PrometheusMetrics(source.source_id)
            port = metrics.serve(monitoring.metrics_host, monitoring.metrics_port)
            logging.getLogger("paymetrics.progress").info(
                "Prometheus metrics at http://%s:%d/metrics", monitoring.metrics_host, port
            )
        from paymetrics.compliance.webhook import delivering_in_background

        webhook = delivering_in_background(settings.compliance, getattr(store, "engine", None))
        with progress, source, webhook:
            task = progress.add_task("processing", total=expected_total)

            def advance(report: BatchReport) -> None:
                progress.advance(task, report.counts.messages)
                lag = source.lag()
                reporter.observe(report, lag)
                if metrics is not None:
                    metrics.observe(report, lag)

            pipeline = Pipeline(store, archive, options, dead_letter_topic=dead_letter_topic)
            stats = pipeline.run(
                source,
                on_batch=advance,
                should_stop=stop,
                between_batches=manager.between_batches if hot_reload else None,
            )
            reporter.flush(source.lag())
        totals = _retrying(store.table_counts)
    finally:
        if metrics is not None:
            metrics.close()
        if dead_letter_topic is not None:
            dead_letter_topic.close()
        manager.close()
        store.close()
    return {
        "source": source.source_id,
        "database": store.url_for_display,
        "archive": "**********"
        if ("storage", "archive_url") in manager.loaded.secret_paths
        else archive_url,
        "config_version": manager.applied.version if manager.applied else None,
        "events_in": stats.messages,
        "normalized": stats.normalized,
        "duplicates": stats.duplicates,
        "dead_lettered": stats.dead_lettered,
        "batches": stats.batches,
        "metric_rows_touched": stats.metric_rows_touched,
        "tables": totals,
        "approval_rate": stats.approval_rate,
        "elapsed_seconds": stats.elapsed_seconds,
        "events_per_second": stats.events_per_second,
        "stage_seconds": stats.stage_seconds,
        "stopped_by": stop.signal,
    }


def _retrying(read: Callable[[], T], attempts: int = 6) -> T:
    """A read-only call retried briefly across a dropped connection (the pool reconnects)."""
    import time

    from paymetrics.storage.base import is_transient

    for attempt in range(attempts):
        try:
            return read()
        except Exception as error:
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def hermetic_run(
    source_spec: str,
    db: str,
    archive_url: str | None,
    batch_max_events: int,
    *,
    expected_total: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """A run on built-in defaults plus these values only (no file, no environment)."""
    from paymetrics.config import ConfigManager

    manager = ConfigManager(
        environ={},
        flags={
            ("source", "url"): source_spec,
            ("storage", "db_url"): db,
            ("storage", "archive_url"): archive_url,
            ("batching", "batch_max_events"): batch_max_events,
        },
        applied_by="paymetrics demo",
    )
    return execute_run(manager, expected_total=expected_total, show_progress=show_progress)


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="paymetrics run", show_header=False, title_justify="left")
    rate = summary["approval_rate"]
    rows = [
        ("events in", f"{summary['events_in']:,}"),
        ("normalized (new events stored)", f"{summary['normalized']:,}"),
        ("duplicates", f"{summary['duplicates']:,}"),
        ("dead-lettered", f"{summary['dead_lettered']:,}"),
        (
            "windows written",
            f"{summary['metric_rows_touched']:,} metric row updates; the database now holds "
            f"{summary['tables']['payment_metrics_5m']:,} rows over "
            f"{summary['tables']['windows']:,} five-minute windows",
        ),
        ("overall approval rate", "n/a" if rate is None else f"{rate:.2%}"),
        ("time taken", f"{summary['elapsed_seconds']:.2f} s"),
        ("throughput", f"{summary['events_per_second']:,.0f} events/s"),
        ("database", summary["database"]),
        ("raw archive", summary["archive"] or "(disabled)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if summary["stopped_by"]:
        console.print(
            f"stopped by {summary['stopped_by']} after the batch in flight; "
            "run the same command again to continue"
        )


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML or TOML configuration file. Default: $PAYMETRICS_CONFIG, else none "
        "(built-in defaults)",
        show_default=False,
    ),
]


@app.command()
def run(
    config: ConfigOption = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            "-s",
            metavar="SPEC",
            help="file:PATH, simulator:?events=N&seed=S or kafka://host:port/topic?group=NAME "
            "(overrides source.url)",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    archive: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="fsspec URL of the raw Parquet archive (overrides storage.archive_url; "
            "default paymetrics-data/raw)",
            show_default=False,
        ),
    ] = None,
    no_archive: Annotated[
        bool, typer.Option("--no-archive", help="do not write the raw archive")
    ] = False,
    batch_max_events: Annotated[
        int | None,
        typer.Option(metavar="N", help="messages per batch (default 50000)", show_default=False),
    ] = None,
    max_lateness_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="an event older than the newest seen on its partition by more than this "
            "is dead-lettered as too_late (default 604800: 7 days)",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch/--no-watch",
            help="apply edits of the configuration file at batch boundaries "
            "(SIGHUP reloads either way)",
        ),
    ] = True,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            metavar="SECONDS",
            help="broker sources: exit 0 (after committing) once no message arrived for this long",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="serve Prometheus metrics on monitoring.metrics_host:PORT/metrics "
            "(0: any free port; overrides monitoring.metrics_port)",
            show_default=False,
        ),
    ] = None,
    summary_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Process a source to its end (a broker source: until stopped or idle): store
    events, dead letters, metrics, checkpoint."""
    from paymetrics.config import ConfigManager, setup_logging

    flags: dict[tuple[str | int, ...], Any] = {}
    for path, value in (
        (("source", "url"), source),
        (("storage", "db_url"), db),
        (("storage", "archive_url"), archive),
        (("batching", "batch_max_events"), batch_max_events),
        (("lateness", "max_lateness_seconds"), max_lateness_seconds),
        (("monitoring", "metrics_port"), metrics_port),
    ):
        if value is not None:
            flags[path] = value
    if no_archive:
        flags[("storage", "archive_url")] = None
    with fatal_errors():
        manager = ConfigManager(config_file=config, flags=flags)
        setup_logging(manager.settings.logging, console)
        summary = execute_run(
            manager,
            show_progress=not quiet and not summary_json,
            hot_reload=True,
            watch=watch,
            until_idle_seconds=until_idle,
        )
    if summary_json:
        out.print_json(json.dumps(summary))
    else:
        print_summary(summary)


# -- simulate --------------------------------------------------------------------


@app.command()
def simulate(
    events: Annotated[int, typer.Option(min=0, help="how many messages to write")] = 1000,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    start: Annotated[
        str | None, typer.Option(help="RFC 3339 start, e.g. 2026-01-01T00:00:00Z")
    ] = None,
    rate_invalid: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    rate_duplicate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    rate_late: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    rate_pan_leak: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    scenario: Annotated[
        str,
        typer.Option(
            help="baseline, decline_spike, latency_degradation, large_transaction, "
            "daily_aggregate, structuring or velocity"
        ),
    ] = "baseline",
    output: Annotated[str, typer.Option("--output", "-o", help="file path, or - for stdout")] = "-",
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="URL",
            help=(
                "publish to a broker instead: kafka://host:port/topic or "
                "eventhubs://NAMESPACE/HUB (keyed by merchant; Event Hubs connects with "
                "$PAYMETRICS_EVENTHUBS_CONNECTION_STRING, else DefaultAzureCredential)"
            ),
            show_default=False,
        ),
    ] = None,
    events_per_second: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="with --to: publish at this rate (default: as fast as possible)"
        ),
    ] = None,
) -> None:
    """Write simulated payment events as JSON Lines (deterministic per seed), or publish
    them to a broker."""
    from paymetrics.simulator import SimulatorConfig, write_jsonl

    with fatal_errors():
        config = SimulatorConfig(
            events=events,
            seed=seed,
            rate_invalid=rate_invalid,
            rate_duplicate=rate_duplicate,
            rate_late=rate_late,
            rate_pan_leak=rate_pan_leak,
            scenario=scenario,
        )
        if (first := parse_instant(start, "--start")) is not None:
            config = dataclasses.replace(config, start=first)
        if to is not None:
            if output != "-":
                raise Fatal("give either --to URL or --output FILE, not both")
            from paymetrics.simulator.publish import publish_eventhubs, publish_kafka

            publish = publish_eventhubs if to.startswith("eventhubs:") else publish_kafka
            count = publish(config, to, events_per_second=events_per_second)
            console.print(f"published {count:,} events to {to}")
            return
        if output == "-":
            write_jsonl(config, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            path = Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                count = write_jsonl(config, handle)
            console.print(f"wrote {count:,} events to {path}")


# -- query -----------------------------------------------------------------------


def _emit(rows: Sequence[dict[str, Any]], fmt: Format, title: str) -> None:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, dt.datetime) else value

    if fmt is Format.json:
        out.print_json(json.dumps([{k: plain(v) for k, v in row.items()} for row in rows]))
        return
    if fmt is Format.csv:
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: plain(v) for k, v in row.items()} for row in rows)
        sys.stdout.write(buffer.getvalue())
        return
    table = Table(title=title, title_justify="left")
    if not rows:
        out.print(f"{title}: no rows")
        return
    for name in rows[0]:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(plain(v)) for v in row.values()))
    out.print(table)


@contextmanager
def reading_store(url: str, revision: str = "0001") -> Iterator[SqlStore]:
    """An existing database at `revision` or later, opened without creating or migrating."""
    import sqlalchemy as sa

    from paymetrics.storage import open_store
    from paymetrics.storage.migrate import current_revision
    from paymetrics.storage.sql import SqlStore

    database = sa.make_url(url).database
    if url.startswith("sqlite") and database and not Path(database).exists():
        raise Fatal(f"no database file at {database}")
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        current = current_revision(store.engine)  # reading must not take the write lock
        if current is None or current < revision:
            raise Fatal(
                f"database {store.url_for_display} has no paymetrics tables "
                f"{'yet' if current is None else 'for this (schema ' + current + ')'}; "
                "run `paymetrics run` or `paymetrics db upgrade` first"
            )
        yield store
    finally:
        store.close()


def _query(statement: Any, db: str | None) -> list[dict[str, Any]]:
    with reading_store(db_url(db)) as store, store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(statement).mappings()]


@query_app.command("metrics")
def query_metrics(
    merchant: Annotated[str | None, typer.Option(help="merchant_id")] = None,
    start: Annotated[str | None, typer.Option("--from", help="window_start >= this")] = None,
    end: Annotated[str | None, typer.Option("--to", help="window_start < this")] = None,
    payment_method: Annotated[
        str | None, typer.Option(help="card, wallet, bank_transfer, bnpl")
    ] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 1000,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    db: DbOption = None,
) -> None:
    """payment_metrics_5m rows, oldest window first."""
    import sqlalchemy as sa

    from paymetrics.storage.tables import payment_metrics_5m as t

    with fatal_errors():
        stmt = sa.select(t)
        if merchant is not None:
            stmt = stmt.where(t.c.merchant_id == merchant)
        if payment_method is not None:
            stmt = stmt.where(t.c.payment_method == payment_method)
        if currency is not None:
            stmt = stmt.where(t.c.currency == currency.upper())
        if (lo := parse_instant(start, "--from")) is not None:
            stmt = stmt.where(t.c.window_start >= lo)
        if (hi := parse_instant(end, "--to")) is not None:
            stmt = stmt.where(t.c.window_start < hi)
        stmt = stmt.order_by(t.c.window_start, t.c.merchant_id, t.c.payment_method, t.c.currency)
        _emit(_query(stmt.limit(limit), db), fmt, "payment_metrics_5m")


@query_app.command("dynamic")
def query_dynamic(
    metric: Annotated[str | None, typer.Option(help="metric_name (a rule's name)")] = None,
    start: Annotated[str | None, typer.Option("--from", help="window_start >= this")] = None,
    end: Annotated[str | None, typer.Option("--to", help="window_start < this")] = None,
    version: Annotated[
        int | None, typer.Option(help="only rows computed by this config version")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 1000,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    db: DbOption = None,
) -> None:
    """dynamic_metrics rows (config-defined metrics), oldest window first."""
    import sqlalchemy as sa

    from paymetrics.storage.tables import dynamic_metrics as t

    with fatal_errors():
        stmt = sa.select(
            t.c.metric_name,
            t.c.window_start,
            t.c.window_seconds,
            t.c.dimensions,
            t.c.value,
            t.c.aggregate,
            t.c.count,
            t.c.config_version,
        )
        if metric is not None:
            stmt = stmt.where(t.c.metric_name == metric)
        if version is not None:
            stmt = stmt.where(t.c.config_version == version)
        if (lo := parse_instant(start, "--from")) is not None:
            stmt = stmt.where(t.c.window_start >= lo)
        if (hi := parse_instant(end, "--to")) is not None:
            stmt = stmt.where(t.c.window_start < hi)
        stmt = stmt.order_by(t.c.window_start, t.c.metric_name, t.c.dimensions, t.c.config_version)
        with reading_store(db_url(db), revision="0002") as store, store.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(stmt.limit(limit)).mappings()]
        _emit(rows, fmt, "dynamic_metrics")


@query_app.command("histogram")
def query_histogram(
    name: Annotated[str, typer.Option(help="the histogram's name (`histograms[].name`)")],
    since: Annotated[str | None, typer.Option(help="window_start >= this")] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """A config-defined histogram, windows merged, per group: cumulative counts per
    upper bound (Prometheus `le`, +Inf last) and p50/p90/p95/p99 interpolated in buckets."""
    import sqlalchemy as sa

    from paymetrics.config import load_settings
    from paymetrics.metrics.histograms import HISTOGRAM_PREFIX, cumulative, percentile
    from paymetrics.storage.tables import aggregate_histograms as t

    with fatal_errors():
        settings = load_settings(config_file=config).settings
        spec = next((h for h in settings.histograms if h.name == name), None)
        if spec is None:
            known = ", ".join(sorted(h.name for h in settings.histograms)) or "(none configured)"
            raise Fatal(f"no histogram {name!r} in the configuration; histograms: {known}")
        stmt = (
            sa.select(t.c.dimensions, t.c.bucket, sa.func.sum(t.c["count"]).label("count"))
            .where(t.c.histogram == HISTOGRAM_PREFIX + name)
            .group_by(t.c.dimensions, t.c.bucket)
        )
        if (lo := parse_instant(since, "--since")) is not None:
            stmt = stmt.where(t.c.window_start >= lo)
        url = db or settings.storage.db_url.get_secret_value()
        with reading_store(url) as store, store.engine.connect() as conn:
            found = conn.execute(stmt).all()
        bounds = spec.buckets
        groups: dict[str, list[int]] = {}
        for dimensions, bucket, count in found:
            counts = groups.setdefault(dimensions, [0] * (len(bounds) + 1))
            counts[min(int(bucket), len(bounds))] += int(count)
        labels = [f"{b:g}" for b in bounds] + ["+Inf"]
        rows = []
        for dimensions, counts in sorted(groups.items()):
            running = cumulative(counts)
            row: dict[str, Any] = {"dimensions": dimensions, "count": int(running[-1])}
            for q in (50, 90, 95, 99):
                row[f"p{q}"] = percentile(bounds, counts, q / 100)
            row["buckets"] = json.dumps(
                dict(zip(labels, (int(c) for c in running), strict=True)), separators=(",", ":")
            )
            rows.append(row)
        _emit(rows, fmt, f"histogram {name}")


@query_app.command("dlq")
def query_dlq(
    reason: Annotated[str | None, typer.Option(help="reason code, e.g. invalid_type")] = None,
    source: Annotated[str | None, typer.Option(help="source id")] = None,
    start: Annotated[str | None, typer.Option("--from", help="first_seen_at >= this")] = None,
    end: Annotated[str | None, typer.Option("--to", help="first_seen_at < this")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="counts per reason")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    db: DbOption = None,
) -> None:
    """Dead letters (failed_items): reason, message, position, masked payload."""
    import sqlalchemy as sa

    from paymetrics.storage.tables import failed_items as t

    with fatal_errors():
        filters = []
        if reason is not None:
            filters.append(t.c.reason == reason)
        if source is not None:
            filters.append(t.c.source_id == source)
        if (lo := parse_instant(start, "--from")) is not None:
            filters.append(t.c.first_seen_at >= lo)
        if (hi := parse_instant(end, "--to")) is not None:
            filters.append(t.c.first_seen_at < hi)
        if summary:
            stmt = (
                sa.select(t.c.reason, sa.func.count().label("count"))
                .where(*filters)
                .group_by(t.c.reason)
                .order_by(sa.desc("count"))
            )
        else:
            stmt = (
                sa.select(
                    t.c.source_id,
                    t.c.partition,
                    t.c.position,
                    t.c.reason,
                    t.c.message,
                    t.c.event_id,
                    t.c.payload,
                    t.c.first_seen_at,
                )
                .where(*filters)
                .order_by(t.c.source_id, t.c.partition, t.c.position)
                .limit(limit)
            )
        _emit(_query(stmt, db), fmt, "failed_items")


@query_app.command("alerts")
def query_alerts(
    rule: Annotated[str | None, typer.Option(help="rule name, e.g. velocity")] = None,
    since: Annotated[str | None, typer.Option(help="created_at >= this")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="delivery_status: pending (not yet), delivered, failed, rejected"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 1000,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    db: DbOption = None,
) -> None:
    """Compliance alerts (compliance_alerts), oldest period first."""
    import sqlalchemy as sa

    from paymetrics.storage.tables import compliance_alerts as t

    with fatal_errors():
        stmt = sa.select(
            t.c.id,
            t.c.rule,
            t.c.severity,
            t.c.subject_type,
            t.c.subject_id,
            t.c.period_start,
            t.c.period_seconds,
            t.c.measured_value,
            t.c.threshold,
            t.c.currency,
            t.c.evidence_event_ids,
            t.c.evidence,
            t.c.created_at,
            t.c.config_version,
            t.c.delivery_status,
            t.c.delivery_attempts,
            t.c.delivered_at,
        )
        if status is not None:
            statuses = ("pending", "delivered", "failed", "rejected")
            if status not in statuses:
                raise Fatal(f"--status: unknown status {status!r}; valid: {', '.join(statuses)}")
            pending = sa.or_(t.c.delivery_status.is_(None), t.c.delivery_status == "pending")
            stmt = stmt.where(pending if status == "pending" else t.c.delivery_status == status)
        if rule is not None:
            from paymetrics.compliance import RULES

            if rule not in RULES:
                raise Fatal(f"--rule: unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
            stmt = stmt.where(t.c.rule == rule)
        if (lo := parse_instant(since, "--since")) is not None:
            stmt = stmt.where(t.c.created_at >= lo)
        stmt = stmt.order_by(t.c.period_start, t.c.rule, t.c.subject_type, t.c.subject_id)
        with reading_store(db_url(db), revision="0004") as store, store.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(stmt.limit(limit)).mappings()]
        _emit(rows, fmt, "compliance_alerts")


# -- db --------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create or upgrade the schema to the newest revision."""
    from paymetrics.storage import open_store
    from paymetrics.storage.migrate import head_revision

    with fatal_errors():
        store = open_store(db_url(db))
        try:
            store.prepare()
        finally:
            store.close()
        console.print(f"{store.url_for_display}: at revision {head_revision()}")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the schema revision of the database."""
    from paymetrics.storage import open_store
    from paymetrics.storage.migrate import current_revision
    from paymetrics.storage.sql import SqlStore

    with fatal_errors():
        store = open_store(db_url(db))
        assert isinstance(store, SqlStore)
        try:
            out.print(current_revision(store.engine) or "(empty database)")
        finally:
            store.close()


# -- retention -------------------------------------------------------------------

retention_app = typer.Typer(help="Delete data older than its configured age.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


def _alerts_app() -> typer.Typer:
    from paymetrics.compliance.cli import alerts_app

    return alerts_app


app.add_typer(_alerts_app(), name="alerts")


@retention_app.command("apply")
def retention_apply(
    config: ConfigOption = None,
    db: DbOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would go, delete nothing")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(
            metavar="ISO8601",
            help="measure ages from this instant instead of the current time",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Delete raw partitions, events, dead letters and metrics older than `retention.*`."""
    from paymetrics.config import load_settings
    from paymetrics.retention import apply_retention

    with fatal_errors():
        flags: dict[tuple[str | int, ...], Any] = {} if db is None else {("storage", "db_url"): db}
        settings = load_settings(config_file=config, flags=flags).settings
        instant = parse_instant(now, "--now") or dt.datetime.now(dt.UTC)
        archive_fs = archive_root = None
        if settings.storage.archive_url:
            import fsspec

            archive_fs, archive_root = fsspec.core.url_to_fs(
                settings.storage.archive_url, **settings.storage.archive_storage_options()
            )
        with reading_store(settings.storage.db_url.get_secret_value()) as store:
            report = apply_retention(
                store.engine,
                settings,
                now=instant,
                dry_run=dry_run,
                archive_fs=archive_fs,
                archive_root=archive_root,
            )
    title = "retention (dry run: nothing deleted)" if dry_run else "retention applied"
    _emit(report.rows(), fmt, title)


# -- replay ----------------------------------------------------------------------


@app.command()
def replay(
    from_: Annotated[
        str, typer.Option("--from", metavar="ISO8601", help="start of the range (inclusive)")
    ],
    to: Annotated[
        str, typer.Option("--to", metavar="ISO8601", help="end of the range (exclusive)")
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            metavar="NAME",
            help="a metric rule to recompute (repeatable). Default: every rule in metrics",
            show_default=False,
        ),
    ] = None,
    alerts: Annotated[
        bool | None,
        typer.Option(
            "--alerts/--no-alerts",
            help="also judge the replayed events with the compliance rules, adding alerts "
            "never raised before. Default: on when compliance is enabled and no --metric",
            show_default=False,
        ),
    ] = None,
    open_windows: Annotated[
        bool,
        typer.Option(
            "--open-windows",
            help="replay windows that may still receive events (stop the workers first)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="compute and report, change nothing")
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    archive: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="the raw archive (overrides storage.archive_url)",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Recompute metric rules (and compliance alerts) for a time range from the raw
    archive, replacing the metrics' rows in the range: after a rule change, or to
    backfill a new rule."""
    from paymetrics.config import ConfigManager, setup_logging
    from paymetrics.replay import ReplayError, run_replay
    from paymetrics.storage import open_store
    from paymetrics.storage.sql import SqlStore

    start = parse_instant(from_, "--from")
    end = parse_instant(to, "--to")
    assert start is not None
    assert end is not None
    flags: dict[tuple[str | int, ...], Any] = {}
    if db is not None:
        flags[("storage", "db_url")] = db
    if archive is not None:
        flags[("storage", "archive_url")] = archive
    with fatal_errors():
        manager = ConfigManager(config_file=config, flags=flags)
        setup_logging(manager.settings.logging, console)
        settings = manager.settings
        if not settings.storage.archive_url:
            raise Fatal(
                "replay reads the raw archive: give --archive URL or set storage.archive_url"
            )
        store = open_store(settings.storage.db_url.get_secret_value())
        try:
            store.prepare()
            options = manager.attach(store, reason="replay")
            assert isinstance(store, SqlStore)
            judge = (options.compliance is not None and not metric) if alerts is None else alerts
            try:
                report = run_replay(
                    store,
                    options,
                    archive_url=settings.storage.archive_url,
                    storage_options=settings.storage.archive_storage_options(),
                    start=start,
                    end=end,
                    metrics=metric or (),
                    alerts=judge,
                    open_windows=open_windows,
                    dry_run=dry_run,
                )
            except ReplayError as error:
                raise Fatal(str(error)) from None
        finally:
            manager.close()
            store.close()
    summary = report.as_dict()
    if fmt is Format.json:
        out.print_json(json.dumps(summary))
        return
    ranges = summary.pop("ranges")
    rows = [{"key": k, "value": "-" if v is None else str(v)} for k, v in summary.items()]
    rows += [
        {"key": f"range of {name}", "value": f"{lo} .. {hi}"} for name, (lo, hi) in ranges.items()
    ]
    _emit(rows, fmt, "replay (dry run: nothing changed)" if dry_run else "replay")


# -- demo and bench --------------------------------------------------------------


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=1, help="how many events to simulate")] = 1_000_000,
    data_dir: Annotated[Path, typer.Option(help="where the demo writes")] = DEFAULT_DATA_DIR,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Simulate events with realistic defects, run the pipeline, print a summary."""
    from paymetrics.demo import run_demo

    with fatal_errors():
        run_demo(events=events, data_dir=data_dir, seed=seed)


@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1, help="events in the generated file")] = 1_000_000,
    work_dir: Annotated[Path, typer.Option(help="where generated input and outputs go")] = Path(
        "bench-data"
    ),
    batch_max_events: Annotated[int, typer.Option(min=1)] = 50_000,
    cores: Annotated[int, typer.Option(min=1, help="CPU cores the run may use")] = 1,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="measure against this database (PostgreSQL: in a schema created for the run "
            "and dropped after). Default: a fresh SQLite file",
            show_default=False,
        ),
    ] = None,
    workload: Annotated[
        str,
        typer.Option(
            help="none: embedded defaults; rules: 20 metric rules and all compliance rules"
        ),
    ] = "none",
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="measure workloads none and rules alternately and print the rules' cost",
        ),
    ] = False,
    repeat: Annotated[int, typer.Option(min=1, help="runs per workload with --compare")] = 3,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Measure end-to-end and per-stage throughput and peak RSS on a generated file."""
    from paymetrics import bench as benchmark

    if workload not in benchmark.WORKLOADS:
        raise typer.BadParameter(
            f"unknown workload {workload!r}; valid workloads: {', '.join(benchmark.WORKLOADS)}",
            param_hint="--workload",
        )
    options: dict[str, Any] = dict(
        events=events, work_dir=work_dir, batch_max_events=batch_max_events, cores=cores, db=db
    )
    with fatal_errors():
        if compare:
            result = benchmark.compare_workloads(repeat=repeat, **options)
        else:
            result = benchmark.run_bench(workload=workload, **options)
    if fmt is Format.json:
        out.print_json(json.dumps(result))
    elif compare:
        benchmark.print_comparison(result, out)
    else:
        benchmark.print_bench(result, out)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print the version")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main() -> None:
    app()
