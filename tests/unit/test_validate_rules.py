"""`paymetrics.validate`: each registered rule, the registry, and how rules compose."""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import pyarrow as pa
import pytest

from paymetrics.decode import Rejects
from paymetrics.events import Reason
from paymetrics.metrics.windows import to_epoch_us
from paymetrics.normalize import NORMALIZED_SCHEMA
from paymetrics.validate import DEFAULT_RULES, RULES, Rule, resolve_rule, resolve_rules, validate

US_2024: Final = to_epoch_us(dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC))
FIRST_US: Final = to_epoch_us(dt.datetime(1, 1, 1, tzinfo=dt.UTC))
LAST_US: Final = to_epoch_us(dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC))

DEFAULT_ROW: Final[dict[str, object]] = {
    "event_id": "e",
    "event_type": "authorization",
    "transaction_id": "t",
    "occurred_at": US_2024,
    "merchant_id": "m",
    "amount_minor": 100,
    "currency": "USD",
    "status": "approved",
    "payment_method": "card",
    "decline_code": None,
    "card_network": None,
    "latency_ms": None,
    "country": None,
    "channel": None,
    "customer_id": None,
    "schema_version": "1",
    "pan_exposure": False,
    "window_start": US_2024,
    "source_position": 1,
}


def table(*rows: dict[str, object]) -> pa.Table:
    """A normalized table; timestamps given as µs since the epoch; message_index = row * 10."""
    full = []
    for i, changes in enumerate(rows):
        row = {**DEFAULT_ROW, "event_id": f"e{i}", "message_index": i * 10, **changes}
        full.append(row)
    columns = {}
    for f in NORMALIZED_SCHEMA:
        values = [r[f.name] for r in full]
        if pa.types.is_timestamp(f.type):
            columns[f.name] = pa.array(values, pa.int64()).cast(f.type)
        else:
            columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=NORMALIZED_SCHEMA)


# rule name -> (valid rows, invalid rows)
CASES: Final[dict[str, tuple[list[dict[str, object]], list[dict[str, object]]]]] = {
    "currency_iso4217": (
        [{"currency": "USD"}, {"currency": "EUR"}, {"currency": "XAU"}, {"currency": "XXX"}],
        [
            {"currency": "XYZ"},
            {"currency": "HRK"},
            {"currency": "usd"},  # the rule sees normalized (upper-case) values only
            {"currency": "US"},
            {"currency": ""},
            {"currency": "UſD"},
        ],
    ),
    "country_iso3166": (
        [{"country": "DE"}, {"country": "AQ"}, {"country": None}],
        [{"country": "UK"}, {"country": "EU"}, {"country": "XK"}, {"country": "USA"}],
    ),
    "occurred_at_range": (
        [{"occurred_at": US_2024}, {"occurred_at": 0}, {"occurred_at": -1}],
        [{"occurred_at": FIRST_US - 1}, {"occurred_at": LAST_US + 1}],
    ),
    "no_nul_characters": (
        [{"merchant_id": "m\\u0000"}, {"merchant_id": "ok", "customer_id": None}],
        [{"merchant_id": "a\x00b"}, {"merchant_id": "\x00"}, {"merchant_id": "end\x00"}],
    ),
}
REASONS: Final = {
    "currency_iso4217": Reason.UNKNOWN_CURRENCY,
    "country_iso3166": Reason.UNKNOWN_COUNTRY,
    "occurred_at_range": Reason.INVALID_TIMESTAMP,
    "no_nul_characters": Reason.INVALID_VALUE,
}
FIELDS: Final = {
    "currency_iso4217": "currency",
    "country_iso3166": "country",
    "occurred_at_range": "occurred_at",
    "no_nul_characters": "merchant_id",
}


