"""`paymetrics.metrics.expressions`: operators, functions, errors, canonical form, NULLs.

The property test at the end checks the vectorized evaluation against `Oracle`, a plain
Python evaluator written here from the SQL rules (three-valued logic, NULL propagation,
integer overflow and division by zero as NULL), sharing no code with the module.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymetrics.metrics.expressions import (
    Expression,
    ExpressionError,
    filter_mask,
    parse_expression,
    parse_filter,
    parse_value,
)
from paymetrics.normalize import NORMALIZED_SCHEMA

UTC: Final = dt.UTC
MIN64: Final = -(2**63)
MAX64: Final = 2**63 - 1
T0: Final = dt.datetime(2026, 1, 1, tzinfo=UTC)

TABLE: Final = pa.table(
    {
        "i": pa.array([1, None, 3, -4, 0], pa.int64()),
        "big": pa.array([MAX64, MIN64, 2**62, None, -1], pa.int64()),
        "f": pa.array([1.5, -2.0, None, 0.0, 10.0], pa.float64()),
        "s": pa.array(["abc", None, "ABd", "a%c", "x_y"], pa.string()),
        "b": pa.array([True, None, False, True, None], pa.bool_()),
        "ts": pa.array(
            [T0 + dt.timedelta(minutes=m) for m in (-1, 0, 1, 60, 24 * 60)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
)


def values(text: str, table: pa.Table = TABLE) -> list[Any]:
    return list(parse_expression(text, table.schema).evaluate(table).to_pylist())


def error_of(text: str, schema: pa.Schema = NORMALIZED_SCHEMA) -> str:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(text, schema)
    return str(caught.value)


# -- every operator and function ----------------------------------------------------

N: Final = None
OPERATORS: Final[list[tuple[str, list[Any]]]] = [
    # columns and literals (a literal is broadcast to every row)
    ("i", [1, N, 3, -4, 0]),
    ("I", [1, N, 3, -4, 0]),  # unquoted identifiers are case-insensitive
    ('"i"', [1, N, 3, -4, 0]),
    ("42", [42] * 5),
    ("2.5", [2.5] * 5),
    ("'it''s'", ["it's"] * 5),
    ("TRUE", [True] * 5),
    ("false", [False] * 5),
    ("NULL", [N] * 5),
    # comparisons
    ("i = 3", [False, N, True, False, False]),
    ("i != 3", [True, N, False, True, True]),
    ("i <> 3", [True, N, False, True, True]),
    ("i < 1", [False, N, False, True, True]),
    ("i <= 1", [True, N, False, True, True]),
    ("i > 1", [False, N, True, False, False]),
    ("i >= 1", [True, N, True, False, False]),
    ("i = f", [False, N, N, False, False]),  # int vs float compares numerically
    ("i < 1.5", [True, N, False, True, True]),
    ("s = 'abc'", [True, N, False, False, False]),
    ("s < 'b'", [True, N, True, True, False]),  # byte order: 'A' < 'a' < 'b' < 'x'
    ("b = TRUE", [True, N, False, True, N]),
    ("s = NULL", [N] * 5),
    # logic, three-valued
    ("b AND i > 0", [True, N, False, False, False]),  # NULL AND FALSE is FALSE
    ("b OR i > 0", [True, N, True, True, N]),
    ("NOT b", [False, N, True, False, N]),
    ("b AND NULL", [N, N, False, N, N]),
    ("b OR NULL", [True, N, N, True, N]),
    ("NOT NULL", [N] * 5),
    # IN, NOT IN, BETWEEN
    ("i IN (1, 3)", [True, N, True, False, False]),
    ("i NOT IN (1, 3)", [False, N, False, True, True]),
    ("i IN (1, NULL)", [True, N, N, N, N]),
    ("i NOT IN (1, NULL)", [False, N, N, N, N]),
    ("i IN (1.0, 2.5)", [True, N, False, False, False]),
    ("-f IN (0.0, 2.0)", [False, True, N, True, False]),  # -0.0 = 0.0
    ("i IN (f, 0)", [False, N, N, False, True]),  # non-literal items
    ("s IN ('abc', 'x_y')", [True, N, False, False, True]),
    ("i BETWEEN 0 AND 3", [True, N, True, False, True]),
    ("i NOT BETWEEN 0 AND 3", [False, N, False, True, False]),
    ("i BETWEEN NULL AND 0", [False, N, False, N, N]),
    # IS [NOT] NULL
    ("s IS NULL", [False, True, False, False, False]),
    ("s IS NOT NULL", [True, False, True, True, True]),
    ("i + f IS NULL", [False, True, True, False, False]),
    # LIKE
    ("s LIKE 'a%'", [True, N, False, True, False]),
    ("s NOT LIKE 'a%'", [False, N, True, False, True]),
    ("s LIKE '_B_'", [False, N, True, False, False]),
    ("s LIKE 'a\\%c'", [False, N, False, True, False]),  # backslash escapes % and _
    ("s LIKE 'x\\_y'", [False, N, False, False, True]),
    # arithmetic
    ("i + 1", [2, N, 4, -3, 1]),
    ("i - 1", [0, N, 2, -5, -1]),
    ("i * 2", [2, N, 6, -8, 0]),
    ("i / 2", [0.5, N, 1.5, -2.0, 0.0]),
    ("i / 0", [N] * 5),
    ("f / i", [1.5, N, N, -0.0, N]),  # x / 0 is NULL, never an exception
    ("f / 0.0", [N] * 5),
    ("i % 2", [1, N, 1, 0, 0]),  # sign of the dividend, as in SQL
    ("i % -3", [1, N, 0, -1, 0]),
    ("i % 0", [N] * 5),
    ("i + f", [2.5, N, N, -4.0, 10.0]),
    ("-i", [-1, N, -3, 4, 0]),
    ("-f", [-1.5, 2.0, N, -0.0, -10.0]),
    ("(i + 1) * 2", [4, N, 8, -6, 2]),
    ("i + 1 * 2", [3, N, 5, -2, 2]),
    # integer overflow is NULL, not a wrapped value or an exception
    ("big + 1", [N, MIN64 + 1, 2**62 + 1, N, 0]),
    ("big - 1", [MAX64 - 1, N, 2**62 - 1, N, -2]),
    ("big * 2", [N, N, N, N, -2]),
    ("big * -1", [-MAX64, N, -(2**62), N, 1]),
    ("-big", [-MAX64, N, -(2**62), N, 1]),
    ("abs(big)", [MAX64, N, 2**62, N, 1]),
    ("big % -1", [0, 0, 0, N, 0]),
    ("big / -1", [-float(MAX64), float(2**63), -float(2**62), N, 1.0]),
    # CASE
    (
        "CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'zero' END",
        ["pos", "zero", "pos", "neg", "zero"],
    ),
    ("CASE WHEN b THEN i END", [1, N, N, -4, N]),  # NULL condition: not taken
    ("CASE WHEN b THEN i ELSE f END", [1.0, -2.0, N, -4.0, 10.0]),
    ("CASE i WHEN 1 THEN 'one' WHEN 3 THEN 'three' ELSE s END", ["one", N, "three", "a%c", "x_y"]),
    ("CASE WHEN NULL THEN 1 ELSE 2 END", [2] * 5),
    (
        "CASE WHEN i >= 0 THEN 'first' WHEN i >= 1 THEN 'second' END",
        ["first", N, "first", N, "first"],
    ),
    # functions
    ("lower(s)", ["abc", N, "abd", "a%c", "x_y"]),
    ("upper(s)", ["ABC", N, "ABD", "A%C", "X_Y"]),
    ("length(s)", [3, N, 3, 3, 3]),
    ("length('héllo')", [5] * 5),  # characters, not bytes
    ("upper('é') = 'É'", [True] * 5),
    ("LENGTH(lower(s)) + 1", [4, N, 4, 4, 4]),
    ("abs(i)", [1, N, 3, 4, 0]),
    ("abs(f)", [1.5, 2.0, N, 0.0, 10.0]),
    ("coalesce(i, 7)", [1, 7, 3, -4, 0]),
    ("coalesce(f, i, -1)", [1.5, -2.0, 3.0, 0.0, 10.0]),
    ("coalesce(s, 'none')", ["abc", "none", "ABd", "a%c", "x_y"]),
    ("coalesce(NULL, NULL, b)", [True, N, False, True, N]),
    # timestamps against RFC 3339 literals with an offset
    ("ts >= '2026-01-01T00:00:00Z'", [False, True, True, True, True]),
    ("ts >= '2026-01-01T01:00:00+01:00'", [False, True, True, True, True]),
    ("ts < '2025-12-31T19:01:00-05:00'", [True, True, False, False, False]),
    ("ts = '2026-01-01T00:01:00.000000+00:00'", [False, False, True, False, False]),
    (
        "ts BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T01:00:00Z'",
        [False, True, True, True, False],
    ),
    ("ts IN ('2026-01-02T00:00:00Z', '2026-01-01T00:00:00Z')", [False, True, False, False, True]),
]


@pytest.mark.parametrize(("text", "expected"), OPERATORS, ids=[t for t, _ in OPERATORS])
def test_operator(text: str, expected: list[Any]) -> None:
    got = values(text)
    assert len(got) == TABLE.num_rows
    assert same(got, expected), (got, expected)


def same(got: Sequence[Any], expected: Sequence[Any]) -> bool:
    """Equal, with types (1 is not True, 1.0 is not 1) and the sign of zero checked."""
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected, strict=True):
        if type(g) is not type(e):
            return False
        if isinstance(g, float):
            if math.isnan(g) != math.isnan(e) or (
                g == e and math.copysign(1, g) != math.copysign(1, e)
            ):
                return False
            if not math.isnan(g) and g != e:
                return False
        elif g != e:
            return False
    return True


@pytest.mark.parametrize(
    ("text", "arrow_type", "columns"),
    [
        ("i + 1", pa.int64(), {"i"}),
        ("i + f", pa.float64(), {"i", "f"}),
        ("i / 1", pa.float64(), {"i"}),
        ("s = 'x' AND b", pa.bool_(), {"s", "b"}),
        ("lower(s)", pa.string(), {"s"}),
        ("length(s)", pa.int64(), {"s"}),
        ("CASE WHEN b THEN 1 ELSE 2.5 END", pa.float64(), {"b"}),
        ("coalesce(ts, '2026-01-01T00:00:00Z')", pa.timestamp("us", tz="UTC"), {"ts"}),
        ("NULL", pa.null(), set()),
        ("1 + 1", pa.int64(), set()),
    ],
)
def test_result_type_and_columns(text: str, arrow_type: pa.DataType, columns: set[str]) -> None:
    expr = parse_expression(text, TABLE.schema)
    assert expr.type == arrow_type
    assert expr.columns == frozenset(columns)
    assert expr.text == text
    assert expr.evaluate(TABLE).type == arrow_type


def test_narrow_column_types_are_widened() -> None:
    table = pa.table(
        {
            "n": pa.array([1, None, 3], pa.int16()),
            "g": pa.array([0.5, 1.0, None], pa.float32()),
            "w": pa.array(["a", "b", None], pa.large_string()),
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
            "t": pa.array([T0, T0, T0], pa.timestamp("ms", tz="Europe/Paris")),
        }
    )
    assert values("n * 1000", table) == [1000, None, 3000]
    assert values("g + n", table) == [1.5, None, None]
    assert values("upper(w)", table) == ["A", "B", None]
    assert values("d = 'x'", table) == [True, False, True]
    assert values("t = '2026-01-01T01:00:00+01:00'", table) == [True, True, True]
    assert parse_expression("n", table.schema).type == pa.int64()


def test_evaluate_multi_chunk_and_empty_tables() -> None:
    chunked = pa.concat_tables([TABLE.slice(0, 2), TABLE.slice(2)])
    assert chunked["i"].num_chunks == 2
    for text, expected in OPERATORS:
        assert same(values(text, chunked), expected), text
    empty = TABLE.slice(0, 0)
    for text, _ in OPERATORS:
        assert values(text, empty) == [], text


def test_evaluate_needs_the_columns() -> None:
    expr = parse_expression("i + 1", TABLE.schema)
    with pytest.raises(ValueError, match="lacks column"):
        expr.evaluate(TABLE.drop_columns(["i"]))


# -- parse_filter, parse_value, filter_mask -----------------------------------------


def test_parse_filter_needs_a_boolean() -> None:
    assert parse_filter("i > 1", TABLE.schema).type == pa.bool_()
    for text, got in [("i + 1", "integer"), ("s", "string"), ("f * 2", "float"), ("NULL", "NULL")]:
        with pytest.raises(ExpressionError, match=f"must be a boolean condition, got {got}"):
            parse_filter(text, TABLE.schema)


def test_parse_value_needs_a_number() -> None:
    assert parse_value("i * 2", TABLE.schema).type == pa.int64()
    assert parse_value("f / 2", TABLE.schema).type == pa.float64()
    for text, got in [("s", "string"), ("i > 1", "boolean"), ("ts", "timestamp"), ("NULL", "NULL")]:
        with pytest.raises(ExpressionError, match=f"must be a number, got {got}"):
            parse_value(text, TABLE.schema)


def test_filter_mask_treats_null_as_false() -> None:
    expr = parse_filter("b AND i >= 0", TABLE.schema)
    assert expr.evaluate(TABLE).to_pylist() == [True, None, False, False, None]
    mask = filter_mask(expr, TABLE)
    assert isinstance(mask, pa.Array)
    assert mask.type == pa.bool_()
    assert mask.null_count == 0
    assert mask.to_pylist() == [True, False, False, False, False]
    chunked = pa.concat_tables([TABLE.slice(0, 1), TABLE.slice(1)])
    assert filter_mask(expr, chunked).to_pylist() == mask.to_pylist()
    assert TABLE.filter(mask)["i"].to_pylist() == [1]


def test_filter_mask_rejects_non_boolean() -> None:
    with pytest.raises(ExpressionError, match="not a boolean"):
        filter_mask(parse_expression("i", TABLE.schema), TABLE)


def test_filter_on_normalized_events() -> None:
    rows = [
        {"event_type": "authorization", "status": "approved", "amount_minor": 100_000},
        {"event_type": "authorization", "status": "approved", "amount_minor": 99_999},
        {"event_type": "authorization", "status": "declined", "amount_minor": 500_000},
        {"event_type": "capture", "status": "approved", "amount_minor": 500_000},
    ]
    table = pa.Table.from_pylist(rows, schema=NORMALIZED_SCHEMA)
    expr = parse_filter(
        "event_type = 'authorization' AND status = 'approved' AND amount_minor >= 100000",
        NORMALIZED_SCHEMA,
    )
    assert filter_mask(expr, table).to_pylist() == [True, False, False, False]
    assert expr.columns == {"event_type", "status", "amount_minor"}


# -- errors -------------------------------------------------------------------------

ERRORS: Final[list[tuple[str, list[str]]]] = [
    # unknown columns: suggestion and the valid list
    (
        "amout_minor >= 100",
        [
            "unknown column 'amout_minor'",
            "did you mean 'amount_minor'",
            "valid columns: amount_minor, card_network",
        ],
    ),
    ("\"Status\" = 'x'", ["unknown column 'Status'", "did you mean 'status'"]),
    ("zzz = 1", ["unknown column 'zzz'", "valid columns:"]),
    ("t.status = 'x'", ["only plain column names", "'t.status'"]),
    # type mismatches name the operator and both types
    ("status = 1", ["operator = cannot compare integer and string", "'status = 1'"]),
    ("amount_minor < 'x'", ["operator < cannot compare integer and string"]),
    ("pan_exposure <> 1.5", ["operator <> cannot compare boolean and float"]),
    ("status + 1", ["operator + needs numbers, got string and integer", "'status + 1'"]),
    ("1 * currency", ["operator * needs numbers, got integer and string"]),
    ("status / 2", ["operator / needs numbers, got string and integer"]),
    ("amount_minor % 1.5", ["operator % needs integers, got integer and float"]),
    ("amount_minor AND TRUE", ["operator AND needs booleans, got integer and boolean"]),
    ("status OR pan_exposure", ["operator OR needs booleans, got string and boolean"]),
    ("NOT amount_minor", ["operator NOT needs a boolean, got integer"]),
    ("-status", ["unary - needs a number, got string"]),
    ("status IN (1, 2)", ["operator IN cannot compare integer and string"]),
    ("amount_minor BETWEEN 'a' AND 'b'", ["operator BETWEEN cannot compare integer and string"]),
    ("amount_minor LIKE '1%'", ["operator LIKE needs a string, got integer"]),
    ("status LIKE currency", ["pattern of LIKE must be a string literal"]),
    ("CASE WHEN amount_minor THEN 1 END", ["CASE WHEN needs a boolean condition, got integer"]),
    (
        "CASE WHEN pan_exposure THEN 1 ELSE 'x' END",
        ["CASE branches have different types: integer and string"],
    ),
    ("coalesce(status, 0)", ["coalesce() arguments have different types: integer and string"]),
    ("lower(amount_minor)", ["lower() needs a string, got integer"]),
    ("length(pan_exposure)", ["length() needs a string, got boolean"]),
    ("abs(status)", ["abs() needs a number, got string"]),
    ("occurred_at > 5", ["operator > cannot compare integer and timestamp"]),
    ("occurred_at > status", ["operator > cannot compare string and timestamp"]),
    ("occurred_at + 1", ["operator + needs numbers, got timestamp and integer"]),
    # timestamp literals
    ("occurred_at >= '2026-01-01T00:00:00'", ["'2026-01-01T00:00:00' has no UTC offset"]),
    ("occurred_at >= '2026-01-01'", ["not an RFC 3339 timestamp"]),
    ("occurred_at >= 'yesterday'", ["'yesterday' is not an RFC 3339 timestamp"]),
    ("occurred_at >= '2026-13-01T00:00:00Z'", ["invalid timestamp literal '2026-13-01T00:00:00Z'"]),
    # constructs outside the whitelist
    ("(SELECT 1)", ["subquery is not allowed", "'(SELECT 1)'"]),
    ("amount_minor IN (SELECT amount_minor FROM t)", ["subquery is not allowed"]),
    ("EXISTS (SELECT 1)", ["subquery is not allowed"]),
    ("SELECT 1", ["SQL statements are not allowed"]),
    ("DROP TABLE t", ["SQL statements are not allowed"]),
    ("DELETE FROM t", ["SQL statements are not allowed"]),
    (
        "read_csv('x')",
        [
            "function read_csv() is not supported",
            "abs, coalesce, length, lower, upper",
            "'READ_CSV('x')'",
        ],
    ),
    (
        "frobnicate(amount_minor)",
        ["unknown function frobnicate()", "supported functions: abs, coalesce"],
    ),
    ("now()", ["is not supported", "supported functions"]),
    ("*", ["'*' is not supported"]),
    ("$1", ["query parameters are not allowed"]),
    ("?", ["query parameters are not allowed"]),
    ("1; DROP TABLE t", ["several statements separated by ';'", "'1; DROP TABLE t'"]),
    ("status = 'a'; status = 'b'", ["several statements"]),
    ("status::int = 1", ["cast (CAST, ::) is not supported"]),
    ("status || 'x' = 'y'", ["operator || is not supported"]),
    ("status ILIKE 'a%'", ["ILIKE is not supported"]),
    ("status LIKE 'a!%' ESCAPE '!'", ["LIKE ... ESCAPE is not supported"]),
    ("amount_minor IS TRUE", ["only IS NULL and IS NOT NULL"]),
    ("status x", ["alias (AS) is not supported"]),
    ("amount_minor IN ()", ["IN needs at least one value"]),
    ("99999999999999999999 > amount_minor", ["integer literal out of the 64-bit range"]),
    # syntax errors: one readable line
    ("", ["empty expression"]),
    ("   ", ["empty expression"]),
    ("-- nothing", ["empty expression"]),
    (
        "amount_minor >= 1 AND",
        ["syntax error near 'AND'", "incomplete expression", "'amount_minor >= 1 AND'"],
    ),
    ("(amount_minor > 1", ["syntax error", "expected )"]),
    ("amount_minor > 1)", ["syntax error near ')'", "unexpected token"]),
    ("status = 'approved", ["cannot read", "unterminated string"]),
]


@pytest.mark.parametrize(("text", "fragments"), ERRORS, ids=[t or "<empty>" for t, _ in ERRORS])
def test_error(text: str, fragments: list[str]) -> None:
    message = error_of(text)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert "\x1b" not in message  # no ANSI underlining
    assert not message.startswith("metrics")  # the caller adds where it came from


def test_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)
    with pytest.raises(ValueError, match="unknown column"):
        parse_filter("nope = 1", NORMALIZED_SCHEMA)


def test_syntax_error_of_multiline_text_is_one_line() -> None:
    message = error_of("status = 'approved'\n  AND\n  amount_minor >=")
    assert "\n" not in message
    assert "line 3" in message
    assert "status = 'approved' AND amount_minor >=" in message


def test_unsupported_column_type() -> None:
    schema = pa.schema([("blob", pa.binary()), ("day", pa.date32()), ("naive", pa.timestamp("us"))])
    for column in ("blob", "day", "naive"):
        assert f"column '{column}' has type" in error_of(f"{column} IS NULL", schema)


def test_naive_timestamp_literal_error_suggests_an_offset() -> None:
    message = error_of("window_start < '2026-01-01T00:05:00'")
    assert "write e.g. '2026-01-01T00:05:00Z'" in message


# -- canonical form -----------------------------------------------------------------

SAME_CANONICAL: Final = [
    ("amount_minor>=100000", "amount_minor >= 100000"),
    ("amount_minor >= 100000", "  amount_minor\n\t>=   100000  "),
    (
        "event_type = 'authorization' and status = 'approved'",
        "EVENT_TYPE = 'authorization' AND Status = 'approved'",
    ),
    ("status != 'x'", "status <> 'x'"),
    ("status not in ('a', 'b')", "NOT status IN ('a','b')"),
    ("lower(status) = 'x'", "LOWER( status ) = 'x'"),
    ("amount_minor > 1 -- big ones", "amount_minor > 1 /* big ones */"),
    ("amount_minor > 1", '"amount_minor" > 1'),
    ("occurred_at >= '2026-01-01T01:00:00+01:00'", "occurred_at >= '2026-01-01T00:00:00Z'"),
    ("occurred_at >= '2026-01-01t00:00:00z'", "occurred_at >= '2026-01-01 00:00:00+00:00'"),
    ("status is not null", "status IS NOT NULL"),
    ("case when pan_exposure then 1 else 0 end", "CASE WHEN pan_exposure THEN 1 ELSE 0 END"),
    ("amount_minor > 1;", "amount_minor > 1"),
]
DIFFERENT_CANONICAL: Final = [
    ("amount_minor >= 100000", "amount_minor >= 100001"),
    ("amount_minor >= 100000", "amount_minor > 100000"),
    ("status = 'approved'", "status = 'APPROVED'"),  # string literals keep their case
    (
        "status = 'a' OR status = 'b' AND pan_exposure",
        "(status = 'a' OR status = 'b') AND pan_exposure",
    ),
]


@pytest.mark.parametrize(("a", "b"), SAME_CANONICAL)
def test_canonical_equal(a: str, b: str) -> None:
    x, y = parse_expression(a, NORMALIZED_SCHEMA), parse_expression(b, NORMALIZED_SCHEMA)
    assert x.canonical == y.canonical
    assert x == y
    assert hash(x) == hash(y)
    assert x.text != y.text
    # the canonical form parses back to itself
    assert parse_expression(x.canonical, NORMALIZED_SCHEMA).canonical == x.canonical


@pytest.mark.parametrize(("a", "b"), DIFFERENT_CANONICAL)
def test_canonical_different(a: str, b: str) -> None:
    x, y = parse_expression(a, NORMALIZED_SCHEMA), parse_expression(b, NORMALIZED_SCHEMA)
    assert x.canonical != y.canonical
    assert x != y


def test_canonical_text() -> None:
    expr = parse_expression(
        "event_type='authorization'  and STATUS='approved' and amount_minor>=100000",
        NORMALIZED_SCHEMA,
    )
    assert expr.canonical == (
        "event_type = 'authorization' AND status = 'approved' AND amount_minor >= 100000"
    )
    ts = parse_expression("occurred_at < '2026-03-01T12:00:00.5-02:30'", NORMALIZED_SCHEMA)
    assert ts.canonical == "occurred_at < '2026-03-01T14:30:00.500000Z'"


# -- property: vectorized evaluation == an independent Python evaluator ----------------


@dataclass(frozen=True)
class E:
    """A generated expression: its SQL text, its SQL kind and a per-row Python evaluator."""

    sql: str
    kind: str  # int | float | str | bool | null
    run: Callable[[dict[str, Any]], Any]


class Oracle:
    """SQL semantics in plain Python, one row at a time."""

    @staticmethod
    def int64(value: int | None) -> int | None:
        return value if value is None or MIN64 <= value <= MAX64 else None

    @staticmethod
    def and3(a: bool | None, b: bool | None) -> bool | None:
        if a is False or b is False:
            return False
        return None if a is None or b is None else True

    @staticmethod
    def or3(a: bool | None, b: bool | None) -> bool | None:
        if a is True or b is True:
            return True
        return None if a is None or b is None else False

    @staticmethod
    def not3(a: bool | None) -> bool | None:
        return None if a is None else not a

    @staticmethod
    def as_kind(value: Any, kind: str) -> Any:
        return float(value) if kind == "float" and value is not None else value

    @staticmethod
    def compare(op: str, a: Any, b: Any) -> bool | None:
        if a is None or b is None:
            return None
        return {
            "=": a == b,
            "<>": a != b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[op]

    @staticmethod
    def like(value: str | None, pattern: str) -> bool | None:
        if value is None:
            return None
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, value, re.DOTALL) is not None

    @staticmethod
    def arithmetic(op: str, kind: str, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if op == "/":
            return None if float(b) == 0 else float(a) / float(b)
        if op == "%":
            if b == 0:
                return None
            r = abs(a) % abs(b)
            return -r if a < 0 else r
        a, b = Oracle.as_kind(a, kind), Oracle.as_kind(b, kind)
        r = {"+": a + b, "-": a - b, "*": a * b}[op]
        return Oracle.int64(r) if kind == "int" else r


def unified(*kinds: str) -> str:
    real = {k for k in kinds if k != "null"}
    if real <= {"int", "float"} and "float" in real:
        return "float"
    return real.pop() if real else "null"


ALPHABET: Final = "aAbBéÉ%_' "  # é: two UTF-8 bytes, one character
INT_LITERALS: Final = (
    st.sampled_from([0, 1, -1, 2])
    | st.integers(-100, 100)
    | st.sampled_from([MAX64, -MAX64, 2**62, 2**31])
)
FLOAT_LITERALS: Final = st.sampled_from([0.0, 0.5, -1.5]) | st.integers(-100_000, 100_000).map(
    lambda n: n / 100
)


def int_literal(v: int) -> E:
    return E(f"({v})" if v < 0 else str(v), "int", lambda r: v)


def float_literal(v: float) -> E:
    text = repr(abs(v))
    return E(f"(-{text})" if math.copysign(1, v) < 0 else text, "float", lambda r: v)


def str_literal(v: str) -> E:
    return E("'" + v.replace("'", "''") + "'", "str", lambda r: v)


def column(name: str, kind: str) -> E:
    return E(name, kind, lambda r: r[name])


NULL: Final = E("NULL", "null", lambda r: None)

LITERALS: Final[dict[str, st.SearchStrategy[E]]] = {
    "num": INT_LITERALS.map(int_literal) | FLOAT_LITERALS.map(float_literal),
    "str": st.text(ALPHABET, max_size=3).map(str_literal),
    "bool": st.sampled_from(
        [E("TRUE", "bool", lambda r: True), E("FALSE", "bool", lambda r: False)]
    ),
}
LEAVES: Final[dict[str, st.SearchStrategy[E]]] = {
    "int": st.sampled_from([column("i", "int"), column("j", "int")])
    | INT_LITERALS.map(int_literal),
    "float": st.just(column("f", "float")) | FLOAT_LITERALS.map(float_literal),
    "str": st.sampled_from([column("s", "str"), column("t", "str")])
    | st.text(ALPHABET, max_size=3).map(str_literal),
    "bool": st.sampled_from(
        [
            column("b", "bool"),
            E("TRUE", "bool", lambda r: True),
            E("FALSE", "bool", lambda r: False),
            NULL,
        ]
    ),
}


def arith(op: str, a: E, b: E) -> E:
    kind = "float" if op == "/" else unified(a.kind, b.kind)
    return E(
        f"({a.sql} {op} {b.sql})", kind, lambda r: Oracle.arithmetic(op, kind, a.run(r), b.run(r))
    )


def negate(a: E) -> E:
    if a.kind == "int":
        return E(
            f"(-{a.sql})", "int", lambda r: Oracle.int64(None if a.run(r) is None else -a.run(r))
        )
    return E(f"(-{a.sql})", a.kind, lambda r: None if a.run(r) is None else -a.run(r))


def absolute(a: E) -> E:
    if a.kind == "int":
        return E(
            f"abs({a.sql})",
            "int",
            lambda r: Oracle.int64(None if a.run(r) is None else abs(a.run(r))),
        )
    return E(f"ABS({a.sql})", a.kind, lambda r: None if a.run(r) is None else abs(a.run(r)))


def length(a: E) -> E:
    return E(f"length({a.sql})", "int", lambda r: None if a.run(r) is None else len(a.run(r)))


def case_of(conditions: list[E], results: list[E], default: E | None) -> E:
    kind = unified(*(e.kind for e in [*results, *([default] if default else [])]))
    whens = " ".join(f"WHEN {c.sql} THEN {v.sql}" for c, v in zip(conditions, results, strict=True))
    otherwise = f" ELSE {default.sql}" if default is not None else ""

    def run(r: dict[str, Any]) -> Any:
        for c, v in zip(conditions, results, strict=True):
            if c.run(r) is True:
                return Oracle.as_kind(v.run(r), kind)
        return None if default is None else Oracle.as_kind(default.run(r), kind)

    return E(f"(CASE {whens}{otherwise} END)", kind, run)


def simple_case(subject: E, options: list[E], results: list[E], default: E | None) -> E:
    compare_kind = unified(subject.kind, *(o.kind for o in options))
    conditions = [
        E(
            "unused",
            "bool",
            lambda r, o=o: Oracle.compare(
                "=",
                Oracle.as_kind(subject.run(r), compare_kind),
                Oracle.as_kind(o.run(r), compare_kind),
            ),
        )
        for o in options
    ]
    general = case_of(conditions, results, default)
    whens = " ".join(f"WHEN {o.sql} THEN {v.sql}" for o, v in zip(options, results, strict=True))
    otherwise = f" ELSE {default.sql}" if default is not None else ""
    return E(f"(CASE {subject.sql} {whens}{otherwise} END)", general.kind, general.run)


def coalesce_of(args: list[E]) -> E:
    kind = unified(*(a.kind for a in args))

    def run(r: dict[str, Any]) -> Any:
        for a in args:
            v = a.run(r)
            if v is not None:
                return Oracle.as_kind(v, kind)
        return None

    return E(f"coalesce({', '.join(a.sql for a in args)})", kind, run)


def comparison(op: str, a: E, b: E) -> E:
    kind = unified(a.kind, b.kind)
    return E(
        f"({a.sql} {op} {b.sql})",
        "bool",
        lambda r: Oracle.compare(
            op, Oracle.as_kind(a.run(r), kind), Oracle.as_kind(b.run(r), kind)
        ),
    )


def logical(op: str, a: E, b: E) -> E:
    fn = Oracle.and3 if op == "AND" else Oracle.or3
    return E(f"({a.sql} {op} {b.sql})", "bool", lambda r: fn(a.run(r), b.run(r)))


def is_null(a: E, negated: bool) -> E:
    return E(
        f"({a.sql} IS {'NOT ' if negated else ''}NULL)",
        "bool",
        lambda r: (a.run(r) is None) != negated,
    )


def in_list(a: E, items: list[E], negated: bool) -> E:
    kind = unified(a.kind, *(i.kind for i in items))

    def run(r: dict[str, Any]) -> bool | None:
        x = Oracle.as_kind(a.run(r), kind)
        found: bool | None = False
        for item in items:
            found = Oracle.or3(found, Oracle.compare("=", x, Oracle.as_kind(item.run(r), kind)))
        return Oracle.not3(found) if negated else found

    listed = ", ".join(i.sql for i in items)
    return E(f"({a.sql} {'NOT ' if negated else ''}IN ({listed}))", "bool", run)


def between(a: E, low: E, high: E) -> E:
    kind = unified(a.kind, low.kind, high.kind)

    def run(r: dict[str, Any]) -> bool | None:
        x, lo, hi = (Oracle.as_kind(e.run(r), kind) for e in (a, low, high))
        return Oracle.and3(Oracle.compare(">=", x, lo), Oracle.compare("<=", x, hi))

    return E(f"({a.sql} BETWEEN {low.sql} AND {high.sql})", "bool", run)


def like(a: E, pattern: str, negated: bool) -> E:
    def run(r: dict[str, Any]) -> bool | None:
        matched = Oracle.like(a.run(r), pattern)
        return Oracle.not3(matched) if negated else matched

    word = "NOT LIKE" if negated else "LIKE"
    return E(f"({a.sql} {word} {str_literal(pattern).sql})", "bool", run)


def string_case(fn: str, a: E) -> E:
    method = str.lower if fn == "lower" else str.upper
    return E(f"{fn}({a.sql})", "str", lambda r: None if a.run(r) is None else method(a.run(r)))


@functools.cache
def exprs(kind: str, depth: int) -> st.SearchStrategy[E]:
    """Expressions of `kind` ("num" = int or float) nested at most `depth` deep."""
    if kind == "num":
        return exprs("int", depth) | exprs("float", depth)
    leaf = LEAVES[kind]
    if depth == 0:
        return leaf

    def sub(kind: str) -> st.SearchStrategy[E]:
        return exprs(kind, depth - 1)

    bools = sub("bool")
    options: list[st.SearchStrategy[E]] = [leaf]
    if kind in ("int", "float"):
        same = sub(kind)
        options += [
            st.builds(negate, same),
            st.builds(absolute, same),
            st.builds(
                lambda cs, d: case_of([c for c, _ in cs], [v for _, v in cs], d),
                st.lists(st.tuples(bools, same), min_size=1, max_size=2),
                st.none() | same,
            ),
            st.builds(coalesce_of, st.lists(same, min_size=1, max_size=3)),
        ]
    if kind == "int":
        ints = sub("int")
        options += [
            st.builds(arith, st.sampled_from(["+", "-", "*", "%"]), ints, ints),
            st.builds(length, sub("str")),
            st.builds(
                lambda s, pairs, d: simple_case(s, [o for o, _ in pairs], [v for _, v in pairs], d),
                ints,
                st.lists(st.tuples(sub("num"), ints), min_size=1, max_size=2),
                st.none() | ints,
            ),
        ]
    if kind == "float":
        nums = sub("num")
        options += [
            st.builds(arith, st.just("/"), nums, nums),
            st.builds(arith, st.sampled_from(["+", "-", "*"]), sub("float"), nums),
            st.builds(arith, st.sampled_from(["+", "-", "*"]), nums, sub("float")),
            # int and float branches mix into float
            st.builds(lambda c, v, d: case_of([c], [v], d), bools, nums, sub("float")),
            st.builds(lambda a, b: coalesce_of([a, b]), nums, sub("float")),
        ]
    if kind == "str":
        strs = sub("str")
        options += [
            st.builds(string_case, st.sampled_from(["lower", "upper"]), strs),
            st.builds(
                lambda cs, d: case_of([c for c, _ in cs], [v for _, v in cs], d),
                st.lists(st.tuples(bools, strs), min_size=1, max_size=2),
                st.none() | strs,
            ),
            st.builds(coalesce_of, st.lists(strs | st.just(NULL), min_size=1, max_size=3)),
        ]
    if kind == "bool":
        comparable = st.sampled_from(["num", "str", "bool"])
        ops = st.sampled_from(["=", "<>", "!=", "<", "<=", ">", ">="])

        def in_of(k: str) -> st.SearchStrategy[E]:
            literal = LITERALS[k] | st.just(NULL)  # all-literal lists take a faster path
            items = st.lists(literal, min_size=1, max_size=3) | st.lists(
                sub(k) | st.just(NULL), min_size=1, max_size=3
            )
            return st.builds(in_list, sub(k), items, st.booleans())

        options += [
            comparable.flatmap(lambda k: st.builds(comparison, ops, sub(k), sub(k))),
            st.builds(logical, st.sampled_from(["AND", "OR"]), bools, bools),
            st.builds(
                lambda a: E(f"(NOT {a.sql})", "bool", lambda r: Oracle.not3(a.run(r))), bools
            ),
            st.builds(is_null, sub("num") | sub("str") | bools, st.booleans()),
            comparable.flatmap(in_of),
            comparable.flatmap(lambda k: st.builds(between, sub(k), sub(k), sub(k))),
            st.builds(like, sub("str"), st.text("aAb%_", max_size=4), st.booleans()),
        ]
    return st.one_of(options)


ROW: Final = st.fixed_dictionaries(
    {
        "i": st.none() | st.sampled_from([0, 1, -1]) | st.integers(-50, 50),
        "j": st.none()
        | st.integers(-3, 3)
        | st.sampled_from([MIN64, MAX64, 2**62, -(2**62), 2**31]),
        "f": st.integers(-10_000, 10_000).map(lambda n: n / 8) | st.sampled_from([0.0, -0.0, 1e15]),
        "s": st.none() | st.text(ALPHABET, max_size=4),
        "t": st.text(ALPHABET, max_size=3),
        "b": st.none() | st.booleans(),
    }
)
SCHEMA: Final = pa.schema(
    [
        ("i", pa.int64()),
        ("j", pa.int64()),
        ("f", pa.float64()),
        ("s", pa.string()),
        ("t", pa.string()),
        ("b", pa.bool_()),
    ]
)
ARROW_OF: Final = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "null": pa.null(),
}


@settings(max_examples=1000, deadline=None)
@given(
    expr=st.sampled_from(["int", "float", "str", "bool"]).flatmap(lambda k: exprs(k, 3)),
    rows=st.lists(ROW, max_size=8),
    split=st.integers(0, 8),
)
def test_vectorized_equals_python_oracle(expr: E, rows: list[dict[str, Any]], split: int) -> None:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    if 0 < split < len(rows):  # several chunks, as after concatenating batches
        table = pa.concat_tables([table.slice(0, split), table.slice(split)])
    parsed: Expression = parse_expression(expr.sql, SCHEMA)
    got = parsed.evaluate(table)
    assert len(got) == len(rows)
    expected = [Oracle.as_kind(expr.run(row), expr.kind) for row in rows]
    if parsed.type == pa.null():  # e.g. coalesce(NULL, NULL): NULL of no type
        assert all(v is None for v in expected)
    else:
        assert parsed.type == ARROW_OF[expr.kind]
    assert same(got.to_pylist(), expected), (expr.sql, got.to_pylist(), expected)


EDGE_INTS: Final = [None, 0, 1, -1, 2, -2, 3, -5, MIN64, MIN64 + 1, MAX64, 2**62, -(2**62), 2**32]
EDGE_FLOATS: Final = [None, 0.0, -0.0, 0.5, -2.0, 3.0, 1e300]
EDGE_ROWS: Final = [
    {"x": x, "y": y, "z": EDGE_FLOATS[(i + j) % len(EDGE_FLOATS)]}
    for i, x in enumerate(EDGE_INTS)
    for j, y in enumerate(EDGE_INTS)
]
EDGE_SCHEMA: Final = pa.schema([("x", pa.int64()), ("y", pa.int64()), ("z", pa.float64())])
X, Y, Z = column("x", "int"), column("y", "int"), column("z", "float")
EDGE_EXPRESSIONS: Final = [
    *(arith(op, a, b) for op in "+-*/%" for a, b in [(X, Y), (Y, X), (X, int_literal(-1))]),
    *(arith(op, a, b) for op in "+-*/" for a, b in [(X, Z), (Z, Y), (Z, Z)]),
    negate(X),
    absolute(X),
    negate(Z),
    *(comparison(op, a, b) for op in ["=", "<", ">="] for a, b in [(X, Y), (X, Z)]),
    between(X, Y, int_literal(2)),
    between(Z, X, Y),
    in_list(X, [int_literal(0), int_literal(-1), NULL], negated=False),
    in_list(X, [int_literal(1), float_literal(0.0)], negated=True),
    in_list(Z, [float_literal(0.0), float_literal(0.5)], negated=False),
    in_list(X, [Y, int_literal(0)], negated=False),
    case_of(
        [comparison(">", X, int_literal(0)), comparison(">", X, int_literal(2))],
        [int_literal(1), int_literal(2)],
        None,
    ),
    case_of([comparison(">", X, Y)], [X], Z),
]


@pytest.mark.parametrize("expr", EDGE_EXPRESSIONS, ids=[e.sql for e in EDGE_EXPRESSIONS])
def test_arithmetic_edges_equal_python_oracle(expr: E) -> None:
    """Every pair of edge values (overflow, zero divisors, signed zeros, ties, NULL)."""
    table = pa.Table.from_pylist(EDGE_ROWS, schema=EDGE_SCHEMA)
    got = parse_expression(expr.sql, EDGE_SCHEMA).evaluate(table).to_pylist()
    expected = [Oracle.as_kind(expr.run(row), expr.kind) for row in EDGE_ROWS]
    assert same(got, expected), [
        (row, g, e)
        for row, g, e in zip(EDGE_ROWS, got, expected, strict=True)
        if not same([g], [e])
    ]
