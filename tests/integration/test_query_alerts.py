"""`paymetrics query alerts`: what a compliance officer reads after a run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.conftest import query_rows, run_cli


def test_alerts_of_a_run_are_listed_filtered_and_exported(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    made = run_cli(
        "simulate", "--events", "20000", "--seed", "3", "--scenario", "large_transaction",
        "-o", events, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    config = tmp_path / "paymetrics.yaml"
    config.write_text("compliance:\n  enabled: true\n")
    db = f"sqlite:///{tmp_path / 'pm.db'}"
    ran = run_cli(
        "run", "-c", config, "--source", f"file:{events}", "--db", db, "--no-archive", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.describe()
    stored = query_rows(db, "SELECT rule, subject_id FROM compliance_alerts ORDER BY id")
    assert any(r["rule"] == "large_transaction" for r in stored)

    listed = run_cli("query", "alerts", "--db", db, "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.describe()
    rows = json.loads(listed.stdout)
    assert sorted((r["rule"], r["subject_id"]) for r in rows) == sorted(
        (r["rule"], r["subject_id"]) for r in stored
    )
    assert all(r["period_start"].endswith("+00:00") for r in rows)  # aware UTC

    only = run_cli(
        "query", "alerts", "--db", db, "--rule", "large_transaction", "--format", "csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert only.returncode == 0, only.describe()
    exported = list(csv.DictReader(io.StringIO(only.stdout)))
    assert exported
    assert {r["rule"] for r in exported} == {"large_transaction"}
    assert int(exported[0]["threshold"].split(".")[0]) > 0

    later = run_cli(
        "query", "alerts", "--db", db, "--since", "2999-01-01T00:00:00Z", "--format", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(later.stdout) == []

    wrong = run_cli("query", "alerts", "--db", db, "--rule", "velocty", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "unknown rule 'velocty'; valid rules: large_transaction" in wrong.stderr
