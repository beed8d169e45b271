"""Config-defined metric rules, aggregated into additive partials on whole batches.

A rule counts (or sums, averages, ...) the events its `filter` lets through, per tumbling
UTC window of `occurred_at` and per value of its `group_by` columns. `aggregate_rules`
turns a batch into partial rows (count, value_count, sum, min, max, numerator) that
`merge_partials` combines exactly across batches and workers; `metric_values` turns
merged partials into the number the rule defines.

Everything per event is vectorized (filter masks, value expressions, window flooring,
Arrow `group_by`); Python runs once per rule and once per output group.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.metrics.expressions import (
    Expression,
    ExpressionError,
    filter_mask,
    parse_filter,
    parse_value,
)
from paymetrics.metrics.windows import floor_to_window

__all__ = [
    "AGGREGATES",
    "PARTIAL_KEY",
    "PARTIAL_SCHEMA",
    "WINDOWS",
    "MetricRule",
    "RuleError",
    "aggregate_rules",
    "compile_rule",
    "group_by_problems",
    "merge_partials",
    "metric_values",
]

WINDOWS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
"""Window name -> width in seconds; windows are aligned to the UTC epoch (1d: UTC midnight)."""
AGGREGATES = ("count", "sum", "avg", "min", "max", "ratio")
VALUE_AGGREGATES = frozenset({"sum", "avg", "min", "max"})
GROUPABLE = frozenset({pa.string(), pa.large_string(), pa.bool_()})

UTC_US = pa.timestamp("us", tz="UTC")
PARTIAL_KEY = ("metric_name", "window_seconds", "window_start", "dimensions")
PARTIAL_SCHEMA = pa.schema(
    [
        pa.field("metric_name", pa.string(), nullable=False),
        pa.field("window_start", UTC_US, nullable=False),
        pa.field("window_seconds", pa.int32(), nullable=False),
        pa.field("dimensions", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("value_count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("numerator", pa.int64()),
    ]
)
"""One row per (rule, window, dimensions). `count`: filtered events; `value_count`,
`sum`, `min`, `max`: over the non-NULL values (0 / NULL for rules without a value);
`numerator`: events where the numerator is TRUE (NULL unless ratio)."""

_WINDOW = "__paymetrics_window"
_VALUE = "__paymetrics_value"
_NUMERATOR = "__paymetrics_numerator"


class RuleError(ValueError):
    """A rule with problems; `problems` lists every (field, message) found, not just one."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__("; ".join(f"{where}: {message}" for where, message in self.problems))


@dataclass(frozen=True)
class MetricRule:
    """A compiled rule: expressions parsed and type-checked, window in seconds."""

    name: str
    aggregate: str
    window_seconds: int
    group_by: tuple[str, ...]
    """Sorted: the order of group_by columns does not change the metric."""
    filter: Expression | None
    value: Expression | None
    numerator: Expression | None

    @property
    def window(self) -> str:
        return next(k for k, v in WINDOWS.items() if v == self.window_seconds)

    @property
    def definition(self) -> dict[str, Any]:
        """What decides the numbers, canonical and JSON-serializable (for hashing/versioning)."""
        return {
            "name": self.name,
            "aggregate": self.aggregate,
            "filter": None if self.filter is None else self.filter.canonical,
            "value": None if self.value is None else self.value.canonical,
            "numerator": None if self.numerator is None else self.numerator.canonical,
            "group_by": list(self.group_by),
            "window": self.window,
            "window_seconds": self.window_seconds,
        }


def compile_rule(
    *,
    name: str,
    filter: str | None,
    aggregate: str,
    value: str | None = None,
    numerator: str | None = None,
    group_by: Sequence[str] = (),
    window: str,
    schema: pa.Schema,
) -> MetricRule:
    """Check and compile one rule; raises RuleError listing every problem at once."""
    problems: list[tuple[str, str]] = []

    def parse(where: str, text: str | None, parser: Any) -> Expression | None:
        if text is None:
            return None
        try:
            parsed: Expression = parser(text, schema)
        except ExpressionError as error:
            problems.append((where, str(error)))
            return None
        return parsed

    if not name or not name.strip():
        problems.append(("name", "must not be empty"))
    if aggregate not in AGGREGATES:
        problems.append(
            ("aggregate", f"unknown aggregate {aggregate!r}; one of: {', '.join(AGGREGATES)}")
        )
    if window not in WINDOWS:
        problems.append(("window", f"unknown window {window!r}; one of: {', '.join(WINDOWS)}"))
    compiled_filter = parse("filter", filter, parse_filter)
    compiled_value = parse("value", value, parse_value)
    compiled_numerator = parse("numerator", numerator, parse_filter)
    if aggregate in VALUE_AGGREGATES and value is None:
        problems.append(("value", f"required for aggregate {aggregate}"))
    if aggregate in AGGREGATES and aggregate not in VALUE_AGGREGATES and value is not None:
        problems.append(("value", f"not used by aggregate {aggregate}; remove it"))
    if aggregate == "ratio" and numerator is None:
        problems.append(("numerator", "required for aggregate ratio"))
    if aggregate in AGGREGATES and aggregate != "ratio" and numerator is not None:
        problems.append(("numerator", f"only used by aggregate ratio, not {aggregate}"))
    problems.extend(("group_by", message) for message in group_by_problems(group_by, schema))
    if problems:
        raise RuleError(problems)
    return MetricRule(
        name=name,
        aggregate=aggregate,
        window_seconds=WINDOWS[window],
        group_by=tuple(sorted(group_by)),
        filter=compiled_filter,
        value=compiled_value,
        numerator=compiled_numerator,
    )


