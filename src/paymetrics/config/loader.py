"""Layered loading: defaults < file < App Configuration < environment < flags.

Each layer yields a nested dict; they are merged leaf by leaf (a list, such as
`metrics`, is one leaf: a later layer replaces it whole), remembering which layer
set each value. Secret references in any string are then resolved, and the
result is validated once. Every problem is reported at once, each with its
path and the layer it came from: `metrics[3].filter (file cfg.yaml): unknown
column 'amout_minor'`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from paymetrics.config.model import Settings
from paymetrics.config.secrets import SecretReferenceError, SecretResolver, parse_reference

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Layer",
    "LoadedConfig",
    "env_layer",
    "file_layer",
    "load_settings",
]

ENV_PREFIX = "PAYMETRICS__"
ENV_DELIMITER = "__"
#: Settings whose strings are never secret references (`file:` is a source scheme there).
NOT_REFERENCES = frozenset({("source", "url")})

Path_ = tuple[str | int, ...]


class ConfigError(ValueError):
    """The configuration is invalid; `problems` lists every problem with its path."""

    def __init__(self, problems: list[str], origin: str = "configuration") -> None:
        self.problems = problems
        super().__init__(
            f"{origin} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"
            + "".join(f"\n  {p}" for p in problems)
        )


@dataclass(frozen=True)
class Layer:
    """One source of settings: a nested dict and a name saying where it came from."""

    name: str
    values: Mapping[str, Any]


class AppConfiguration(Protocol):
    name: str

    def load(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadedConfig:
    """Validated settings plus, for each leaf path, the layer that set it."""

    settings: Settings
    origins: Mapping[Path_, str]
    secret_paths: frozenset[Path_] = field(default_factory=frozenset)
    files: tuple[Path, ...] = ()

    def origin(self, path: Path_) -> str:
        """The layer that set `path` (or one of its parents), else 'default'."""
        return origin_of(self.origins, path)


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- layers ----------------------------------------------------------------------------


def file_layer(path: str | os.PathLike[str]) -> Layer:
    """A YAML (.yaml/.yml) or TOML (.toml) file; JSON is YAML too."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {file} does not exist"], origin=f"file {file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"cannot read config file {file}: {error}"], f"file {file}") from None
    try:
        if file.suffix.lower() == ".toml":
            values: Any = tomllib.loads(text)
        else:
            values = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise ConfigError([f"{file}: not valid {_kind(file)}: {detail}"], f"file {file}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(
            [f"{file}: the top level must be a mapping of sections, got {type(values).__name__}"],
            f"file {file}",
        )
    return Layer(f"file {file}", values)


def _kind(file: Path) -> str:
    return "TOML" if file.suffix.lower() == ".toml" else "YAML"


