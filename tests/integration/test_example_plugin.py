"""The example plugin (examples/paymetrics-example-plugin) in a real `paymetrics run`.

Its dist-info is written into a tmp directory on PYTHONPATH (tests/plugin_site.py), so
the subprocess discovers its entry points exactly as if it were pip-installed. The run
must dead-letter the events of merchants not on the allowlist with the plugin's own
reason code, and store the extractor's rows in `dynamic_metrics`, equal to a count of
the stored events made here in Python.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CliResult, query_rows
from tests.plugin_site import build_plugin_site

from paymetrics.simulator import SimulatorConfig

pytestmark = pytest.mark.slow

PREFIXES = ("mch_0", "mch_1", "mch_2", "mch_3", "mch_4", "mch_5", "mch_6", "mch_7")
CONFIG = f"""
batching: {{batch_max_events: 1500}}
validation:
  rules:
    merchant_allowlist:
      params: {{prefixes: {json.dumps(list(PREFIXES))}}}
extractors: {{refund_ratio_by_country: {{}}}}
"""


def allowed(merchant: str) -> bool:
    return merchant.startswith(PREFIXES)


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = build_plugin_site(tmp_path / "site")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_run_with_the_example_plugin(
    run_cli: Callable[..., CliResult],
    write_simulated: Callable[[Path, SimulatorConfig], int],
    tmp_path: Path,
    tmp_db_url: str,
    plugin_env: dict[str, str],
) -> None:
    events = tmp_path / "events.jsonl"
    write_simulated(
        events,
        SimulatorConfig(
            events=8_000, seed=3, rate_per_second=1.0, rate_duplicate=0.02, rate_invalid=0.01
        ),
    )
    config = tmp_path / "paymetrics.yaml"
    config.write_text(CONFIG)
    checked = run_cli("config", "validate", config, env=plugin_env)
    assert checked.returncode == 0, checked.describe()
    result = run_cli(
        "run",
        "-c",
        config,
        "--source",
        f"file:{events}",
        "--db",
        tmp_db_url,
        "--no-archive",
        env=plugin_env,
    )
    assert result.returncode == 0, result.describe()

    stored = query_rows(tmp_db_url, "SELECT * FROM normalized_transactions")
    assert stored
    assert all(allowed(r["merchant_id"]) for r in stored)
    dead = query_rows(
        tmp_db_url,
        "SELECT payload, message FROM failed_items WHERE reason = 'merchant_not_allowed'",
    )
    assert len(dead) > 100
    for row in dead:
        merchant = json.loads(row["payload"])["merchant_id"]
        assert not allowed(merchant)
        assert row["message"] == f"merchant_id: {merchant!r} is not on the merchant allowlist"

    expected: Counter[tuple[str, str]] = Counter()
    refunds: Counter[tuple[str, str]] = Counter()
    for r in stored:
        if r["event_type"] in ("capture", "refund"):
            key = (
                str(r["occurred_at"])[:13],
                json.dumps({"country": r["country"]}, separators=(",", ":")),
            )
            expected[key] += 1
            refunds[key] += r["event_type"] == "refund"
    rows = query_rows(
        tmp_db_url, "SELECT * FROM dynamic_metrics WHERE metric_name = 'refund_ratio_by_country'"
    )
    got: dict[tuple[str, str], dict[str, Any]] = {
        (str(r["window_start"])[:13], r["dimensions"]): r for r in rows
    }
    assert {k: v["count"] for k, v in got.items()} == dict(expected)
    for key, row in got.items():
        assert row["numerator"] == refunds[key]
        assert row["aggregate"] == "ratio"
        assert row["window_seconds"] == 3600
        assert row["config_version"] == 0
        assert row["value"] == pytest.approx(refunds[key] / expected[key], rel=1e-12)
    shown = run_cli(
        "query",
        "dynamic",
        "--metric",
        "refund_ratio_by_country",
        "--format",
        "json",
        "--db",
        tmp_db_url,
    )
    assert shown.returncode == 0, shown.describe()
    assert len(json.loads(shown.stdout)) == len(rows)


def test_invalid_plugin_params_fail_the_config(
    run_cli: Callable[..., CliResult], tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text("validation:\n  rules:\n    merchant_allowlist: {params: {prefixes: 3}}\n")
    result = run_cli("config", "validate", config, env=plugin_env)
    assert result.returncode != 0
    assert "merchant_allowlist.params: prefixes" in result.stdout + result.stderr
    without = run_cli("config", "validate", config)
    assert "unknown validation rule 'merchant_allowlist'" in without.stdout + without.stderr
