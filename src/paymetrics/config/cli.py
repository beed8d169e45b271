"""`paymetrics config validate | schema | show | history`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from paymetrics.config.loader import LoadedConfig, Path_, format_path, load_settings

__all__ = ["config_app", "redacted"]

config_app = typer.Typer(
    help="Validate, inspect and trace the configuration.", no_args_is_help=True
)
REDACTED = "**********"


class ShowFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _consoles() -> tuple[Any, Any]:
    from paymetrics.cli import console, out

    return console, out


def redacted(loaded: LoadedConfig) -> dict[str, Any]:
    """The effective settings as plain values, every secret hidden.

    Secret fields show `**********`, except a database URL, which shows with its
    password hidden; any value that came from a secret reference is hidden whole.
    """

    def walk(value: Any, path: Path_) -> Any:
        if path in loaded.secret_paths:
            return REDACTED
        if isinstance(value, SecretStr):
            if path == ("storage", "db_url"):
                import sqlalchemy as sa

                return sa.make_url(value.get_secret_value()).render_as_string(hide_password=True)
            return REDACTED
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    plain = loaded.settings.model_dump(mode="python")
    return {k: walk(v, (k,)) for k, v in plain.items()}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _rows(values: Any, path: Path_, loaded: LoadedConfig) -> list[tuple[str, str, str]]:
    if isinstance(values, dict) and values:
        rows: list[tuple[str, str, str]] = []
        for key, value in values.items():
            rows += _rows(value, (*path, key), loaded)
        return rows
    shown = json.dumps(values, default=str, ensure_ascii=False)
    return [(format_path(path), shown, loaded.origin(path))]


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", help="Default: $PAYMETRICS_CONFIG", show_default=False
    ),
]


@config_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="YAML or TOML configuration")],
) -> None:
    """Check a configuration (with the environment, as `run` would see it); every problem
    is listed with its path, and the exit code is 1 when there is any."""
    from rich.markup import escape

    from paymetrics.config.loader import ConfigError

    console, out = _consoles()
    try:
        loaded = load_settings(config_file=file)
    except ConfigError as error:
        console.print(f"[red]invalid:[/red] {escape(str(error))}", highlight=False)
        raise typer.Exit(1) from None
    rules = len(loaded.settings.metrics)
    out.print(f"{file}: valid ({rules} metric rule{'s' if rules != 1 else ''})", highlight=False)


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of the configuration."""
    from paymetrics.config.model import Settings

    _, out = _consoles()
    out.print_json(json.dumps(Settings.model_json_schema()))


@config_app.command("show")
def show(
    config: ConfigFile = None,
    fmt: Annotated[ShowFormat, typer.Option("--format")] = ShowFormat.table,
) -> None:
    """Print the effective configuration, secrets hidden, and where each value came from."""
    from paymetrics.cli import fatal_errors

    _console, out = _consoles()
    with fatal_errors():
        loaded = load_settings(config_file=config)
    values = redacted(loaded)
    if fmt is ShowFormat.json:
        out.print_json(json.dumps(_jsonable(values)))
        return
    if fmt is ShowFormat.yaml:
        import yaml

        out.print(yaml.safe_dump(_jsonable(values), sort_keys=False), end="", highlight=False)
        return
    from rich.table import Table

    table = Table(title="effective configuration", title_justify="left")
    for name in ("setting", "value", "from"):
        table.add_column(name, overflow="fold")
    for row in _rows(values, (), loaded):
        table.add_row(*row)
    out.print(table)


@config_app.command("history")
def history(
    diff: Annotated[
        tuple[int, int] | None,
        typer.Option(metavar="OLD NEW", help="show what changed between two versions"),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", metavar="URL", help="SQLAlchemy database URL", show_default=False),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """List recorded config versions, or diff two of them."""
    from paymetrics.cli import Fatal, db_url, fatal_errors
    from paymetrics.config.versions import diff_documents

    _console, out = _consoles()
    with fatal_errors():
        versions = _history(db_url(db))
        if diff is not None:
            by_id = {v.version: v for v in versions}
            missing = [v for v in diff if v not in by_id]
            if missing:
                known = ", ".join(str(v) for v in by_id) or "none"
                raise Fatal(f"no config version {missing[0]}; recorded versions: {known}")
            old, new = (by_id[v] for v in diff)
            text = diff_documents(
                old.document, new.document, f"version {old.version}", f"version {new.version}"
            )
            out.print(text or "(no difference)", highlight=False, markup=False)
            return
    rows = [
        {
            "version": v.version,
            "applied_at": v.applied_at.isoformat(),
            "last_applied_at": v.last_applied_at.isoformat(),
            "applied_by": v.applied_by,
            "origin": v.origin,
            "metric_rules": ", ".join(v.document.get("metrics", {})) or "-",
            "content_hash": v.content_hash[:12],
        }
        for v in versions
    ]
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    from paymetrics.cli import Format, _emit

    _emit(rows, Format.table, "config_versions")


def _history(url: str) -> list[Any]:
    from paymetrics.cli import reading_store

    with reading_store(url, revision="0002") as store:
        return store.config_history()


@config_app.command("docs")
def docs() -> None:
    """Print the option reference (the generated part of docs/configuration.md)."""
    from paymetrics.config.docs import render_reference

    _, out = _consoles()
    out.print(render_reference(), end="", highlight=False, markup=False)