def env_layer(environ: Mapping[str, str] | None = None) -> Layer:
    """`PAYMETRICS__SECTION__KEY=value`; values that parse as JSON are taken as JSON.

    `PAYMETRICS_DB_URL` (one underscore) is kept as a shorthand for storage.db_url.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    legacy = environ.get("PAYMETRICS_DB_URL")
    if legacy:
        values["storage"] = {"db_url": legacy}
    for key, raw in sorted(environ.items()):
        if not key.upper().startswith(ENV_PREFIX) or len(key) == len(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split(ENV_DELIMITER)]
        if any(not p for p in parts):
            continue
        node = values
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = _env_value(raw)
    return Layer("env", values)


def _env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in {"[", "{"} or stripped in {"true", "false", "null"}:
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def flags_layer(values: Mapping[Path_, Any]) -> Layer:
    """Command-line flags given explicitly, keyed by their settings path (None is a value)."""
    nested: dict[str, Any] = {}
    for path, value in values.items():
        node = nested
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = value
    return Layer("command line", nested)


# -- merging ---------------------------------------------------------------------------


def _leaves(values: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[Path_, str]]:
    merged: dict[str, Any] = {}
    origins: dict[Path_, str] = {}
    for layer in layers:
        for path, value in _leaves(layer.values):
            node: Any = merged
            for part in path[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[path[-1]] = value
            for known in [p for p in origins if p[: len(path)] == path]:
                del origins[known]
            origins[path] = layer.name
    return merged, origins


def _resolve_secrets(
    values: Any,
    path: Path_,
    resolver: SecretResolver,
    secret_paths: set[Path_],
    problems: list[tuple[Path_, str]],
) -> Any:
    if isinstance(values, dict):
        return {
            k: _resolve_secrets(v, (*path, k), resolver, secret_paths, problems)
            for k, v in values.items()
        }
    if isinstance(values, list):
        return [
            _resolve_secrets(v, (*path, i), resolver, secret_paths, problems)
            for i, v in enumerate(values)
        ]
    if isinstance(values, str) and path not in NOT_REFERENCES:
        try:
            if parse_reference(values) is None:
                return values
            secret_paths.add(path)
            return resolver.resolve(values)
        except SecretReferenceError as error:
            secret_paths.add(path)
            problems.append((path, str(error)))
            return None
    return values


# -- loading ---------------------------------------------------------------------------


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[Path_, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    app_configuration: AppConfiguration | None = None,
    resolver: SecretResolver | None = None,
) -> LoadedConfig:
    """Load, merge, resolve secrets and validate; raises ConfigError listing every problem.

    `config_file` defaults to `$PAYMETRICS_CONFIG`; no file at all is fine. Without an
    `app_configuration`, one named by `PAYMETRICS_APPCONFIG_*` variables is used.
    """
    environ = os.environ if environ is None else environ
    resolver = resolver or SecretResolver(environ=environ)
    file = config_file or environ.get("PAYMETRICS_CONFIG") or None
    layers: list[Layer] = []
    files: tuple[Path, ...] = ()
    if file:
        layers.append(file_layer(file))
        files = (Path(file),)
    if app_configuration is None:
        from paymetrics.config.appconfig import ConfigSourceError, from_environment

        try:
            app_configuration = from_environment(environ, resolver.resolve)
        except (ConfigSourceError, SecretReferenceError) as error:
            raise ConfigError([str(error)], "App Configuration") from None
    if app_configuration is not None:
        try:
            values = app_configuration.load()
        except ValueError as error:  # ConfigSourceError: names the store, never a secret
            raise ConfigError([str(error)], app_configuration.name) from None
        layers.append(Layer(app_configuration.name, values))
    layers.append(env_layer(environ))
    if flags:
        layers.append(flags_layer(flags))
    merged, origins = merge(layers)
    secret_paths: set[Path_] = set()
    problems: list[tuple[Path_, str]] = []
    resolved = _resolve_secrets(merged, (), resolver, secret_paths, problems)
    if not problems:
        try:
            settings = Settings.model_validate(resolved)
        except ValidationError as error:
            problems = _problems(error)
    if problems:
        raise ConfigError([_problem_line(origins, p, msg) for p, msg in problems])
    return LoadedConfig(settings, origins, frozenset(secret_paths), files)


def _problem_line(origins: Mapping[Path_, str], path: Path_, message: str) -> str:
    where = origin_of(origins, path)
    name = format_path(path) or "(top level)"
    return f"{name}: {message}" if where == "default" else f"{name} ({where}): {message}"


def origin_of(origins: Mapping[Path_, str], path: Path_) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    # A problem on a section may come from any of its children: name their layers.
    below = sorted({o for p, o in origins.items() if p[: len(path)] == path})
    return ", ".join(below) if below else "default"


def _problems(error: ValidationError) -> list[tuple[Path_, str]]:
    out: list[tuple[Path_, str]] = []
    for item in error.errors(include_url=False, include_input=False):
        loc: Path_ = tuple(item["loc"])
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "extra_forbidden":
            message = "unknown setting" + _suggest(loc)
        out.append((loc, message))
    return out


def _suggest(loc: Path_) -> str:
    import difflib

    from pydantic import BaseModel

    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return ""
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [a for a in (annotation, *args) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
        if model is None:
            return ""
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(names)}"
