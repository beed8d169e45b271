"""Compliance building blocks: FX conversion, period bucketing, window judgement."""

from __future__ import annotations

import itertools
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paymetrics.compliance import (
    RULES,
    Compliance,
    Fx,
    minor_unit_exponent,
    resolve_compliance_rule,
)
from paymetrics.compliance.base import BatchView, period_starts
from paymetrics.compliance.windows import WINDOW_US, closed_windows
from paymetrics.config.model import ComplianceSettings, FxSettings
from paymetrics.normalize import NORMALIZED_SCHEMA

US = 1_000_000
RATES = {"EUR": Decimal("1.08"), "JPY": Decimal("0.0067"), "KWD": Decimal("3.25")}


def exact(amount: int, currency: str, fx: Fx) -> int | None:
    rate = Decimal(1) if currency == fx.reporting_currency else fx.rates.get(currency)
    if rate is None:
        return None
    value = (
        Decimal(amount)
        / Decimal(10) ** minor_unit_exponent(currency)
        * rate
        * Decimal(10) ** minor_unit_exponent(fx.reporting_currency)
    )
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def test_minor_units() -> None:
    assert [minor_unit_exponent(c) for c in ("USD", "JPY", "KWD", "CLF", "eur")] == [2, 0, 3, 4, 2]


@given(
    amounts=st.lists(st.integers(0, 10**12), min_size=1, max_size=30),
    currencies=st.lists(st.sampled_from(["USD", "EUR", "JPY", "KWD", "GBP"]), min_size=30),
    reporting=st.sampled_from(["USD", "EUR", "JPY"]),
)
def test_conversion_matches_exact_decimal_arithmetic(
    amounts: list[int], currencies: list[str], reporting: str
) -> None:
    rates = {c: r for c, r in RATES.items() if c != reporting}
    if reporting != "USD":
        rates["USD"] = Decimal("0.93")
    fx = Fx(reporting, rates)
    currency = currencies[: len(amounts)]
    got = fx.convert(pa.array(amounts, pa.int64()), pa.array(currency, pa.string()))
    for value, amount, code in zip(got.tolist(), amounts, currency, strict=True):
        want = exact(amount, code, fx)
        if want is None:  # no rate: not judged
            assert np.isnan(value)
        else:  # float64 arithmetic: exact but for a rounding tie at huge amounts
            assert abs(value - want) <= (0 if amount < 10**9 else 1)


@given(st.integers(-(10**17), 10**17), st.sampled_from([60, 300, 3600, 43_200, 86_400]))
def test_periods_are_aligned_to_the_epoch(instant_us: int, seconds: int) -> None:
    start = period_starts(np.array([instant_us], dtype=np.int64), seconds)
    value = start.cast(pa.int64())[0].as_py()
    assert value % (seconds * US) == 0
    assert value <= instant_us < value + seconds * US


@given(
    start=st.integers(0, 10**15),
    steps=st.lists(st.integers(0, 40 * 60 * US), min_size=1, max_size=20),
)
def test_each_window_is_judged_once(start: int, steps: list[int]) -> None:
    """Over any non-decreasing watermark sequence, the judged ranges tile every window from
    the first event's to the last closed one, without overlap."""
    events = pa.table({f.name: pa.nulls(1, f.type) for f in NORMALIZED_SCHEMA}).set_column(
        3, "occurred_at", pa.array([start], pa.timestamp("us", "UTC"))
    )
    previous: int | None = None
    mark = start
    covered: list[tuple[int, int]] = []
    for step in steps:
        mark += step
        view = BatchView(
            events if previous is None else events.slice(0, 0),
            Fx(),
            source_id="s",
            partition="p",
            previous_watermark_us=previous,
            watermark_us=mark,
        )
        span = closed_windows(view)
        if span is not None:
            covered.append(span)
        previous = mark
    first = start // WINDOW_US * WINDOW_US
    last = mark // WINDOW_US * WINDOW_US
    if first == last:
        assert covered == []
        return
    assert covered[0][0] == first
    assert covered[-1][1] == last
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert all(lo < hi for lo, hi in covered)


def test_registry_and_settings() -> None:
    assert list(RULES) == [
        "large_transaction",
        "daily_aggregate_threshold",
        "structuring",
        "velocity",
        "decline_spike",
        "latency_slo",
        "pan_exposure",
    ]
    with pytest.raises(ValueError, match="valid rules: large_transaction"):
        resolve_compliance_rule("nope")
    assert set(ComplianceSettings.model_fields) - {"enabled", "webhook"} == set(RULES)
    assert Compliance.from_settings(ComplianceSettings(), FxSettings()) is None  # off by default
    compliance = Compliance.from_settings(ComplianceSettings(enabled=True), FxSettings())
    assert compliance is not None
    assert len(compliance.rules) == len(RULES)


def test_a_threshold_in_a_currency_without_a_rate_is_refused() -> None:
    settings = ComplianceSettings.model_validate(
        {"enabled": True, "large_transaction": {"threshold": {"amount": 9000, "currency": "EUR"}}}
    )
    with pytest.raises(ValueError, match="no rate for it"):
        Compliance.from_settings(settings, FxSettings())
    rates = FxSettings(rates={"EUR": Decimal("1.1")})
    compliance = Compliance.from_settings(settings, rates)
    assert compliance is not None
    assert compliance.rules[0].threshold == 990_000  # type: ignore[attr-defined]


def test_the_stores_select_the_history_columns_in_schema_order() -> None:
    """`history_table` pairs the selected columns with HISTORY_SCHEMA by position."""
    from paymetrics.compliance.base import HISTORY_SCHEMA
    from paymetrics.storage.sql import HISTORY_COLUMNS, history_table

    assert tuple(HISTORY_SCHEMA.names) == HISTORY_COLUMNS
    row = ("e1", "c1", "2026-01-01 00:00:00.000001", "authorization", "approved", 5, "USD")
    table = history_table([row], text_times=True)
    assert table.schema == HISTORY_SCHEMA
    assert table["occurred_at"][0].value == 1_767_225_600_000_001