def group_by_problems(group_by: Sequence[str], schema: pa.Schema) -> list[str]:
    problems: list[str] = []
    names = schema.names
    for column in group_by:
        if column not in names:
            close = difflib.get_close_matches(column, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                f"unknown column '{column}'{hint}; valid columns: {', '.join(sorted(names))}"
            )
            continue
        dtype = schema.field(column).type
        if dtype not in GROUPABLE and not pa.types.is_integer(dtype):
            problems.append(
                f"cannot group by '{column}' ({dtype}): only string, integer and boolean columns"
            )
    repeated = sorted({c for c in group_by if list(group_by).count(c) > 1})
    if repeated:
        problems.append(f"listed more than once: {', '.join(repeated)}")
    return problems


# -- aggregation --------------------------------------------------------------------


def aggregate_rules(events: pa.Table, rules: Sequence[MetricRule]) -> pa.Table:
    """Partials (PARTIAL_SCHEMA) of `events` for each rule: one row per (rule, window,
    dimensions) with at least one event passing the rule's filter. Sorted by PARTIAL_KEY."""
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"metric rule names must be unique: {', '.join(repeated)}")
    if not rules or events.num_rows == 0:
        return PARTIAL_SCHEMA.empty_table()
    occurred = events["occurred_at"]
    if occurred.null_count:
        raise ValueError("occurred_at must not be NULL (aggregate normalized events)")
    epoch_us = pc.cast(pc.cast(occurred, UTC_US), pa.int64()).to_numpy()
    windows: dict[int, pa.Array] = {}
    masks: dict[str, pa.Array] = {}
    parts = []
    for rule in sorted(rules, key=lambda r: r.name):
        if rule.window_seconds not in windows:
            windows[rule.window_seconds] = pa.array(
                floor_to_window(epoch_us.astype(np.int64, copy=False), rule.window_seconds)
            )
        mask = None
        if rule.filter is not None:
            mask = masks.get(rule.filter.canonical)
            if mask is None:
                mask = masks[rule.filter.canonical] = filter_mask(rule.filter, events)
        parts.append(_aggregate_rule(events, rule, windows[rule.window_seconds], mask))
    return pa.concat_tables(parts)


def _aggregate_rule(
    events: pa.Table, rule: MetricRule, window: pa.Array, mask: pa.Array | None
) -> pa.Table:
    needed = set(rule.group_by)
    for expression in (rule.value, rule.numerator):
        if expression is not None:
            needed |= expression.columns
    missing = sorted(needed - set(events.column_names))
    if missing:
        raise ValueError(f"metric {rule.name!r} needs column(s) {', '.join(missing)}")
    work = events.select(sorted(needed)).append_column(_WINDOW, window)
    if mask is not None:
        work = work.filter(mask)
    aggregations: list[tuple[Any, str]] = [([], "count_all")]
    if rule.value is not None:
        work = work.append_column(_VALUE, rule.value.evaluate(work))
        aggregations += [(_VALUE, "sum"), (_VALUE, "count"), (_VALUE, "min"), (_VALUE, "max")]
    if rule.numerator is not None:
        hits = pc.cast(filter_mask(rule.numerator, work), pa.int64())
        work = work.append_column(_NUMERATOR, hits)
        aggregations.append((_NUMERATOR, "sum"))
    keys = [_WINDOW, *rule.group_by]
    grouped = work.group_by(keys, use_threads=False).aggregate(aggregations)
    n = grouped.num_rows

    def column(name: str, dtype: pa.DataType) -> pa.Array:
        if name not in grouped.column_names:
            return pa.nulls(n, dtype)
        return pc.cast(grouped[name], dtype)

    dimensions = _dimensions(grouped, rule.group_by)
    value_count = (
        column(f"{_VALUE}_count", pa.int64())
        if rule.value is not None
        else pa.repeat(pa.scalar(0, pa.int64()), n)
    )
    columns = {
        "metric_name": pa.repeat(pa.scalar(rule.name), n),
        "window_start": pc.cast(grouped[_WINDOW], pa.int64()).cast(UTC_US),
        "window_seconds": pa.repeat(pa.scalar(rule.window_seconds, pa.int32()), n),
        "dimensions": dimensions,
        "count": column("count_all", pa.int64()),
        "value_count": value_count,
        "sum": column(f"{_VALUE}_sum", pa.float64()),
        "min": column(f"{_VALUE}_min", pa.float64()),
        "max": column(f"{_VALUE}_max", pa.float64()),
        "numerator": column(f"{_NUMERATOR}_sum", pa.int64()),
    }
    table = pa.Table.from_arrays([columns[f.name] for f in PARTIAL_SCHEMA], schema=PARTIAL_SCHEMA)
    order = pc.sort_indices(
        table, sort_keys=[("window_start", "ascending"), ("dimensions", "ascending")]
    )
    return table.take(order)


