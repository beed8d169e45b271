"""`paymetrics alerts deliver`: POST pending compliance alerts to the webhook;
`paymetrics alerts retry`: make failed or rejected ones deliverable again.

Registered in `paymetrics.cli` with `app.add_typer(alerts_app, name="alerts")`. It imports
`paymetrics.cli` inside the command, so that module can import this one at its top.
Meant for cron or a timer: the exit code is 1 when an alert ended `failed` in the pass.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="Deliver compliance alerts to a webhook (compliance.webhook), or retry them.",
    no_args_is_help=True,
)


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML or TOML configuration file. Default: $PAYMETRICS_CONFIG, else none",
        show_default=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="SQLAlchemy database URL (overrides storage.db_url)",
        show_default=False,
    ),
]


class DeliverFormat(StrEnum):
    """`paymetrics.cli.Format`'s table and json (that enum cannot be imported here: a cycle)."""

    table = "table"
    json = "json"


@alerts_app.command("deliver")
def deliver(
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="POST to this http(s) URL (overrides compliance.webhook.url)",
            show_default=False,
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="attempts per alert over all passes (overrides compliance.webhook.max_attempts)",
            show_default=False,
        ),
    ] = None,
    timeout_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            metavar="SECONDS",
            help="time one POST may take (overrides compliance.webhook.timeout_seconds)",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="only alerts created at or after this (ISO 8601 with offset)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="most alerts in this pass")] = 1000,
    fmt: Annotated[DeliverFormat, typer.Option("--format")] = DeliverFormat.table,
    config: ConfigFile = None,
    db: DatabaseUrl = None,
) -> None:
    """POST alerts not yet delivered (never tried, or failed with attempts left), oldest
    first, and record each outcome on the alert; exit code 1 if any ended `failed`."""
    from paymetrics.cli import (
        Fatal,
        Format,
        _emit,
        console,
        fatal_errors,
        out,
        parse_instant,
        reading_store,
    )
    from paymetrics.compliance.webhook import DELIVERED, WebhookDelivery
    from paymetrics.config import load_settings, setup_logging

    with fatal_errors():
        flags: dict[tuple[str | int, ...], Any] = {}
        for path, value in (
            (("compliance", "webhook", "url"), url),
            (("compliance", "webhook", "max_attempts"), max_attempts),
            (("compliance", "webhook", "timeout_seconds"), timeout_seconds),
            (("storage", "db_url"), db),
        ):
            if value is not None:
                flags[path] = value
        settings = load_settings(config_file=config, flags=flags).settings
        setup_logging(settings.logging, console)
        webhook = settings.compliance.webhook
        if not webhook.url:
            raise Fatal(
                "no webhook URL: give --url URL or set compliance.webhook.url in the configuration"
            )
        created_since = parse_instant(since, "--since")
        delivery = WebhookDelivery.from_settings(webhook)
        url_for_db = settings.storage.db_url.get_secret_value()
        with reading_store(url_for_db, revision="0004") as store:
            report = delivery.deliver_pending(store.engine, since=created_since, limit=limit)

    counts = report.counts()
    for result in report.results:
        if result.status != DELIVERED and result.error:
            console.print(
                f"alert {result.alert_id} ({result.alert_key}): {result.status} after "
                f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}: {result.error}",
                highlight=False,
                markup=False,
            )
    if fmt is DeliverFormat.json:
        document = {
            "webhook": delivery.shown_url,
            "counts": counts,
            "alerts": [
                {
                    "id": r.alert_id,
                    "alert_key": r.alert_key,
                    "status": r.status,
                    "attempts": r.attempts,
                    "error": r.error,
                }
                for r in report.results
            ],
        }
        out.print_json(json.dumps(document))
    else:
        rows = [{"status": status, "alerts": n} for status, n in counts.items()]
        _emit(rows, Format.table, f"webhook delivery to {delivery.shown_url}")
    if report.failed:
        raise typer.Exit(1)


class RetryStatus(StrEnum):
    failed = "failed"
    rejected = "rejected"


@alerts_app.command("retry")
def retry(
    ids: Annotated[
        list[int] | None,
        typer.Option("--id", metavar="N", help="this alert (repeatable)", show_default=False),
    ] = None,
    statuses: Annotated[
        list[RetryStatus] | None,
        typer.Option("--status", help="every alert that ended so (repeatable)", show_default=False),
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="only this rule's alerts", show_default=False),
    ] = None,
    config: ConfigFile = None,
    db: DatabaseUrl = None,
) -> None:
    """Make alerts whose delivery ended `failed` (attempts used up) or `rejected`
    deliverable again, after the receiver is fixed: the next `deliver` pass sends them
    with a fresh count of attempts. Delivered alerts are never sent again by this."""
    from paymetrics.cli import Fatal, console, fatal_errors, reading_store
    from paymetrics.compliance.webhook import reset_deliveries
    from paymetrics.config import load_settings

    with fatal_errors():
        if not ids and not statuses:
            raise Fatal("choose the alerts to retry: --id N or --status failed|rejected")
        flags: dict[tuple[str | int, ...], Any] = {("storage", "db_url"): db} if db else {}
        settings = load_settings(config_file=config, flags=flags).settings
        url_for_db = settings.storage.db_url.get_secret_value()
        with reading_store(url_for_db, revision="0004") as store:
            reset = reset_deliveries(
                store.engine,
                ids=ids or (),
                statuses=[s.value for s in statuses or ()],
                rule=rule,
            )
    console.print(
        f"{len(reset)} alert{'s' if len(reset) != 1 else ''} will be delivered again"
        + (f": {', '.join(str(i) for i in reset)}" if reset else ""),
        highlight=False,
        markup=False,
    )
