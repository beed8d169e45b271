"""Rule expressions from configuration, e.g. `status = 'approved' AND amount_minor >= 100000`.

Why a language of our own rather than Python or raw SQL:

* Safe: the text is parsed by sqlglot (PostgreSQL dialect) and translated through a strict
  whitelist of node types; nothing is ever passed to `eval`, a database or a file reader.
  Subqueries, table functions, unknown functions, `*`, parameters and several statements
  are rejected by name.
* Vectorized: an `Expression` evaluates whole Arrow columns with `pyarrow.compute`, never
  row by row in Python.
* Checked at load time: columns and types are checked against the event schema when the
  configuration is loaded, so a typo fails the config, not a batch at 3 a.m.

Semantics are SQL's: three-valued logic, NULL propagates through operators, `x / 0` and
`x % 0` are NULL, integer overflow is NULL (never an exception on data), `/` is true
division (float), `%` takes integers and the sign of the dividend. Integers mixed with
floats are compared and computed as float64. Unquoted identifiers are case-insensitive
(folded to lower case); timestamp columns compare with RFC 3339 string literals that carry
a UTC offset. Every problem is an `ExpressionError` (a `ValueError`) whose message quotes
the offending fragment; callers prefix it with where the expression came from.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, SqlglotError, TokenError

if TYPE_CHECKING:  # sqlglot >= 30 roots its tree at Expr (Func is no Expression subclass)
    from sqlglot.expressions import Expr as _Sql

__all__ = [
    "Expression",
    "ExpressionError",
    "filter_mask",
    "parse_expression",
    "parse_filter",
    "parse_value",
]

DIALECT = "postgres"
FUNCTIONS = ("abs", "coalesce", "length", "lower", "upper")

Kind = Literal["bool", "int", "float", "string", "timestamp", "null"]
_ARROW: dict[Kind, pa.DataType] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "null": pa.null(),
}
_NAMES: dict[Kind, str] = {
    "bool": "boolean",
    "int": "integer",
    "float": "float",
    "string": "string",
    "timestamp": "timestamp",
    "null": "NULL",
}
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MISSING_ARG = re.compile(r"Required keyword: '\w+' missing for")


class ExpressionError(ValueError):
    """An expression that does not parse, uses something not allowed, or does not type-check."""


# -- the evaluable tree -------------------------------------------------------------


class _Node:
    kind: Kind

    def eval(self, table: pa.Table) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class _Lit(_Node):
    kind: Kind
    value: Any  # a pa.Scalar of _ARROW[kind]
    source: _Sql | None = None
    """The sqlglot string literal, when this is one (timestamp comparisons rewrite it)."""

    def eval(self, table: pa.Table) -> Any:
        return self.value


@dataclass(frozen=True, eq=False)
class _Col(_Node):
    kind: Kind
    name: str

    def eval(self, table: pa.Table) -> Any:
        column = table[self.name]
        target = _ARROW[self.kind]
        return column if column.type == target else pc.cast(column, target)


@dataclass(frozen=True, eq=False)
class _Apply(_Node):
    kind: Kind
    fn: Callable[..., Any]
    args: tuple[_Node, ...]

    def eval(self, table: pa.Table) -> Any:
        return self.fn(*(arg.eval(table) for arg in self.args))


# -- vectorized operations with SQL semantics ---------------------------------------


def _null_where(condition: Any, values: Any) -> Any:
    return pc.if_else(condition, pa.scalar(None, values.type), values)


def _int_add(a: Any, b: Any) -> Any:
    try:
        return pc.add_checked(a, b)
    except pa.ArrowInvalid:  # overflow: wrap, then null where the sign flipped
        r = pc.add(a, b)
        return _null_where(
            pc.less(pc.bit_wise_and(pc.bit_wise_xor(a, r), pc.bit_wise_xor(b, r)), 0), r
        )


def _int_subtract(a: Any, b: Any) -> Any:
    try:
        return pc.subtract_checked(a, b)
    except pa.ArrowInvalid:
        r = pc.subtract(a, b)
        return _null_where(
            pc.less(pc.bit_wise_and(pc.bit_wise_xor(a, b), pc.bit_wise_xor(a, r)), 0), r
        )


def _int_multiply(a: Any, b: Any) -> Any:
    try:
        return pc.multiply_checked(a, b)
    except pa.ArrowInvalid:  # a*b overflowed iff (wrapped product) / a != b
        r = pc.multiply(a, b)
        trivial = pc.or_(pc.equal(a, 0), pc.equal(a, -1))
        q = pc.divide(r, pc.if_else(trivial, 1, a))
        overflow = pc.or_(
            pc.and_(pc.invert(trivial), pc.not_equal(q, b)),
            pc.and_(pc.equal(a, -1), pc.equal(b, _INT64_MIN)),
        )
        return _null_where(overflow, r)


def _int_negate(a: Any) -> Any:
    try:
        return pc.negate_checked(a)
    except pa.ArrowInvalid:
        return _null_where(pc.equal(a, _INT64_MIN), pc.negate(a))


def _int_abs(a: Any) -> Any:
    try:
        return pc.abs_checked(a)
    except pa.ArrowInvalid:
        return _null_where(pc.equal(a, _INT64_MIN), pc.abs(a))


def _int_remainder(a: Any, b: Any) -> Any:
    """Truncated remainder (sign of the dividend), NULL for `% 0`."""
    zero = pc.equal(b, 0)
    divisor = pc.if_else(pc.or_(zero, pc.equal(b, -1)), 1, b)  # x % -1 == x % 1 == 0
    r = pc.subtract(a, pc.multiply(pc.divide(a, divisor), divisor))
    return _null_where(zero, r)


def _true_divide(a: Any, b: Any) -> Any:
    zero = pc.equal(b, 0.0)
    return _null_where(zero, pc.divide(a, pc.if_else(zero, 1.0, b)))


def _in(values: Any, *items: Any) -> Any:
    """`values IN (items)`: TRUE on a match, else NULL if values or an item is NULL."""
    present = [i.as_py() for i in items if i.is_valid]
    if pa.types.is_floating(values.type):  # is_in hashes: make -0.0 equal 0.0, as `=` does
        values, present = pc.add(values, 0.0), [v + 0.0 for v in present]
    match = pc.is_in(values, value_set=pa.array(present, values.type))
    result = pc.if_else(pc.is_valid(values), match, pa.scalar(None, pa.bool_()))
    if len(present) < len(items):
        result = pc.if_else(result, True, pa.scalar(None, pa.bool_()))
    return result


def _any_equal(values: Any, *items: Any) -> Any:
    result = pc.equal(values, items[0])
    for item in items[1:]:
        result = pc.or_kleene(result, pc.equal(values, item))
    return result


def _between(values: Any, low: Any, high: Any) -> Any:
    return pc.and_kleene(pc.greater_equal(values, low), pc.less_equal(values, high))


def _case(count: int) -> Callable[..., Any]:
    """CASE with `count` WHEN branches: args are the conditions, then the values, then ELSE."""

    def run(*args: Any) -> Any:
        conditions = pc.make_struct(*args[:count], field_names=[str(i) for i in range(count)])
        return pc.case_when(conditions, *args[count:])

    return run


def _cast(kind: Kind) -> Callable[[Any], Any]:
    target = _ARROW[kind]

    def run(values: Any) -> Any:
        return pc.cast(values, target, safe=False)  # int64 -> float64 rounds, as in SQL

    return run


def _like(pattern: str, negate: bool) -> Callable[[Any], Any]:
    def run(values: Any) -> Any:
        matched = pc.match_like(values, pattern=pattern)
        return pc.invert(matched) if negate else matched

    return run


def _length(values: Any) -> Any:
    return pc.cast(pc.utf8_length(values), pa.int64())


_COMPARE: dict[type[_Sql], tuple[str, Callable[..., Any]]] = {
    exp.EQ: ("=", pc.equal),
    exp.NEQ: ("<>", pc.not_equal),
    exp.LT: ("<", pc.less),
    exp.LTE: ("<=", pc.less_equal),
    exp.GT: (">", pc.greater),
    exp.GTE: (">=", pc.greater_equal),
}
_ARITHMETIC: dict[type[_Sql], tuple[str, Callable[..., Any], Callable[..., Any]]] = {
    # operator, integer function, float function
    exp.Add: ("+", _int_add, pc.add),
    exp.Sub: ("-", _int_subtract, pc.subtract),
    exp.Mul: ("*", _int_multiply, pc.multiply),
}
_NUMERIC: frozenset[Kind] = frozenset({"int", "float", "null"})


# -- translation: sqlglot AST -> _Node, with type checks ------------------------------


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fragment(node: _Sql) -> str:
    return _one_line(node.sql(dialect=DIALECT, comments=False))


_CONSTRUCTS = {
    "Alias": "alias (AS)",
    "Array": "array",
    "Cast": "cast (CAST, ::)",
    "TryCast": "cast (TRY_CAST)",
    "DPipe": "operator ||",
    "Escape": "LIKE ... ESCAPE",
    "ILike": "ILIKE",
    "IntDiv": "operator //",
    "Interval": "INTERVAL",
    "JSONExtract": "operator ->",
    "JSONExtractScalar": "operator ->>",
    "NullSafeEQ": "IS NOT DISTINCT FROM",
    "NullSafeNEQ": "IS DISTINCT FROM",
    "Pow": "operator ^",
    "Star": "'*'",
}
"""Readable names of some constructs that are not allowed (else the sqlglot class name)."""


def _not_allowed(node: _Sql) -> str:
    functions = f"(supported functions: {', '.join(FUNCTIONS)})"
    if isinstance(node, exp.Exists | exp.Subquery) or (
        isinstance(node, exp.Query) and node.parent is not None
    ):
        return "subquery is not allowed"
    if isinstance(node, exp.Query | exp.DDL | exp.DML | exp.Command | exp.Drop):
        return "SQL statements are not allowed, only an expression"
    if isinstance(node, exp.Placeholder | exp.Parameter):
        return "query parameters are not allowed"
    name = type(node).__name__
    if name in _CONSTRUCTS:
        return f"{_CONSTRUCTS[name]} is not supported"
    if isinstance(node, exp.Anonymous):
        return f"unknown function {node.name.lower()}() {functions}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}() is not supported {functions}"
    return f"{name} is not supported"


class _Translator:
    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.columns: set[str] = set()
        self.rewrites: list[tuple[_Sql, str, Any]] = []
        """Edits to the sqlglot tree for the canonical form, applied once translation succeeded."""

    # errors
    def fail(self, node: _Sql, message: str) -> ExpressionError:
        return ExpressionError(f"{message}: '{_fragment(node)}'")

    def check_args(self, node: _Sql, allowed: Sequence[str]) -> None:
        for key, value in node.args.items():
            if key not in allowed and value not in (None, False, []):
                raise self.fail(node, f"{key} is not supported in {type(node).__name__}")

    # dispatch
    def translate(self, node: _Sql) -> _Node:
        if isinstance(node, exp.Paren):
            self.check_args(node, ("this",))
            return self.translate(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal | exp.Boolean | exp.Null):
            return self.literal(node)
        if type(node) in _COMPARE:
            return self.compare(node)
        if type(node) in _ARITHMETIC or isinstance(node, exp.Div | exp.Mod):
            return self.arithmetic(node)
        if isinstance(node, exp.And | exp.Or):
            return self.logical(node)
        handler = self.HANDLERS.get(type(node))
        if handler is not None:
            return handler(self, node)
        raise self.fail(node, _not_allowed(node))

    def column(self, node: exp.Column) -> _Node:
        identifier = node.this
        if node.args.get("table") is not None or not isinstance(identifier, exp.Identifier):
            raise self.fail(node, "only plain column names are allowed")
        self.check_args(node, ("this",))
        name = identifier.this if identifier.quoted else identifier.this.lower()
        names = self.schema.names
        if name not in names:
            close = difflib.get_close_matches(name.lower(), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ExpressionError(
                f"unknown column '{name}'{hint}; valid columns: {', '.join(sorted(names))}"
            )
        kind = _kind_of(self.schema.field(name).type)
        if kind is None:
            raise self.fail(
                node, f"column '{name}' has type {self.schema.field(name).type}, not usable here"
            )
        self.columns.add(name)
        quoted = (
            not _PLAIN_IDENTIFIER.fullmatch(name) or name.upper() in Postgres.Tokenizer.KEYWORDS
        )
        self.rewrites.append((node, "this", exp.to_identifier(name, quoted=quoted)))
        return _Col(kind, name)

    def literal(self, node: _Sql) -> _Node:
        if isinstance(node, exp.Null):
            return _Lit("null", pa.scalar(None))
        if isinstance(node, exp.Boolean):
            return _Lit("bool", pa.scalar(bool(node.this), pa.bool_()))
        assert isinstance(node, exp.Literal)
        self.check_args(node, ("this", "is_string"))
        text: str = node.this
        if node.is_string:
            return _Lit("string", pa.scalar(text, pa.string()), source=node)
        if re.fullmatch(r"\d+", text):
            if int(text) > _INT64_MAX:
                raise self.fail(node, "integer literal out of the 64-bit range")
            return _Lit("int", pa.scalar(int(text), pa.int64()))
        try:
            number = float(text)
        except ValueError:
            raise self.fail(node, "not a number") from None
        if number in (float("inf"), float("-inf")):
            raise self.fail(node, "float literal out of range")
        return _Lit("float", pa.scalar(number, pa.float64()))

    # typing helpers
    def timestamp_literal(self, lit: _Lit, node: _Sql) -> _Lit:
        text = lit.value.as_py()
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise self.fail(
                node,
                f"'{text}' is not an RFC 3339 timestamp (e.g. '2026-01-01T00:00:00Z') "
                "to compare with a timestamp",
            )
        if match["offset"] is None:
            raise self.fail(
                node,
                f"timestamp literal '{text}' has no UTC offset (write e.g. '{text}Z')",
            )
        try:
            moment = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
            utc = moment.astimezone(dt.UTC)
        except (ValueError, OverflowError) as error:
            raise self.fail(node, f"invalid timestamp literal '{text}' ({error})") from None
        assert lit.source is not None
        self.rewrites.append((lit.source, "this", utc.isoformat().replace("+00:00", "Z")))
        return _Lit("timestamp", pa.scalar(utc, _ARROW["timestamp"]))

    def unify(self, node: _Sql, what: str, operands: Sequence[_Node]) -> tuple[Kind, list[_Node]]:
        """Common kind of `operands` (int+float -> float, NULL fits all) and them coerced."""
        kinds = {o.kind for o in operands} - {"null"}
        if "timestamp" in kinds:
            operands = [
                self.timestamp_literal(o, node)
                if isinstance(o, _Lit) and o.kind == "string" and o.source is not None
                else o
                for o in operands
            ]
            kinds = {o.kind for o in operands} - {"null"}
        if kinds == {"int", "float"}:
            kinds = {"float"}
        if len(kinds) > 1:
            shown = " and ".join(_NAMES[k] for k in sorted(kinds, key=list(_NAMES).index))
            raise self.fail(node, f"{what} {shown}")
        kind: Kind = kinds.pop() if kinds else "null"
        return kind, [self.coerce(o, kind) for o in operands]

    def coerce(self, operand: _Node, kind: Kind) -> _Node:
        if operand.kind == kind or kind == "null":
            return operand
        if isinstance(operand, _Lit):
            return _Lit(kind, pc.cast(operand.value, _ARROW[kind], safe=False))
        return _Apply(kind, _cast(kind), (operand,))

    def expect(self, node: _Sql, what: str, operand: _Node, kinds: frozenset[Kind]) -> None:
        if operand.kind not in kinds:
            raise self.fail(node, f"{what}, got {_NAMES[operand.kind]}")

    # operators
    def compare(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expression"))
        op, fn = _COMPARE[type(node)]
        left, right = self.translate(node.this), self.translate(node.expression)
        kind, operands = self.unify(node, f"operator {op} cannot compare", [left, right])
        return _predicate(kind, fn, operands)

    def arithmetic(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expression", "typed", "safe"))
        if type(node) in _ARITHMETIC:
            op = _ARITHMETIC[type(node)][0]
        else:
            op = "/" if isinstance(node, exp.Div) else "%"
        left, right = self.translate(node.this), self.translate(node.expression)
        if left.kind not in _NUMERIC or right.kind not in _NUMERIC:
            raise self.fail(
                node,
                f"operator {op} needs numbers, got {_NAMES[left.kind]} and {_NAMES[right.kind]}",
            )
        if isinstance(node, exp.Div):
            left, right = self.coerce(left, "float"), self.coerce(right, "float")
            return _Apply("float", _true_divide, (left, right))
        if isinstance(node, exp.Mod):
            if "float" in (left.kind, right.kind):
                raise self.fail(
                    node,
                    f"operator % needs integers, got {_NAMES[left.kind]} and {_NAMES[right.kind]}",
                )
            return _Apply(
                "int", _int_remainder, (self.coerce(left, "int"), self.coerce(right, "int"))
            )
        _, int_fn, float_fn = _ARITHMETIC[type(node)]
        kind: Kind = "float" if "float" in (left.kind, right.kind) else "int"
        fn = int_fn if kind == "int" else float_fn
        return _Apply(kind, fn, (self.coerce(left, kind), self.coerce(right, kind)))

    def logical(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expression"))
        op = "AND" if isinstance(node, exp.And) else "OR"
        left, right = self.translate(node.this), self.translate(node.expression)
        if {left.kind, right.kind} - {"bool", "null"}:
            raise self.fail(
                node,
                f"operator {op} needs booleans, got {_NAMES[left.kind]} and {_NAMES[right.kind]}",
            )
        fn = pc.and_kleene if op == "AND" else pc.or_kleene
        return _Apply("bool", fn, (self.coerce(left, "bool"), self.coerce(right, "bool")))

    def not_(self, node: _Sql) -> _Node:
        self.check_args(node, ("this",))
        operand = self.translate(node.this)
        self.expect(node, "operator NOT needs a boolean", operand, frozenset({"bool", "null"}))
        return _Apply("bool", pc.invert, (self.coerce(operand, "bool"),))

    def neg(self, node: _Sql) -> _Node:
        self.check_args(node, ("this",))
        operand = self.translate(node.this)
        self.expect(node, "unary - needs a number", operand, _NUMERIC)
        if operand.kind == "float":
            return _Apply("float", pc.negate, (operand,))
        return _Apply("int", _int_negate, (self.coerce(operand, "int"),))

    def is_(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expression", "negate"))
        if not isinstance(node.expression, exp.Null):
            raise self.fail(node, "only IS NULL and IS NOT NULL are supported")
        fn = pc.is_valid if node.args.get("negate") else pc.is_null
        return _Apply("bool", fn, (self.translate(node.this),))

    def in_(self, node: _Sql) -> _Node:
        if node.args.get("query") is not None:
            raise self.fail(node, "subquery is not allowed")
        self.check_args(node, ("this", "expressions"))
        if not node.expressions:
            raise self.fail(node, "IN needs at least one value")
        operands = [self.translate(node.this), *(self.translate(e) for e in node.expressions)]
        kind, operands = self.unify(node, "operator IN cannot compare", operands)
        fn = _in if all(isinstance(o, _Lit) for o in operands[1:]) else _any_equal
        return _predicate(kind, fn, operands)

    def between(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "low", "high"))
        operands = [self.translate(node.args[k]) for k in ("this", "low", "high")]
        kind, operands = self.unify(node, "operator BETWEEN cannot compare", operands)
        return _predicate(kind, _between, operands)

    def like(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expression", "negate"))
        negate = bool(node.args.get("negate"))
        op = "NOT LIKE" if negate else "LIKE"
        values = self.translate(node.this)
        self.expect(node, f"operator {op} needs a string", values, frozenset({"string", "null"}))
        pattern = node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise self.fail(node, f"the pattern of {op} must be a string literal")
        return _Apply("bool", _like(pattern.this, negate), (self.coerce(values, "string"),))

    def case(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "ifs", "default"))
        subject = self.translate(node.this) if node.this is not None else None
        conditions: list[_Node] = []
        values: list[_Node] = []
        for branch in node.args["ifs"]:
            self.check_args(branch, ("this", "true"))
            when = self.translate(branch.this)
            if subject is not None:
                kind, pair = self.unify(branch, "CASE cannot compare", [subject, when])
                when = _predicate(kind, pc.equal, pair)
            self.expect(
                branch, "CASE WHEN needs a boolean condition", when, frozenset({"bool", "null"})
            )
            conditions.append(self.coerce(when, "bool"))
            values.append(self.translate(branch.args["true"]))
        default = node.args.get("default")
        values.append(
            self.translate(default) if default is not None else _Lit("null", pa.scalar(None))
        )
        kind, values = self.unify(node, "CASE branches have different types:", values)
        if kind == "null":
            return _Lit("null", pa.scalar(None))
        values = [
            _Lit(kind, pa.scalar(None, _ARROW[kind])) if v.kind == "null" else v for v in values
        ]
        return _Apply(kind, _case(len(conditions)), (*conditions, *values))

    def coalesce(self, node: _Sql) -> _Node:
        self.check_args(node, ("this", "expressions"))
        operands = [self.translate(node.this), *(self.translate(e) for e in node.expressions)]
        kind, operands = self.unify(node, "coalesce() arguments have different types:", operands)
        if kind == "null":
            return _Lit("null", pa.scalar(None))
        return _Apply(kind, pc.coalesce, tuple(operands))

    def string_function(self, node: _Sql) -> _Node:
        self.check_args(node, ("this",))
        name = type(node).__name__.lower()
        operand = self.translate(node.this)
        self.expect(node, f"{name}() needs a string", operand, frozenset({"string", "null"}))
        operand = self.coerce(operand, "string")
        if isinstance(node, exp.Length):
            return _Apply("int", _length, (operand,))
        fn = pc.utf8_lower if isinstance(node, exp.Lower) else pc.utf8_upper
        return _Apply("string", fn, (operand,))

    def abs_(self, node: _Sql) -> _Node:
        self.check_args(node, ("this",))
        operand = self.translate(node.this)
        self.expect(node, "abs() needs a number", operand, _NUMERIC)
        if operand.kind == "float":
            return _Apply("float", pc.abs, (operand,))
        return _Apply("int", _int_abs, (self.coerce(operand, "int"),))

    HANDLERS: ClassVar[dict[type[_Sql], Callable[[_Translator, Any], _Node]]] = {
        exp.Not: not_,
        exp.Neg: neg,
        exp.Is: is_,
        exp.In: in_,
        exp.Between: between,
        exp.Like: like,
        exp.Case: case,
        exp.Coalesce: coalesce,
        exp.Lower: string_function,
        exp.Upper: string_function,
        exp.Length: string_function,
        exp.Abs: abs_,
    }


def _predicate(kind: Kind, fn: Callable[..., Any], operands: Sequence[_Node]) -> _Node:
    """A comparison of operands unified to `kind`; all-NULL operands give NULL."""
    if kind == "null":
        return _Lit("bool", pa.scalar(None, pa.bool_()))
    return _Apply("bool", fn, tuple(operands))


def _kind_of(dtype: pa.DataType) -> Kind | None:
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_dictionary(dtype) and _kind_of(dtype.value_type) == "string":
        return "string"
    if pa.types.is_timestamp(dtype) and dtype.tz is not None:
        return "timestamp"
    return None


# -- parsing ------------------------------------------------------------------------


def _syntax_error(text: str, error: SqlglotError) -> ExpressionError:
    shown = _one_line(text)
    if isinstance(error, TokenError):
        return ExpressionError(f"cannot read '{shown}': unterminated string or invalid character")
    details = error.errors[0] if isinstance(error, ParseError) and error.errors else {}
    description = str(details.get("description") or str(error).splitlines()[0])
    if _MISSING_ARG.match(description):
        description = "incomplete expression"
    elif description.startswith("Invalid expression / Unexpected token"):
        description = "unexpected token"
    elif description.startswith("Expecting "):
        description = "expected " + description.removeprefix("Expecting ")
    near = _ANSI.sub("", str(details.get("highlight") or "")).strip()
    where = f" near '{near}'" if near else ""
    column = f" (line {details['line']}, column {details['col']})" if "col" in details else ""
    return ExpressionError(f"syntax error{where}{column}: {_ANSI.sub('', description)}: '{shown}'")


def _parse_tree(text: str) -> _Sql:
    try:
        statements = sqlglot.parse(text, read=DIALECT)
    except SqlglotError as error:
        raise _syntax_error(text, error) from None
    except RecursionError:
        raise ExpressionError(f"expression nested too deeply: '{_one_line(text, 60)}'") from None
    found = [s for s in statements if s is not None]
    if not found:
        raise ExpressionError("empty expression")
    block = getattr(exp, "Block", None)  # what sqlglot >= 30 makes of `a; b`
    if len(statements) > 1 or (block is not None and isinstance(found[0], block)):
        raise ExpressionError(
            f"one expression expected, got several statements separated by ';': '{_one_line(text)}'"
        )
    return found[0]


@dataclass(frozen=True)
class Expression:
    """A parsed, type-checked expression. Equal when the canonical SQL and type are equal."""

    text: str = field(compare=False)
    type: pa.DataType
    columns: frozenset[str]
    canonical: str
    """Normalized SQL: keyword case, spacing, comments, `!=`/`<>`, identifier case and
    timestamp literals (in UTC) normalized, so whitespace-only edits compare equal."""
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        """The value for each row of `table` (which must have `columns`)."""
        missing = sorted(self.columns - set(table.column_names))
        if missing:
            raise ValueError(f"table lacks column(s) {', '.join(missing)} used by '{self.text}'")
        result = self._root.eval(table)
        if isinstance(result, pa.Scalar):
            result = pa.repeat(result, table.num_rows)
        if result.type != self.type:
            result = pc.cast(result, self.type)
        return result


def parse_expression(text: str, schema: pa.Schema) -> Expression:
    """Parse and type-check `text` against `schema`; raises ExpressionError."""
    tree = _parse_tree(text)
    translator = _Translator(schema)
    try:
        root = translator.translate(tree)
        for node, key, value in translator.rewrites:
            node.set(key, value)
        canonical = tree.sql(dialect=DIALECT, comments=False)
    except RecursionError:
        raise ExpressionError(f"expression nested too deeply: '{_one_line(text, 60)}'") from None
    return Expression(text, _ARROW[root.kind], frozenset(translator.columns), canonical, root)


def parse_filter(text: str, schema: pa.Schema) -> Expression:
    """A boolean expression (rows pass where it is TRUE)."""
    expression = parse_expression(text, schema)
    if expression.type != pa.bool_():
        raise ExpressionError(
            f"a filter must be a boolean condition, got {_type_name(expression.type)}: "
            f"'{_one_line(text)}'"
        )
    return expression


def parse_value(text: str, schema: pa.Schema) -> Expression:
    """A numeric (integer or float) expression."""
    expression = parse_expression(text, schema)
    if expression.type not in (pa.int64(), pa.float64()):
        raise ExpressionError(
            f"a value must be a number, got {_type_name(expression.type)}: '{_one_line(text)}'"
        )
    return expression


def filter_mask(expr: Expression, table: pa.Table) -> pa.Array:
    """Boolean mask of the rows of `table` where `expr` is TRUE (NULL counts as FALSE)."""
    if expr.type != pa.bool_():
        raise ExpressionError(f"not a boolean condition ({_type_name(expr.type)}): '{expr.text}'")
    mask = pc.fill_null(expr.evaluate(table), False)
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def _type_name(dtype: pa.DataType) -> str:
    for kind, arrow in _ARROW.items():
        if arrow == dtype:
            return _NAMES[kind]
    return str(dtype)
