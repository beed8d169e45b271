"""`paymetrics.metrics.dynamic`: config-defined metric rules against plain Python.

Every aggregate and every window is checked on a simulated batch against `expected_partials`,
which groups the rows of `Table.to_pylist()` with dicts, datetime arithmetic and
`json.dumps`, with each rule's filter and value written again as Python functions.
Additivity (merging the partials of any split equals the partials of the whole) is what
lets batches and workers be combined exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymetrics.decode import Rejects, as_text, decode
from paymetrics.metrics.dynamic import (
    AGGREGATES,
    PARTIAL_SCHEMA,
    WINDOWS,
    MetricRule,
    RuleError,
    aggregate_rules,
    compile_rule,
    merge_partials,
    metric_values,
)
from paymetrics.metrics.expressions import ExpressionError
from paymetrics.normalize import NORMALIZED_SCHEMA
from paymetrics.normalize import normalize as normalize_events
from paymetrics.simulator import SimulatorConfig, generate

UTC: Final = dt.UTC
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)
Row = dict[str, Any]


# -- a simulated batch, normalized as the pipeline does ------------------------------


@functools.cache
def simulated(events: int = 4_000, seed: int = 11) -> pa.Table:
    """~22 hours of simulated traffic across a UTC midnight, with late (out-of-order) events."""
    config = SimulatorConfig(
        events=events,
        seed=seed,
        rate_per_second=0.05,
        start=dt.datetime(2026, 1, 1, 12, tzinfo=UTC),
        rate_late=0.02,
        merchants=20,
    )
    messages = [m for chunk in generate(config) for m in chunk]
    rejects = Rejects()
    _, bad_utf8 = as_text(messages)
    decoded = decode(messages, [len(m) for m in messages], bad_utf8, rejects)
    assert len(rejects) == 0, rejects.message
    n = len(messages)
    return normalize_events(
        decoded.events,
        decoded.index,
        np.arange(1, n + 1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )


# -- rules, twice: as config text and as Python --------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    aggregate: str
    filter: str | None
    keep: Callable[[Row], bool]
    value: str | None = None
    value_of: Callable[[Row], Any] | None = None
    numerator: str | None = None
    hit: Callable[[Row], bool] | None = None
    group_by: tuple[str, ...] = ()

    def compile(self, window: str) -> MetricRule:
        return compile_rule(
            name=self.name,
            filter=self.filter,
            aggregate=self.aggregate,
            value=self.value,
            numerator=self.numerator,
            group_by=list(self.group_by),
            window=window,
            schema=NORMALIZED_SCHEMA,
        )


SPECS: Final = {
    "count": Spec(
        "high_value_approved",
        "count",
        "event_type = 'authorization' AND status = 'approved' AND amount_minor >= 100000",
        lambda r: (
            r["event_type"] == "authorization"
            and r["status"] == "approved"
            and r["amount_minor"] >= 100_000
        ),
        group_by=("merchant_id",),
    ),
    "sum": Spec(
        "captured_minor",
        "sum",
        "event_type = 'capture' AND status = 'approved'",
        lambda r: r["event_type"] == "capture" and r["status"] == "approved",
        value="amount_minor",
        value_of=lambda r: r["amount_minor"],
        group_by=("currency",),
    ),
    "avg": Spec(
        "approved_latency_avg",
        "avg",
        "status = 'approved'",
        lambda r: r["status"] == "approved",
        value="latency_ms",  # NULL for captures and refunds: skipped by avg, counted by count
        value_of=lambda r: r["latency_ms"],
        group_by=("card_network",),  # NULL for non-card methods: a group of its own
    ),
    "min": Spec(
        "smallest_major",
        "min",
        "currency IN ('USD', 'CAD', 'GBP')",
        lambda r: r["currency"] in ("USD", "CAD", "GBP"),
        value="amount_minor / 100.0",
        value_of=lambda r: r["amount_minor"] / 100.0,
        group_by=("status", "payment_method"),
    ),
    "max": Spec(
        "max_latency",
        "max",
        None,
        lambda r: True,
        value="CASE WHEN latency_ms > 1000 THEN latency_ms END",
        value_of=lambda r: (
            r["latency_ms"] if r["latency_ms"] is not None and r["latency_ms"] > 1000 else None
        ),
    ),
    "ratio": Spec(
        "approval_rate",
        "ratio",
        "event_type = 'authorization' AND card_network <> 'amex'",  # NULL network: filtered out
        lambda r: r["event_type"] == "authorization" and r["card_network"] not in (None, "amex"),
        numerator="status = 'approved' AND country <> 'US'",  # NULL country: not a hit
        hit=lambda r: r["status"] == "approved" and r["country"] not in (None, "US"),
        group_by=("country", "channel"),
    ),
}
assert set(SPECS) == set(AGGREGATES)


def window_of(moment: dt.datetime, seconds: int) -> dt.datetime:
    """`moment` floored to `seconds` since the epoch, by datetime arithmetic."""
    width = dt.timedelta(seconds=seconds)
    return EPOCH + ((moment - EPOCH) // width) * width


def expected_partials(rows: list[Row], spec: Spec, window: str) -> dict[tuple[Any, ...], Row]:
    seconds = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}[window]
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        if spec.keep(row):
            dims = json.dumps(
                {c: row[c] for c in spec.group_by}, sort_keys=True, separators=(",", ":")
            )
            groups[(window_of(row["occurred_at"], seconds), dims)].append(row)
    out = {}
    for (start, dims), members in groups.items():
        values = [v for v in map(spec.value_of, members) if v is not None] if spec.value_of else []
        out[(spec.name, seconds, start, dims)] = {
            "count": len(members),
            "value_count": len(values),
            "sum": float(sum(values)) if values else None,
            "min": float(min(values)) if values else None,
            "max": float(max(values)) if values else None,
            "numerator": sum(1 for m in members if spec.hit(m)) if spec.hit else None,
        }
    return out


def keyed(partials: pa.Table) -> dict[tuple[Any, ...], Row]:
    out = {}
    for row in partials.to_pylist():
        key = (row.pop("metric_name"), row.pop("window_seconds"), row.pop("window_start"))
        out[(*key, row.pop("dimensions"))] = row
    assert len(out) == partials.num_rows, "duplicate keys"
    return out


def assert_partials_equal(got: dict[Any, Row], expected: dict[Any, Row]) -> None:
    assert got.keys() == expected.keys()
    for key, row in expected.items():
        have = got[key]
        for name in ("count", "value_count", "numerator", "min", "max"):
            assert have[name] == row[name], (key, name, have[name], row[name])
        if row["sum"] is None:
            assert have["sum"] is None, key
        else:
            assert have["sum"] == pytest.approx(row["sum"], rel=1e-12), key


# -- each aggregate x each window, against Python -------------------------------------


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_aggregate_matches_python(aggregate: str, window: str) -> None:
    table = simulated()
    spec = SPECS[aggregate]
    rule = spec.compile(window)
    expected = expected_partials(table.to_pylist(), spec, window)
    assert len(expected) > 1  # several windows or groups: the test can tell them apart
    partials = aggregate_rules(table, [rule])
    assert partials.schema == PARTIAL_SCHEMA
    got = keyed(partials)
    assert_partials_equal(got, expected)
    if aggregate == "sum":  # integer values: the float64 sum is exact
        assert all(got[k]["sum"] == e["sum"] for k, e in expected.items())
    # the metric value each row stands for
    values = metric_values(aggregate, partials).to_pylist()
    for key, value in zip(got, values, strict=True):
        e = expected[key]
        want = {
            "count": e["count"],
            "sum": e["sum"],
            "avg": None if not e["value_count"] else (e["sum"] or 0.0) / e["value_count"],
            "min": e["min"],
            "max": e["max"],
            "ratio": None if e["numerator"] is None else e["numerator"] / e["count"],
        }[aggregate]
        if want is None:
            assert value is None, key
        else:
            assert value == pytest.approx(want, rel=1e-12), key


def test_all_rules_at_once_equal_one_at_a_time() -> None:
    table = simulated()
    windows = list(WINDOWS)
    rules = [spec.compile(windows[i % len(windows)]) for i, spec in enumerate(SPECS.values())]
    together = aggregate_rules(table, rules)
    apart = pa.concat_tables([aggregate_rules(table, [r]) for r in rules])
    assert keyed(together) == keyed(apart)
    names = together["metric_name"].to_pylist()
    assert names == sorted(names)  # sorted by (metric_name, window_seconds, window_start, dims)


def test_avg_skips_null_values_but_count_does_not() -> None:
    by_type = rule(name="by_type", aggregate="avg", value="latency_ms", group_by=["event_type"])
    partials = aggregate_rules(simulated(), [SPECS["avg"].compile("1d"), by_type])
    rows = partials.to_pylist()
    assert any(0 < r["value_count"] < r["count"] for r in rows)  # some latencies are NULL
    assert any(r["value_count"] == 0 and r["sum"] is None for r in rows)  # captures: none
    for value, row in zip(metric_values("avg", partials).to_pylist(), rows, strict=True):
        if row["value_count"]:
            assert value == pytest.approx(row["sum"] / row["value_count"])
        else:
            assert value is None


# -- hand-built events: windows, dimensions, NULLs ------------------------------------


def event(occurred_at: dt.datetime, **fields: Any) -> Row:
    return {
        "event_id": "e",
        "event_type": "authorization",
        "transaction_id": "t",
        "occurred_at": occurred_at,
        "merchant_id": "m1",
        "amount_minor": 100,
        "currency": "USD",
        "status": "approved",
        "payment_method": "card",
        "card_network": "visa",
        "pan_exposure": False,
        "window_start": occurred_at,  # not used by dynamic rules
        **fields,
    }


def events_table(rows: Sequence[Row]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=NORMALIZED_SCHEMA)


def rule(**fields: Any) -> MetricRule:
    defaults: dict[str, Any] = {
        "name": "r",
        "filter": None,
        "aggregate": "count",
        "value": None,
        "numerator": None,
        "group_by": [],
        "window": "5m",
        "schema": NORMALIZED_SCHEMA,
    }
    return compile_rule(**(defaults | fields))


T: Final = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_dimensions_canonical_json() -> None:
    table = events_table(
        [
            event(T, merchant_id="m1", card_network="visa"),
            event(T, merchant_id="m1", card_network="visa"),
            event(T, merchant_id="m2", card_network=None),
            event(T, merchant_id='m"3\\é', card_network="amex"),
        ]
    )
    got = aggregate_rules(table, [rule(group_by=["merchant_id", "card_network"])])
    assert dict(zip(got["dimensions"].to_pylist(), got["count"].to_pylist(), strict=True)) == {
        '{"card_network":"visa","merchant_id":"m1"}': 2,
        '{"card_network":null,"merchant_id":"m2"}': 1,
        '{"card_network":"amex","merchant_id":"m\\"3\\\\é"}': 1,
    }
    for text in got["dimensions"].to_pylist():
        assert list(json.loads(text)) == ["card_network", "merchant_id"]
    no_groups = aggregate_rules(table, [rule()])
    assert no_groups["dimensions"].to_pylist() == ["{}"]
    assert no_groups["count"].to_pylist() == [4]


def test_boolean_and_integer_dimensions() -> None:
    table = events_table(
        [event(T, pan_exposure=True, amount_minor=5), event(T, pan_exposure=False, amount_minor=5)]
    )
    got = aggregate_rules(table, [rule(group_by=["pan_exposure", "amount_minor"])])
    assert sorted(got["dimensions"].to_pylist()) == [
        '{"amount_minor":5,"pan_exposure":false}',
        '{"amount_minor":5,"pan_exposure":true}',
    ]


@pytest.mark.parametrize(
    ("window", "moment", "start"),
    [
        ("1m", "2026-03-01T12:00:59.999999+00:00", "2026-03-01T12:00:00+00:00"),
        ("5m", "2026-03-01T12:04:59+00:00", "2026-03-01T12:00:00+00:00"),
        ("15m", "2026-03-01T12:44:00+00:00", "2026-03-01T12:30:00+00:00"),
        ("1h", "2026-03-01T13:59:59+01:00", "2026-03-01T12:00:00+00:00"),
        ("1d", "2026-03-01T23:59:59-05:00", "2026-03-02T00:00:00+00:00"),  # UTC midnight
        ("1d", "2026-03-02T00:30:00+01:00", "2026-03-01T00:00:00+00:00"),
        ("1d", "1969-12-31T23:59:59+00:00", "1969-12-31T00:00:00+00:00"),
    ],
)
def test_window_start_is_utc_floor(window: str, moment: str, start: str) -> None:
    table = events_table([event(dt.datetime.fromisoformat(moment))])
    got = aggregate_rules(table, [rule(window=window)])
    assert got["window_start"].to_pylist() == [dt.datetime.fromisoformat(start)]
    assert got["window_seconds"].to_pylist() == [WINDOWS[window]]


def test_filter_null_counts_as_false_and_no_empty_groups() -> None:
    table = events_table(
        [
            event(T, card_network="visa", merchant_id="a"),
            event(T, card_network=None, merchant_id="b"),  # filter is NULL: not counted
            event(T, card_network="amex", merchant_id="c"),
        ]
    )
    got = aggregate_rules(table, [rule(filter="card_network <> 'amex'", group_by=["merchant_id"])])
    assert got["dimensions"].to_pylist() == ['{"merchant_id":"a"}']  # no zero-count rows
    nothing = aggregate_rules(table, [rule(filter="amount_minor < 0")])
    assert nothing.num_rows == 0
    assert nothing.schema == PARTIAL_SCHEMA


def test_partial_columns_by_aggregate() -> None:
    table = events_table(
        [
            event(T, amount_minor=10, status="approved"),
            event(T, amount_minor=30, status="declined"),
            event(T, amount_minor=20, status="error"),
        ]
    )
    rules = [
        rule(name="c", aggregate="count"),
        rule(name="s", aggregate="sum", value="amount_minor"),
        rule(name="a", aggregate="avg", value="CASE WHEN status <> 'error' THEN amount_minor END"),
        rule(name="lo", aggregate="min", value="amount_minor"),
        rule(name="hi", aggregate="max", value="-amount_minor"),
        rule(name="q", aggregate="ratio", numerator="status = 'approved'"),
    ]
    rows = {r["metric_name"]: r for r in aggregate_rules(table, rules).to_pylist()}
    common = {"window_start": T, "window_seconds": 300, "dimensions": "{}", "count": 3}
    none = {"value_count": 0, "sum": None, "min": None, "max": None, "numerator": None}
    assert rows["c"] == {"metric_name": "c", **common, **none}
    assert rows["s"] == {
        "metric_name": "s",
        **common,
        "value_count": 3,
        "sum": 60.0,
        "min": 10.0,
        "max": 30.0,
        "numerator": None,
    }
    assert rows["a"] == {
        "metric_name": "a",
        **common,
        "value_count": 2,
        "sum": 40.0,
        "min": 10.0,
        "max": 30.0,
        "numerator": None,
    }
    assert (rows["lo"]["min"], rows["hi"]["max"]) == (10.0, -10.0)
    assert rows["q"] == {"metric_name": "q", **common, **none, "numerator": 1}
    merged = merge_partials(aggregate_rules(table, rules))
    by_name = dict(zip(merged["metric_name"].to_pylist(), range(merged.num_rows), strict=True))
    for aggregate, name, want in [
        ("count", "c", 3.0),
        ("sum", "s", 60.0),
        ("avg", "a", 20.0),
        ("min", "lo", 10.0),
        ("max", "hi", -10.0),
        ("ratio", "q", 1 / 3),
    ]:
        assert metric_values(aggregate, merged.slice(by_name[name], 1)).to_pylist() == [want]


def test_merge_partials_combines_same_keys() -> None:
    sum_rule = rule(name="s", aggregate="avg", value="latency_ms")
    first = aggregate_rules(events_table([event(T, latency_ms=None)]), [sum_rule])
    second = aggregate_rules(
        events_table([event(T + dt.timedelta(seconds=1), latency_ms=2.5)]), [sum_rule]
    )
    assert first["sum"].to_pylist() == [None]
    merged = merge_partials(pa.concat_tables([first, second, first]))
    assert merged.num_rows == 1
    row = merged.to_pylist()[0]
    assert (row["count"], row["value_count"], row["sum"], row["min"], row["max"]) == (
        3,
        1,
        2.5,
        2.5,
        2.5,
    )
    assert merged.schema == PARTIAL_SCHEMA
    assert merge_partials(PARTIAL_SCHEMA.empty_table()).num_rows == 0


def test_merge_keeps_rule_windows_apart() -> None:
    table = events_table([event(T)])
    five = aggregate_rules(table, [rule(name="x", window="5m")])
    hour = aggregate_rules(table, [rule(name="x", window="1h")])
    merged = merge_partials(pa.concat_tables([five, hour, five]))
    pairs = zip(merged["window_seconds"].to_pylist(), merged["count"].to_pylist(), strict=True)
    assert sorted(pairs) == [
        (300, 2),
        (3600, 1),
    ]


def test_empty_inputs_and_bad_arguments() -> None:
    table = simulated()
    assert aggregate_rules(table, []).schema == PARTIAL_SCHEMA
    assert aggregate_rules(table.slice(0, 0), [rule()]).num_rows == 0
    with pytest.raises(ValueError, match="unique: r"):
        aggregate_rules(table, [rule(), rule(window="1h")])
    with pytest.raises(ValueError, match="occurred_at must not be NULL"):
        aggregate_rules(events_table([event(T), event(T) | {"occurred_at": None}]), [rule()])
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        metric_values("median", aggregate_rules(table, [rule()]))


# -- additivity -------------------------------------------------------------------------

ADDITIVE_RULES: Final = [
    SPECS["count"].compile("5m"),
    SPECS["sum"].compile("1h"),
    SPECS["avg"].compile("15m"),
    SPECS["min"].compile("1m"),
    SPECS["max"].compile("1d"),
    SPECS["ratio"].compile("5m"),
]


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 1_500), max_size=4),
    seed=st.integers(0, 2**32 - 1),
    chosen=st.sets(st.integers(0, len(ADDITIVE_RULES) - 1), min_size=1),
)
def test_merged_partials_of_a_split_equal_partials_of_the_whole(
    cuts: list[int], seed: int, chosen: set[int]
) -> None:
    whole = simulated(1_500, 5)
    rules = [ADDITIVE_RULES[i] for i in sorted(chosen)]
    shuffled = whole.take(np.random.default_rng(seed).permutation(whole.num_rows))
    bounds = [0, *sorted(cuts), whole.num_rows]
    pieces = [shuffled.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    merged = merge_partials(pa.concat_tables([aggregate_rules(p, rules) for p in pieces]))
    direct = aggregate_rules(whole, rules)
    assert merged.schema == direct.schema == PARTIAL_SCHEMA
    got, want = keyed(merged), keyed(direct)
    assert list(got) == list(want)  # same keys, same order
    for key, row in want.items():
        for name in ("count", "value_count", "numerator", "min", "max"):
            assert got[key][name] == row[name], (key, name)
        if key[0] == "captured_minor":  # integer sums: exact
            assert got[key]["sum"] == row["sum"], key
        elif row["sum"] is not None:
            assert math.isclose(got[key]["sum"], row["sum"], rel_tol=1e-12), key
        else:
            assert got[key]["sum"] is None


# -- compile_rule ---------------------------------------------------------------------


def test_compile_rule_reports_every_problem_at_once() -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(
            name="broken",
            filter="amout_minor >= 100000",
            aggregate="sum",
            value=None,
            numerator="status = 'approved'",
            group_by=["merchant", "latency_ms", "currency", "currency"],
            window="2h",
            schema=NORMALIZED_SCHEMA,
        )
    problems = caught.value.problems
    assert [field for field, _ in problems] == [
        "window",
        "filter",
        "value",
        "numerator",
        "group_by",
        "group_by",
        "group_by",
    ]
    messages = dict(problems[:4])
    assert messages["window"] == "unknown window '2h'; one of: 1m, 5m, 15m, 1h, 1d"
    assert messages["filter"].startswith("unknown column 'amout_minor' (did you mean")
    assert messages["value"] == "required for aggregate sum"
    assert messages["numerator"] == "only used by aggregate ratio, not sum"
    group_by = [m for f, m in problems if f == "group_by"]
    assert "unknown column 'merchant' (did you mean 'merchant_id'?)" in group_by[0]
    assert "cannot group by 'latency_ms' (double)" in group_by[1]
    assert group_by[2] == "listed more than once: currency"
    text = str(caught.value)
    assert "filter: unknown column 'amout_minor'" in text
    assert "value: required for aggregate sum" in text
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"aggregate": "median"}, [("aggregate", "unknown aggregate 'median'")]),
        (
            {"aggregate": "count", "value": "amount_minor"},
            [("value", "not used by aggregate count")],
        ),
        ({"aggregate": "ratio"}, [("numerator", "required for aggregate ratio")]),
        (
            {"aggregate": "avg", "value": "status"},
            [("value", "a value must be a number, got string")],
        ),
        (
            {"aggregate": "ratio", "numerator": "amount_minor", "filter": "status ="},
            [("filter", "syntax error"), ("numerator", "must be a boolean condition")],
        ),
        ({"name": " "}, [("name", "must not be empty")]),
        ({"group_by": ["occurred_at"]}, [("group_by", "cannot group by 'occurred_at'")]),
    ],
)
def test_compile_rule_problem(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    with pytest.raises(RuleError) as caught:
        rule(**fields)
    problems = caught.value.problems
    assert [f for f, _ in problems] == [f for f, _ in expected]
    for (_, message), (_, fragment) in zip(problems, expected, strict=True):
        assert fragment in message


def test_compiled_rule_and_definition() -> None:
    compiled = compile_rule(
        name="high_value_approved",
        filter="event_type='authorization'  and status='approved' and amount_minor>=100000",
        aggregate="count",
        value=None,
        numerator=None,
        group_by=["merchant_id", "card_network"],
        window="5m",
        schema=NORMALIZED_SCHEMA,
    )
    assert compiled.window_seconds == 300
    assert compiled.window == "5m"
    assert compiled.group_by == ("card_network", "merchant_id")
    assert compiled.value is None
    assert compiled.numerator is None
    assert compiled.filter is not None
    assert compiled.filter.type == pa.bool_()
    definition = compiled.definition
    assert definition == {
        "name": "high_value_approved",
        "aggregate": "count",
        "filter": "event_type = 'authorization' AND status = 'approved' AND amount_minor >= 100000",
        "value": None,
        "numerator": None,
        "group_by": ["card_network", "merchant_id"],
        "window": "5m",
        "window_seconds": 300,
    }
    assert json.loads(json.dumps(definition)) == definition
    respaced = compile_rule(
        name="high_value_approved",
        filter="EVENT_TYPE = 'authorization' AND status = 'approved'\n  AND amount_minor >= 100000",
        aggregate="count",
        value=None,
        numerator=None,
        group_by=["card_network", "merchant_id"],
        window="5m",
        schema=NORMALIZED_SCHEMA,
    )
    assert respaced.definition == definition
    assert respaced == compiled
    edited = rule(name="high_value_approved", filter="amount_minor >= 100001")
    assert edited.definition != definition


def test_constants() -> None:
    assert WINDOWS == {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
    assert AGGREGATES == ("count", "sum", "avg", "min", "max", "ratio")
    assert PARTIAL_SCHEMA.names == [
        "metric_name",
        "window_start",
        "window_seconds",
        "dimensions",
        "count",
        "value_count",
        "sum",
        "min",
        "max",
        "numerator",
    ]
    assert PARTIAL_SCHEMA.field("window_start").type == pa.timestamp("us", tz="UTC")
    assert PARTIAL_SCHEMA.field("window_seconds").type == pa.int32()
    assert issubclass(RuleError, ValueError)
    assert ExpressionError is not RuleError