def test_every_registered_rule_has_cases() -> None:
    assert set(RULES) == set(CASES)
    assert set(DEFAULT_RULES) == set(RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_accepts_valid_rows(name: str) -> None:
    valid, _ = CASES[name]
    rule = resolve_rule(name)
    assert rule.invalid(table(*valid)).tolist() == [False] * len(valid)
    rejects = Rejects()
    assert validate(table(*valid), [rule], rejects).tolist() == [True] * len(valid)
    assert len(rejects) == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_rejects_invalid_rows(name: str) -> None:
    valid, invalid = CASES[name]
    rows = [valid[0], *invalid]
    rule = resolve_rule(name)
    assert rule.name == name
    assert rule.reason is REASONS[name]
    assert rule.invalid(table(*rows)).tolist() == [False] + [True] * len(invalid)
    rejects = Rejects()
    ok = validate(table(*rows), [rule], rejects)
    assert ok.tolist() == [True] + [False] * len(invalid)
    assert rejects.index == [10 * i for i in range(1, len(rows))]  # message_index, not row
    assert rejects.reason == [REASONS[name]] * len(invalid)
    assert rejects.event_id == [f"e{i}" for i in range(1, len(rows))]
    for text in rejects.message:
        assert text.startswith(FIELDS[name]), text


def test_rule_message_names_the_value() -> None:
    rejects = Rejects()
    validate(table({"currency": "XYZ"}, {"country": "UK"}), resolve_rules(DEFAULT_RULES), rejects)
    assert "XYZ" in rejects.message[0]
    assert "UK" in rejects.message[1]


@pytest.mark.parametrize("us", [FIRST_US, FIRST_US + 1, LAST_US, LAST_US - 1])
def test_occurred_at_range_accepts_the_edges_of_years_1_and_9999(us: int) -> None:
    """Contract §7: invalid only when the UTC instant falls *outside* years 0001–9999."""
    assert resolve_rule("occurred_at_range").invalid(table({"occurred_at": us})).tolist() == [False]


def test_resolve_rule_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        resolve_rule("nope")
    for name in RULES:
        assert name in str(info.value)


def test_resolve_rules_fails_on_first_unknown() -> None:
    with pytest.raises(ValueError, match="currency_iso4217"):
        resolve_rules(["country_iso3166", "Currency_ISO4217"])


def test_resolve_rule_passes_instances_through() -> None:
    rule = RULES["country_iso3166"]()
    assert resolve_rule(rule) is rule
    resolved = resolve_rules(["currency_iso4217", rule])
    assert isinstance(resolved[0], RULES["currency_iso4217"])
    assert resolved[1] is rule
    assert all(isinstance(r, Rule) for r in resolve_rules(DEFAULT_RULES))


BOTH_BAD: Final = {"currency": "XYZ", "country": "UK", "occurred_at": FIRST_US - 1}


@pytest.mark.parametrize(
    ("order", "first"),
    [
        (["currency_iso4217", "country_iso3166", "occurred_at_range"], Reason.UNKNOWN_CURRENCY),
        (["country_iso3166", "currency_iso4217", "occurred_at_range"], Reason.UNKNOWN_COUNTRY),
        (["occurred_at_range", "country_iso3166", "currency_iso4217"], Reason.INVALID_TIMESTAMP),
    ],
)
def test_first_failing_rule_wins_and_nothing_is_rejected_twice(
    order: list[str], first: Reason
) -> None:
    rows = table(
        {},
        BOTH_BAD,
        {"currency": "XYZ"},
        {"country": "UK"},
        {"occurred_at": LAST_US + 1},
        {},
    )
    rejects = Rejects()
    ok = validate(rows, resolve_rules(order), rejects)
    assert ok.tolist() == [True, False, False, False, False, True]
    assert sorted(rejects.index) == [10, 20, 30, 40]
    by_index = dict(zip(rejects.index, rejects.reason, strict=True))
    assert by_index == {
        10: first,
        20: Reason.UNKNOWN_CURRENCY,
        30: Reason.UNKNOWN_COUNTRY,
        40: Reason.INVALID_TIMESTAMP,
    }


def test_no_rules_rejects_nothing() -> None:
    rejects = Rejects()
    assert validate(table(BOTH_BAD), [], rejects).tolist() == [True]
    assert len(rejects) == 0


def test_empty_table() -> None:
    rejects = Rejects()
    ok = validate(NORMALIZED_SCHEMA.empty_table(), resolve_rules(DEFAULT_RULES), rejects)
    assert ok.shape == (0,)
    assert ok.dtype == np.bool_
    assert len(rejects) == 0


def test_no_nul_characters_names_whichever_column_holds_it() -> None:
    rejects = Rejects()
    rows = table({"customer_id": "c\x00"}, {"card_network": "\x00visa"}, {"event_id": "e\x00"})
    validate(rows, [resolve_rule("no_nul_characters")], rejects)
    assert [m.split(":")[0] for m in rejects.message] == ["customer_id", "card_network", "event_id"]


def test_occurred_at_range_takes_configured_bounds() -> None:
    rule = resolve_rule(
        "occurred_at_range",
        {"earliest": "2024-03-01T12:00:00Z", "latest": "2024-03-01T12:00:01+00:00"},
    )
    rows = table(
        {"occurred_at": US_2024 - 1}, {"occurred_at": US_2024}, {"occurred_at": US_2024 + 10**6}
    )
    assert rule.invalid(rows).tolist() == [True, False, True]
    rejects = Rejects()
    validate(rows, [rule], rejects)
    assert rejects.message[0] == (
        "occurred_at: before the configured earliest instant 2024-03-01 12:00:00+00:00"
    )
    assert rejects.message[1].startswith("occurred_at: at or after the configured latest instant")
    with pytest.raises(ValueError, match="earliest must be before latest"):
        resolve_rule(
            "occurred_at_range",
            {"earliest": "2024-01-02T00:00:00Z", "latest": "2024-01-01T00:00:00Z"},
        )
