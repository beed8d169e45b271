"""Plugin registries: entry points of `paymetrics.validators` and `paymetrics.extractors`.

The example plugin (examples/paymetrics-example-plugin) is made discoverable by writing
its dist-info into a tmp directory (tests/plugin_site.py); its entry points are passed to
`load_plugins(found=...)`, so nothing is installed and no process-wide state changes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from tests.plugin_site import build_plugin_site

from paymetrics.config.model import Settings
from paymetrics.metrics.dynamic import PARTIAL_SCHEMA
from paymetrics.metrics.extractors import Extractor, extract_all, resolve_extractor
from paymetrics.plugins import PluginError, load_plugins
from paymetrics.validate import BUILTIN_RULES, RULES, Rule, resolve_rule
from paymetrics.validate import _check_rule as check_rule


@pytest.fixture
def plugin_site(tmp_path: Path) -> Iterator[Path]:
    site = build_plugin_site(tmp_path / "site")
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.startswith("paymetrics_example_plugin")]:
            del sys.modules[name]


def example_points(site: Path, group: str) -> list[EntryPoint]:
    (dist,) = distributions(path=[str(site)])
    return [p for p in dist.entry_points if p.group == group]


def point(name: str, value: str, group: str = "paymetrics.validators") -> EntryPoint:
    return EntryPoint(name, value, group)


def test_builtins_are_registered_through_entry_points() -> None:
    assert set(RULES) == {r.name for r in BUILTIN_RULES}
    from importlib.metadata import entry_points

    registered = {p.name: p.load() for p in entry_points(group="paymetrics.validators")}
    assert {n: registered[n] for n in RULES} == RULES


def test_without_metadata_the_builtins_remain() -> None:
    assert load_plugins("paymetrics.validators", Rule, BUILTIN_RULES, found=[]) == RULES


def test_example_plugin_rule_is_loaded(plugin_site: Path) -> None:
    found = example_points(plugin_site, "paymetrics.validators")
    rules = load_plugins(
        "paymetrics.validators", Rule, BUILTIN_RULES, check=check_rule, found=found
    )
    rule_class = rules["merchant_allowlist"]
    rule = rule_class({"prefixes": ["mch_0"], "merchants": ["shop"]})
    table = pa.table({"merchant_id": ["mch_0ab", "mch_1cd", "shop", "shop2"]})
    assert rule.invalid(table).tolist() == [False, True, False, True]
    assert rule.reason == "merchant_not_allowed"
    assert "'mch_1cd'" in rule.describe(table, 1)


def test_a_plugin_that_fails_to_import_is_named(plugin_site: Path) -> None:
    (good,) = example_points(plugin_site, "paymetrics.validators")
    broken = EntryPoint(good.name, "paymetrics_example_plugin.missing:Rule", good.group)
    broken._for(good.dist)  # type: ignore[attr-defined]  # what importlib does per distribution
    with pytest.raises(PluginError) as error:
        load_plugins("paymetrics.validators", Rule, BUILTIN_RULES, found=[broken])
    message = str(error.value)
    assert "'merchant_allowlist'" in message
    assert "paymetrics-example-plugin 0.1.0" in message
    assert "ModuleNotFoundError" in message


def test_a_plugin_that_is_not_a_rule_is_named() -> None:
    with pytest.raises(
        PluginError, match=r"'bad'.*not a subclass of paymetrics.validate.base.Rule"
    ):
        load_plugins("paymetrics.validators", Rule, (), found=[point("bad", "json:dumps")])


def test_duplicate_names_conflict() -> None:
    # a different class under a built-in's name
    with pytest.raises(PluginError, match=r"two plugins are named 'currency_iso4217'"):
        load_plugins(
            "paymetrics.validators",
            Rule,
            BUILTIN_RULES,
            found=[point("currency_iso4217", "tests.unit.test_plugins:OtherCurrencyRule")],
        )
    # the built-ins' own entry points are no conflict
    same = point("currency_iso4217", "paymetrics.validate.iso:CurrencyRule")
    assert load_plugins("paymetrics.validators", Rule, BUILTIN_RULES, found=[same]) == RULES


def test_entry_point_and_class_names_must_agree() -> None:
    with pytest.raises(PluginError, match="must equal the entry point's name"):
        load_plugins(
            "paymetrics.validators",
            Rule,
            (),
            found=[point("other_name", "paymetrics.validate.iso:CurrencyRule")],
        )


def test_a_reason_must_be_a_lower_snake_code() -> None:
    with pytest.raises(PluginError, match="reason 'Not Allowed!' is neither"):
        load_plugins(
            "paymetrics.validators",
            Rule,
            (),
            check=check_rule,
            found=[point("bad_reason", "tests.unit.test_plugins:BadReasonRule")],
        )


def test_resolve_rule_lists_valid_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown validation rule 'nope'; valid rules: .*currency"
    ):
        resolve_rule("nope")
    with pytest.raises(ValueError, match=r"unknown extractor 'nope'; valid extractors:"):
        resolve_extractor("nope")


def test_config_accepts_plugin_rules_and_checks_their_params(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = example_points(plugin_site, "paymetrics.validators")
    loaded: dict[str, type[Rule]] = load_plugins("paymetrics.validators", Rule, (), found=found)
    monkeypatch.setitem(RULES, "merchant_allowlist", loaded["merchant_allowlist"])
    settings = Settings.model_validate(
        {"validation": {"rules": {"merchant_allowlist": {"params": {"prefixes": ["mch_"]}}}}}
    )
    assert settings.validation.rules["merchant_allowlist"].params == {"prefixes": ["mch_"]}
    with pytest.raises(ValidationError, match=r"merchant_allowlist.params: prefixes: Input should"):
        Settings.model_validate(
            {"validation": {"rules": {"merchant_allowlist": {"params": {"prefixes": 3}}}}}
        )


def test_config_rejects_unknown_extractors() -> None:
    with pytest.raises(ValidationError, match=r"unknown extractor 'nope'"):
        Settings.model_validate({"extractors": {"nope": {}}})


def test_example_extractor_partials(plugin_site: Path) -> None:
    found = example_points(plugin_site, "paymetrics.extractors")
    extractors: dict[str, type[Extractor]] = load_plugins(
        "paymetrics.extractors", Extractor, (), found=found
    )
    extractor = extractors["refund_ratio_by_country"]()
    ts = pa.array([0, 10, 3_600_000_001, 20, 30], pa.timestamp("us", tz="UTC"))
    events = pa.table(
        {
            "occurred_at": ts,
            "event_type": ["capture", "refund", "refund", "authorization", "capture"],
            "country": ["DE", "DE", "DE", "DE", None],
        }
    )
    out = extract_all(events, [extractor])
    assert out.schema == PARTIAL_SCHEMA
    rows = sorted(
        (r["window_start"].timestamp(), r["dimensions"], r["count"], r["numerator"])
        for r in out.to_pylist()
    )
    assert rows == [
        (0.0, '{"country":"DE"}', 2, 1),
        (0.0, '{"country":null}', 1, 0),
        (3600.0, '{"country":"DE"}', 1, 1),
    ]


def test_extractor_output_is_checked() -> None:
    class Wrong(Extractor):
        name = "wrong"
        window = 60

        def extract(self, events: pa.Table) -> pa.Table:
            return pa.table({"metric_name": ["wrong"]})

    with pytest.raises(ValueError, match=r"extractor 'wrong' returned columns \['metric_name'\]"):
        extract_all(pa.table({"x": [1]}), [Wrong()])


class OtherCurrencyRule(Rule):
    name = "currency_iso4217"
    reason = "other"

    def invalid(self, table: pa.Table) -> object:  # type: ignore[override]
        raise NotImplementedError

    def describe(self, table: pa.Table, row: int) -> str:
        raise NotImplementedError


class BadReasonRule(OtherCurrencyRule):
    name = "bad_reason"
    reason = "Not Allowed!"
