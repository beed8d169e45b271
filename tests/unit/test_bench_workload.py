"""The bench's `rules` workload (the issue-6 bar): 20 valid rules covering every
aggregate, every compliance rule on, and an FX rate for every currency the simulator
produces, so no authorization escapes the amount rules."""

from __future__ import annotations

import pytest

from paymetrics.bench import RULES_20, WORKLOADS, workload_config
from paymetrics.config.manager import pipeline_options
from paymetrics.config.model import Settings
from paymetrics.metrics.dynamic import AGGREGATES
from paymetrics.simulator.catalog import REGIONS


def test_rules_workload_compiles_to_twenty_rules_and_every_compliance_rule() -> None:
    config = workload_config("rules")
    assert config is not None
    options = pipeline_options(Settings.model_validate(config), None)
    assert len(options.metric_rules) == len(RULES_20) == 20
    assert {r.aggregate for r in options.metric_rules} == set(AGGREGATES)
    assert options.compliance is not None
    assert len(options.compliance.rules) == 7


def test_rules_workload_converts_every_simulated_currency() -> None:
    config = workload_config("rules")
    assert config is not None
    rates = set(config["fx"]["rates"]) | {config["fx"]["reporting_currency"]}
    assert {r.currency for r in REGIONS} <= rates


def test_unknown_workload_names_the_valid_ones() -> None:
    assert workload_config("none") is None
    with pytest.raises(ValueError, match="valid workloads: none, rules"):
        workload_config("everything")
    assert WORKLOADS == ("none", "rules")
