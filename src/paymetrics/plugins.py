"""Plugins found through entry points: validation rules and metric extractors.

A distribution registers a class under an entry-point group (`paymetrics.validators`,
`paymetrics.extractors`) with the name it is configured by:

    [project.entry-points."paymetrics.validators"]
    merchant_allowlist = "my_package.rules:MerchantAllowlistRule"

paymetrics registers its own built-ins the same way. When the package metadata is missing
(running from a source tree), the built-ins are still there: they are always the base of a
registry, and entry points add to it. Every problem is a `PluginError` naming the entry
point and its distribution: a plugin that fails to import, that is not a subclass of the
expected base class, whose name differs from its entry point's, or two classes under one
name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

__all__ = ["PluginError", "describe_entry_point", "load_plugins", "unknown_name"]

T = TypeVar("T")


class PluginError(RuntimeError):
    """A plugin that cannot be loaded or conflicts with another."""


def describe_entry_point(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return (
        f"entry point {entry_point.name!r} = {entry_point.value!r} "
        f"in group {entry_point.group!r} (from {where})"
    )


def load_plugins(
    group: str,
    base: type[Any],  # type[Any]: an abstract base class is what is wanted here
    builtins: Iterable[type[T]],
    *,
    check: Callable[[type[T]], str | None] | None = None,
    found: Iterable[EntryPoint] | None = None,
) -> dict[str, type[T]]:
    """name -> class: `builtins`, plus every entry point of `group` (`found` for tests).

    `check(cls)` may return a problem with a loaded class (e.g. an invalid reason code).
    """
    registry: dict[str, type[T]] = {}
    origin: dict[str, str] = {}
    for cls in builtins:
        builtin_name: str = getattr(cls, "name")  # noqa: B009 (a ClassVar of the base class)
        registry[builtin_name] = cls
        origin[builtin_name] = f"built-in {cls.__module__}.{cls.__qualname__}"
    points = entry_points(group=group) if found is None else found
    for point in sorted(points, key=lambda p: (p.name, p.value)):
        shown = describe_entry_point(point)
        try:
            loaded: Any = point.load()
        except Exception as error:  # any import-time failure of third-party code
            raise PluginError(f"cannot load {shown}: {type(error).__name__}: {error}") from error
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            raise PluginError(
                f"{shown} is {loaded!r}, not a subclass of {base.__module__}.{base.__qualname__}"
            )
        name = getattr(loaded, "name", None)
        if name != point.name:
            raise PluginError(
                f"{shown}: the class's name is {name!r}; it must equal the entry point's name"
            )
        problem = check(loaded) if check is not None else None
        if problem:
            raise PluginError(f"{shown}: {problem}")
        if name in registry:
            if registry[name] is loaded:
                continue  # the built-ins' own entry points, or one class registered twice
            raise PluginError(
                f"two plugins are named {name!r} in group {group!r}: {origin[name]} and {shown}; "
                "uninstall one of them or rename it"
            )
        registry[name] = loaded
        origin[name] = shown
    return registry


def unknown_name(kind: str, plural: str, name: object, registry: Mapping[str, Any]) -> ValueError:
    """The error for a name that is not registered, listing the valid names."""
    valid = ", ".join(sorted(registry)) or "(none installed)"
    return ValueError(f"unknown {kind} {name!r}; valid {plural}: {valid}")
