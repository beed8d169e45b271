"""Hostile text in every field and every query filter is data, never SQL.

Every text field of an event carries a classic injection string; the run must store each
value exactly as sent (or dead-letter it, naming it, where the contract forbids it), the
tables must stay intact, and query filters built from such strings must match nothing
instead of everything. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import CliResult, dump_table, query_rows

pytestmark = pytest.mark.slow

PAYLOADS = [
    "'; DROP TABLE normalized_transactions; --",
    "x' OR '1'='1",
    'x" OR "1"="1',
    "Robert'); DELETE FROM payment_metrics_5m; --",
    "$$; TRUNCATE failed_items; $$",
    "\\'; SELECT pg_sleep(5); --",
    "1; UPDATE source_checkpoints SET position = 0",
    "%' AND 1=0 UNION SELECT * FROM config_versions --",
]
TEXT_FIELDS = (
    "event_id",
    "transaction_id",
    "merchant_id",
    "decline_code",
    "card_network",
    "customer_id",
)


def event(n: int, payload: str) -> dict[str, object]:
    return {
        "event_id": f"{payload}#{n}",
        "event_type": "authorization",
        "transaction_id": payload,
        "occurred_at": f"2026-03-01T10:{n:02d}:00Z",
        "merchant_id": payload[:64],
        "amount_minor": 1000 + n,
        "currency": "EUR",
        "status": "declined",
        "payment_method": "card",
        "decline_code": payload,
        "card_network": payload,
        "latency_ms": 100.0 + n,
        "customer_id": payload,
        "metadata": {payload: payload},
    }


def query(*args: str) -> list[dict[str, object]]:
    """A query command in-process (the CLI's own code, without an interpreter start)."""
    from typer.testing import CliRunner

    from paymetrics.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    make: Callable[[str], str] = request.getfixturevalue("postgres_schema")
    return make("injection")


def test_hostile_text_is_stored_verbatim_and_filters_match_nothing(
    run_cli: Callable[..., CliResult], tmp_path: Path, db_url: str
) -> None:
    lines = [json.dumps(event(n, p)) for n, p in enumerate(PAYLOADS)]
    # and where the contract rejects the value, the dead letter holds it safely
    lines += [
        json.dumps({**event(40 + n, p), "currency": p[:20], "event_id": f"bad-{n}"})
        for n, p in enumerate(PAYLOADS)
    ]
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = run_cli("run", "--source", f"file:{source}", "--db", db_url, "--no-archive", "-q")
    assert result.returncode == 0, result.describe()

    stored = {r["event_id"]: r for r in query_rows(db_url, "SELECT * FROM normalized_transactions")}
    assert len(stored) == len(PAYLOADS)
    for n, payload in enumerate(PAYLOADS):
        row = stored[f"{payload}#{n}"]
        for field in TEXT_FIELDS[1:]:
            expected = payload[:64] if field == "merchant_id" else payload
            assert row[field] == expected, (field, payload)
    dead = query_rows(db_url, "SELECT event_id, reason, message FROM failed_items")
    assert sorted(d["event_id"] for d in dead) == sorted(f"bad-{n}" for n in range(len(PAYLOADS)))
    assert all(d["reason"] == "unknown_currency" for d in dead)
    assert len(dump_table(db_url, "payment_metrics_5m")) == len(PAYLOADS)
    assert query_rows(db_url, "SELECT position FROM source_checkpoints")[0]["position"] == len(
        lines
    )

    for payload in PAYLOADS:
        for args in (
            ("query", "metrics", "--currency", payload),
            ("query", "dlq", "--reason", payload),
            ("query", "dlq", "--source", payload),
            ("query", "dynamic", "--metric", payload),
            ("query", "metrics", "--merchant", payload + " absent"),
        ):
            assert query(*args, "--db", db_url, "--format", "json") == [], args
        # a filter equal to a stored value matches that row only, not everything
        found = query(
            "query", "metrics", "--merchant", payload[:64], "--db", db_url, "--format", "json"
        )
        assert [r["merchant_id"] for r in found] == [payload[:64]]
