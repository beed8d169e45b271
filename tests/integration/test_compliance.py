"""Compliance rules end to end: each fires on its simulator scenario, stays silent on
plain traffic, never alerts twice for a key (re-run, redelivery), and SQLite and
PostgreSQL store the same alerts."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from paymetrics.config.manager import pipeline_options
from paymetrics.config.model import ComplianceSettings, Settings
from paymetrics.pipeline import Pipeline, RunStats
from paymetrics.simulator import SimulatorConfig, scenario_info, write_jsonl
from paymetrics.sources import open_source
from paymetrics.storage import open_store

SCENARIOS: dict[str, SimulatorConfig] = {
    "baseline": SimulatorConfig(events=30_000, seed=5, rate_pan_leak=0.002),
    "large_transaction": SimulatorConfig(events=20_000, seed=5, scenario="large_transaction"),
    "daily_aggregate": SimulatorConfig(events=20_000, seed=5, scenario="daily_aggregate"),
    "structuring": SimulatorConfig(events=20_000, seed=5, scenario="structuring"),
    "velocity": SimulatorConfig(events=20_000, seed=5, scenario="velocity"),
    "latency_degradation": SimulatorConfig(events=60_000, seed=5, scenario="latency_degradation"),
    "decline_spike": SimulatorConfig(
        events=100_000, seed=11, merchants=50, scenario="decline_spike"
    ),
}
#: What each scenario must raise (other rules may fire too, e.g. structuring's total
#: also crosses the daily threshold); baseline must raise pan_exposure only.
EXPECTED = {
    "large_transaction": "large_transaction",
    "daily_aggregate": "daily_aggregate_threshold",
    "structuring": "structuring",
    "velocity": "velocity",
    "latency_degradation": "latency_slo",
    "decline_spike": "decline_spike",
}
ALSO_ALLOWED = {"structuring": {"daily_aggregate_threshold"}}
#: Compliance monitoring on, every rule with its default settings.
ON = Settings.model_validate({"compliance": {"enabled": True}})
SLOW = {"decline_spike"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compliance")
    out = {}
    for name, config in SCENARIOS.items():
        path = folder / f"{name}.jsonl"
        with path.open("wb") as handle:
            write_jsonl(config, handle)
        out[name] = path
    return out


def run(db_url: str, path: Path, settings: Settings | None = None, batch: int = 7_000) -> RunStats:
    store = open_store(db_url)
    try:
        store.prepare()
        options = pipeline_options(settings or ON, None)
        pipeline = Pipeline(store, None, options)
        pipeline.reconfigure(
            type(options)(**{**_fields(options), "batch_max_events": batch})  # small batches
        )
        with open_source(f"file:{path}") as source:
            return pipeline.run(source)
    finally:
        store.close()


def _fields(options: Any) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}


def alerts(db_url: str, query_rows: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return query_rows(
        db_url,
        "SELECT rule, subject_type, subject_id, period_start, period_seconds, measured_value, "
        "threshold, currency, evidence_event_ids, evidence FROM compliance_alerts "
        "ORDER BY rule, subject_type, subject_id, period_start",
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'compliance.db'}"
    make: Callable[[str], str] = request.getfixturevalue("postgres_schema")
    return make("compliance")


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in EXPECTED],
)
def test_rule_fires_on_its_scenario(
    scenario: str,
    db_url: str,
    files: dict[str, Path],
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    run(db_url, files[scenario])
    found = alerts(db_url, query_rows)
    rules = Counter(a["rule"] for a in found)
    expected = EXPECTED[scenario]
    assert rules[expected] >= 1, rules
    assert set(rules) <= {expected} | ALSO_ALLOWED.get(scenario, set()), rules
    info = scenario_info(SCENARIOS[scenario])
    for alert in found:
        if alert["rule"] == "decline_spike":
            assert alert["subject_id"] == info["merchant_id"]
        if alert["rule"] == "latency_slo":
            assert alert["subject_id"] == info["card_network"]
        if alert["rule"] in {"structuring", "velocity", "daily_aggregate_threshold"}:
            assert alert["subject_type"] == "customer"
    if scenario == "large_transaction":
        assert rules[expected] == info["count"]


def test_plain_traffic_raises_only_pan_exposure(
    db_url: str, files: dict[str, Path], query_rows: Callable[..., list[dict[str, Any]]]
) -> None:
    """Baseline traffic with card numbers leaked into 0.2 % of messages: one pan_exposure
    alert per affected stored event, nothing else; the alert never holds the number."""
    run(db_url, files["baseline"])
    found = alerts(db_url, query_rows)
    assert {a["rule"] for a in found} == {"pan_exposure"}
    exposed = query_rows(
        db_url, "SELECT event_id FROM normalized_transactions WHERE pan_exposure = :t", t=True
    )
    assert sorted(a["subject_id"] for a in found) == sorted(r["event_id"] for r in exposed)
    for alert in found:
        evidence = json.loads(alert["evidence"])
        assert {"source_id", "partition", "position"} <= set(evidence)
        assert not re.search(r"\d{13}", alert["evidence"] + alert["evidence_event_ids"])


def test_no_alert_twice(
    db_url: str,
    files: dict[str, Path],
    tmp_path: Path,
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    """Running the same input again, or the same file under another name (every event
    a duplicate), adds no alert."""
    first = run(db_url, files["structuring"])
    before = alerts(db_url, query_rows)
    assert before
    again = run(db_url, files["structuring"])
    assert again.messages == 0
    copy = tmp_path / "redelivered.jsonl"
    shutil.copyfile(files["structuring"], copy)
    redelivered = run(db_url, copy, batch=5_000)  # other batch boundaries, too
    assert redelivered.duplicates == first.normalized
    assert alerts(db_url, query_rows) == before


@pytest.mark.parametrize("scenario", ["daily_aggregate", "structuring", "velocity"])
def test_customer_totals_span_batches(
    scenario: str,
    db_url: str,
    tmp_path: Path,
    query_rows: Callable[..., list[dict[str, Any]]],
) -> None:
    """Batches of 3 events split each scenario's customer (whose payments sit a few
    lines apart) across several batches: the per-customer rules must add the earlier
    batches' stored authorizations and raise the same alerts (rule, customer, period)
    as one batch holding everything."""
    path = tmp_path / f"{scenario}.jsonl"
    with path.open("wb") as handle:
        write_jsonl(dataclasses.replace(SCENARIOS[scenario], events=1_500), handle)
    keys = (
        "SELECT rule, subject_id, period_start, period_seconds FROM compliance_alerts "
        "WHERE subject_type = 'customer' ORDER BY 1, 2, 3, 4"
    )

    def found(url: str) -> list[tuple[Any, ...]]:
        return [
            (r["rule"], r["subject_id"], str(r["period_start"])[:19], r["period_seconds"])
            for r in query_rows(url, keys)
        ]

    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    run(whole, path, batch=100_000)
    expected = found(whole)
    assert any(row[0] == EXPECTED[scenario] for row in expected)
    run(db_url, path, batch=3)
    assert found(db_url) == expected
    # The evidence lists every event in the total, earlier batches' included.
    for alert in query_rows(
        db_url, "SELECT * FROM compliance_alerts WHERE subject_type = 'customer'"
    ):
        ids = json.loads(alert["evidence_event_ids"])
        assert len(ids) == min(json.loads(alert["evidence"])["count"], 20), alert
        assert len(set(ids)) == len(ids)


def test_disabled_rules_cost_nothing(
    tmp_path: Path, files: dict[str, Path], query_rows: Callable[..., list[dict[str, Any]]]
) -> None:
    off = {"enabled": False}
    rules = set(ComplianceSettings.model_fields) - {"enabled", "webhook"}
    settings = Settings.model_validate(
        {"compliance": {"enabled": True, **dict.fromkeys(rules, off)}}
    )
    assert pipeline_options(settings, None).compliance is None
    assert pipeline_options(Settings(), None).compliance is None  # off unless enabled
    url = f"sqlite:///{tmp_path / 'off.db'}"
    run(url, files["structuring"], settings)
    assert query_rows(url, "SELECT count(*) AS n FROM compliance_alerts")[0]["n"] == 0
    index = (
        "SELECT count(*) AS n FROM sqlite_master WHERE name = 'ix_normalized_transactions_customer'"
    )
    assert query_rows(url, index)[0]["n"] == 0  # nor is the customer index built


def test_sqlite_and_postgres_store_the_same_alerts(
    tmp_path: Path,
    files: dict[str, Path],
    postgres_schema: Callable[[str], str],
    dump_table: Callable[..., list[tuple[Any, ...]]],
) -> None:
    sqlite = f"sqlite:///{tmp_path / 'same.db'}"
    postgres = postgres_schema("same")
    settings = Settings.model_validate(
        {"compliance": {"enabled": True}, "fx": {"rates": {"EUR": "1.08", "GBP": "1.27"}}}
    )
    for url in (sqlite, postgres):
        for name in ("structuring", "velocity", "latency_degradation"):
            run(url, files[name], settings)
    rows = dump_table(sqlite, "compliance_alerts")
    assert rows == dump_table(postgres, "compliance_alerts")
    assert rows


def test_customer_index_is_built_on_demand_and_rebuilt_when_invalid(
    postgres_schema: Callable[[str], str],
) -> None:
    """PostgreSQL: no index until a per-customer rule is on; then a valid one. A build
    that failed half way (an invalid index) is dropped and built again, not trusted."""
    url = postgres_schema("index")
    valid = (
        "SELECT i.indisvalid FROM pg_index i "
        "WHERE i.indexrelid = to_regclass('ix_normalized_transactions_customer')"
    )
    store = open_store(url)
    try:
        store.prepare()
        engine = sa.create_engine(store.engine.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text(valid)).scalar() is None
        Pipeline(store, None, pipeline_options(ON, None))
        with engine.begin() as conn:
            assert conn.execute(sa.text(valid)).scalar() is True
            conn.execute(
                sa.text(
                    "UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = to_regclass('ix_normalized_transactions_customer')"
                )
            )
        Pipeline(store, None, pipeline_options(ON, None))
        with engine.connect() as conn:
            assert conn.execute(sa.text(valid)).scalar() is True
        engine.dispose()
    finally:
        store.close()


def test_an_overlong_key_value_is_dead_lettered_not_a_stuck_batch(
    db_url: str, tmp_path: Path, query_rows: Callable[..., list[dict[str, Any]]]
) -> None:
    """A 1,500-character decline code or card network, grouped by a metric rule and
    judged by latency_slo, once failed every retry of its batch on PostgreSQL (a key
    column is bounded). The contract bounds them: the event is dead-lettered with the
    field named, and the batch's other events are stored."""
    base = {
        "schema_version": "1", "event_type": "authorization", "transaction_id": "t1",
        "occurred_at": "2026-01-01T00:00:00Z", "merchant_id": "m1", "amount_minor": 100,
        "currency": "USD", "status": "declined", "payment_method": "card", "latency_ms": 5,
    }  # fmt: skip
    lines = [
        dict(base, event_id="long-code", decline_code="x" * 1500, card_network="visa"),
        dict(base, event_id="long-network", decline_code="do_not_honor", card_network="y" * 1500),
        dict(base, event_id="fine", decline_code="insufficient_funds", card_network="visa"),
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    settings = Settings.model_validate(
        {
            "compliance": {"enabled": True},
            "metrics": [
                {"name": "declines_by_code", "filter": "status = 'declined'",
                 "aggregate": "count", "group_by": ["decline_code", "card_network"],
                 "window": "5m"},
            ],
        }
    )  # fmt: skip
    stats = run(db_url, path, settings)
    assert (stats.normalized, stats.dead_lettered) == (1, 2)
    reasons = {
        r["event_id"]: r["message"]
        for r in query_rows(db_url, "SELECT event_id, message FROM failed_items")
    }
    assert set(reasons) == {"long-code", "long-network"}
    assert "decline_code" in reasons["long-code"]
    assert "card_network" in reasons["long-network"]
    dims = query_rows(db_url, "SELECT dimensions FROM dynamic_metrics")
    assert dims == [{"dimensions": '{"card_network":"visa","decline_code":"insufficient_funds"}'}]
