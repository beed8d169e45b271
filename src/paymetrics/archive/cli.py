"""`paymetrics query raw`: archived events by id, merchant and time, as archived (masked).

Registered in `paymetrics.cli` with `query_app.command("raw")(query_raw)`. It imports
`paymetrics.cli` inside the function, so that module can import this one at its top.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

__all__ = ["query_raw"]

# The table leaves out the long, repetitive provenance columns; json and csv have all.
TABLE_COLUMNS = ("occurred_at", "event_id", "event_type", "merchant_id", "pan_exposure", "payload")


class RawFormat(StrEnum):
    """`paymetrics.cli.Format`'s values (that enum cannot be imported here: a cycle)."""

    table = "table"
    json = "json"
    csv = "csv"


def query_raw(
    event_id: Annotated[str | None, typer.Option("--event-id", help="event_id")] = None,
    transaction_id: Annotated[
        str | None, typer.Option("--transaction-id", help="transaction_id")
    ] = None,
    merchant: Annotated[str | None, typer.Option("--merchant", help="merchant_id")] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="occurred_at >= this (ISO 8601 with offset, or a date)"),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="occurred_at < this")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    fmt: Annotated[RawFormat, typer.Option("--format")] = RawFormat.table,
    archive: Annotated[
        str | None,
        typer.Option(
            "--archive",
            metavar="URL",
            help="fsspec URL of the raw archive (default: storage.archive_url; its "
            "credentials always come from storage.archive_options)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Raw archived events (masked payloads), oldest first; give --from/--to to read less."""
    from rich.markup import escape

    from paymetrics.archive.query import find_raw
    from paymetrics.archive.storage import HIDDEN, ArchiveError, display_url
    from paymetrics.cli import Fatal, Format, _emit, fatal_errors, parse_instant
    from paymetrics.config import load_settings

    with fatal_errors():
        lo = parse_instant(start, "--from")
        hi = parse_instant(end, "--to")
        loaded = load_settings()
        storage = loaded.settings.storage
        url = archive or storage.archive_url
        if not url:
            raise Fatal("no archive: give --archive URL or set storage.archive_url")
        try:
            rows = find_raw(
                url,
                event_id=event_id,
                transaction_id=transaction_id,
                merchant_id=merchant,
                start=lo,
                end=hi,
                limit=limit,
                storage_options=storage.archive_storage_options(),
            )
        except ArchiveError as error:
            message = str(error)
            if archive is None and ("storage", "archive_url") in loaded.secret_paths:
                message = message.replace(display_url(url), HIDDEN)
            raise Fatal(escape(message)) from None
        if fmt is RawFormat.table:
            title = "raw archive (--format json or csv for every column)"
            _emit(rows.select(list(TABLE_COLUMNS)).to_pylist(), Format.table, title)
        else:
            _emit(rows.to_pylist(), Format(fmt.value), "raw archive")