def _dimensions(groups: pa.Table, names: Sequence[str]) -> pa.Array:
    """Canonical JSON object of each group's `names` columns: keys sorted, compact, NULL as
    null (what `json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
    gives). Each distinct value is encoded once, then the strings are joined column-wise."""
    if not names:
        return pa.repeat(pa.scalar("{}"), groups.num_rows)
    parts: list[Any] = []
    for i, name in enumerate(sorted(names)):
        encoded = pc.dictionary_encode(groups[name].combine_chunks())
        texts = pa.array([_json(v) for v in encoded.dictionary.to_pylist()], pa.string())
        parts += [("{" if i == 0 else ",") + _json(name) + ":"]
        parts.append(pc.fill_null(texts.take(encoded.indices), "null"))
    return pc.binary_join_element_wise(*parts, "}", "")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def merge_partials(partials: pa.Table) -> pa.Table:
    """Combine rows with the same PARTIAL_KEY: counts, sums and numerators add, min/max.

    merge_partials(concat(aggregate_rules(a), aggregate_rules(b))) == aggregate_rules(a ++ b)
    (exactly for counts and integer sums; float sums up to rounding).
    """
    if partials.num_rows == 0:
        return PARTIAL_SCHEMA.empty_table()
    grouped = partials.group_by(list(PARTIAL_KEY), use_threads=False).aggregate(
        [
            ("count", "sum"),
            ("value_count", "sum"),
            ("sum", "sum"),
            ("min", "min"),
            ("max", "max"),
            ("numerator", "sum"),
        ]
    )
    renamed = {
        "count_sum": "count",
        "value_count_sum": "value_count",
        "sum_sum": "sum",
        "min_min": "min",
        "max_max": "max",
        "numerator_sum": "numerator",
    }
    grouped = grouped.rename_columns([renamed.get(c, c) for c in grouped.column_names])
    return _sorted(
        pa.Table.from_arrays(
            [pc.cast(grouped[f.name], f.type) for f in PARTIAL_SCHEMA], schema=PARTIAL_SCHEMA
        )
    )


def _sorted(partials: pa.Table) -> pa.Table:
    order = pc.sort_indices(partials, sort_keys=[(k, "ascending") for k in PARTIAL_KEY])
    return partials.take(order)


def metric_values(aggregate: str, partials: pa.Table) -> pa.Array:
    """The metric (float64) of each row of merged `partials` (PARTIAL_SCHEMA columns) of
    rules with `aggregate`: count; sum; avg = sum / value_count; min; max;
    ratio = numerator / count. NULL where there is no value (avg of no non-NULL value)."""
    count = pc.cast(partials["count"], pa.float64())
    if aggregate == "count":
        result = count
    elif aggregate in ("sum", "min", "max"):
        result = pc.cast(partials[aggregate], pa.float64())
    elif aggregate == "avg":
        value_count = pc.cast(partials["value_count"], pa.float64())
        none = pc.equal(value_count, 0.0)
        result = pc.if_else(
            none,
            pa.scalar(None, pa.float64()),
            pc.divide(partials["sum"], pc.if_else(none, 1.0, value_count)),
        )
    elif aggregate == "ratio":
        none = pc.equal(count, 0.0)
        result = pc.if_else(
            none,
            pa.scalar(None, pa.float64()),
            pc.divide(pc.cast(partials["numerator"], pa.float64()), pc.if_else(none, 1.0, count)),
        )
    else:
        raise ValueError(f"unknown aggregate {aggregate!r}; one of: {', '.join(AGGREGATES)}")
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result
