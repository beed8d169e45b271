"""Metric extractors: dynamic metrics written in Python, installed as plugins.

An extractor is for a metric the `metrics:` expression language cannot say. It turns the
batch's newly stored events into partial rows of `dynamic_metrics` with exactly the
schema `aggregate_rules` returns (`PARTIAL_SCHEMA`), so its rows are stored and merged
like a config rule's: counts, sums and numerators add, min/max combine, and `value` is
recomputed from the merged partials by `aggregate`.

Extractors are registered under the entry-point group `paymetrics.extractors` and run
when the configuration enables them (`extractors: {name: {enabled: true}}`). Their rows carry
`config_version` 0: an extractor's definition is its code, not the configuration.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.metrics.dynamic import AGGREGATES, PARTIAL_SCHEMA, WINDOWS
from paymetrics.plugins import load_plugins, unknown_name

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXTRACTORS",
    "Extractor",
    "extract_all",
    "resolve_extractor",
]

ENTRY_POINT_GROUP = "paymetrics.extractors"


class Extractor(abc.ABC):
    """Implementers set `name`, `window` (seconds), `aggregate`, and write `extract`."""

    name: ClassVar[str]
    """The `metric_name` of every row, and the name the configuration uses."""
    window: ClassVar[int]
    """Window width in seconds: one of 60, 300, 900, 3600, 86400."""
    aggregate: ClassVar[str] = "count"
    """How `value` is computed from the merged partials: count, sum, avg, min, max, ratio."""

    @abc.abstractmethod
    def extract(self, events: pa.Table) -> pa.Table:
        """Partials (`PARTIAL_SCHEMA`) of `events`, the batch's newly stored normalized
        events: one row per (window_start, dimensions), metric_name = `name`,
        window_seconds = `window`, window_start floored to `window` in UTC."""


def _check(extractor: type[Extractor]) -> str | None:
    window = getattr(extractor, "window", None)
    if window not in WINDOWS.values():
        return f"window {window!r} is not one of {sorted(WINDOWS.values())} (seconds)"
    if getattr(extractor, "aggregate", None) not in AGGREGATES:
        return f"aggregate {extractor.aggregate!r} is not one of {', '.join(AGGREGATES)}"
    return None


EXTRACTORS: dict[str, type[Extractor]] = load_plugins(
    ENTRY_POINT_GROUP, Extractor, (), check=_check
)
"""Every installed extractor by name (paymetrics has no built-in one)."""


def resolve_extractor(extractor: str | Extractor) -> Extractor:
    if isinstance(extractor, Extractor):
        return extractor
    if extractor not in EXTRACTORS:
        raise unknown_name("extractor", "extractors", extractor, EXTRACTORS)
    return EXTRACTORS[extractor]()


def extract_all(events: pa.Table, extractors: Iterable[Extractor]) -> pa.Table:
    """Every extractor's partials of `events`, checked against PARTIAL_SCHEMA."""
    parts = []
    for extractor in extractors:
        table = extractor.extract(events)
        parts.append(_checked(extractor, table))
    if not parts:
        return PARTIAL_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def _checked(extractor: Extractor, table: pa.Table) -> pa.Table:
    who = f"extractor {extractor.name!r}"
    if table.schema.names != PARTIAL_SCHEMA.names:
        raise ValueError(
            f"{who} returned columns {table.schema.names}; expected {PARTIAL_SCHEMA.names}"
        )
    try:
        table = table.cast(PARTIAL_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"{who} returned rows that do not fit PARTIAL_SCHEMA: {error}") from None
    if table.num_rows == 0:
        return table
    wrong = []
    if not pc.all(pc.equal(table["metric_name"], extractor.name)).as_py():
        wrong.append(f"metric_name other than {extractor.name!r}")
    if not pc.all(pc.equal(table["window_seconds"], extractor.window)).as_py():
        wrong.append(f"window_seconds other than {extractor.window}")
    if wrong:
        raise ValueError(f"{who} returned rows with {' and '.join(wrong)}")
    return table
