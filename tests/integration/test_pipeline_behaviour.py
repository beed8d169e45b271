"""The pipeline's promises on small hand-written JSON Lines files.

Duplicates (in a batch, across batches, across runs and sources), checkpoints, lateness
and `too_late`, card-number masking, dead-letter uniqueness and the run summary. Some
tests drive `Pipeline` + `open_store` + `open_source` + `ParquetArchive` in-process, the
others run `paymetrics run` as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from paymetrics.archive import ParquetArchive
from paymetrics.pipeline import Pipeline, PipelineOptions, RunStats
from paymetrics.sources import open_source
from paymetrics.storage import open_store

UTC = dt.UTC
Line = dict[str, Any] | str


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def event(
    event_id: str,
    occurred_at: str,
    *,
    merchant: str = "m_1",
    event_type: str = "authorization",
    status: str = "approved",
    amount: int = 100,
    method: str = "card",
    currency: str = "USD",
    latency: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "transaction_id": f"txn_{event_id}",
        "occurred_at": occurred_at,
        "merchant_id": merchant,
        "amount_minor": amount,
        "currency": currency,
        "status": status,
        "payment_method": method,
    }
    if latency is not None:
        e["latency_ms"] = latency
    e.update(extra)
    return e


def render(line: Line) -> str:
    return line if isinstance(line, str) else json.dumps(line, separators=(",", ":"))


def write_lines(path: Path, lines: Iterable[Line], *, append: bool = False) -> Path:
    """One line per item: dicts as compact JSON, strings as they are (blank lines too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8", newline="") as fh:
        for line in lines:
            fh.write(render(line) + "\n")
    return path


def run_pipeline(
    db_url: str,
    path: Path,
    *,
    archive: Path | None = None,
    batch: int = 50_000,
    max_lateness_seconds: float = 7 * 86_400,
) -> RunStats:
    store = open_store(db_url)
    try:
        store.prepare()
        pipeline = Pipeline(
            store,
            ParquetArchive(str(archive)) if archive else None,
            PipelineOptions(batch_max_events=batch, max_lateness_seconds=max_lateness_seconds),
        )
        with open_source(f"file:{path}") as source:
            return pipeline.run(source)
    finally:
        store.close()


def counts(stats: RunStats | dict[str, Any]) -> tuple[int, int, int, int]:
    if isinstance(stats, dict):
        return (
            stats["events_in"],
            stats["normalized"],
            stats["duplicates"],
            stats["dead_lettered"],
        )
    return (stats.messages, stats.normalized, stats.duplicates, stats.dead_lettered)


def rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def metrics(
    dump_table: Callable[..., list[tuple[Any, ...]]], url: str
) -> dict[tuple[Any, ...], Any]:
    """payment_metrics_5m keyed by (window_start, merchant, method, currency)."""
    from paymetrics.storage.tables import payment_metrics_5m as t

    names = [c.name for c in t.columns]
    return {r[:4]: dict(zip(names, r, strict=True)) for r in dump_table(url, "payment_metrics_5m")}


def dead_letters(url: str) -> dict[int, str]:
    return {
        r["position"]: r["reason"]
        for r in rows(url, "SELECT position, reason FROM failed_items ORDER BY position")
    }


def run_json(run_cli: Callable[..., Any], *args: Any) -> dict[str, Any]:
    result = run_cli("run", *args, "--json")
    assert result.returncode == 0, result.describe()
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def archive_rows(root: Path) -> list[dict[str, Any]]:
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["partition"], r["position"]))


# -- duplicates ----------------------------------------------------------------------


def test_duplicates_in_a_batch_and_across_batches_keep_the_first_delivery(
    tmp_path: Path, tmp_db_url: str, dump_table: Callable[..., Any]
) -> None:
    path = write_lines(
        tmp_path / "a.jsonl",
        [
            event("e1", "2024-03-01T12:00:01Z", amount=100, latency=10.0),
            event("e2", "2024-03-01T12:00:02Z", amount=200, latency=20.0),
            event("e1", "2024-03-01T12:00:03Z", amount=999, latency=99.0),  # same batch
            event("e3", "2024-03-01T12:01:00Z", amount=300, status="declined"),
            event("e4", "2024-03-01T12:07:00Z", amount=400, event_type="capture"),
            event("e2", "2024-03-01T12:08:00Z", amount=888, merchant="m_2"),  # batch 2
            event("e5", "2024-03-01T12:09:00Z", amount=500),
        ],
    )
    stats = run_pipeline(tmp_db_url, path, batch=3)
    assert counts(stats) == (7, 5, 2, 0)
    assert stats.batches == 3
    stored = rows(
        tmp_db_url,
        "SELECT event_id, amount_minor, source_position, occurred_at, merchant_id "
        "FROM normalized_transactions ORDER BY event_id",
    )
    assert [(r["event_id"], r["amount_minor"], r["source_position"]) for r in stored] == [
        ("e1", 100, 1),
        ("e2", 200, 2),
        ("e3", 300, 4),
        ("e4", 400, 5),
        ("e5", 500, 7),
    ]
    m = metrics(dump_table, tmp_db_url)
    assert set(m) == {
        (at("2024-03-01T12:00:00Z"), "m_1", "card", "USD"),
        (at("2024-03-01T12:05:00Z"), "m_1", "card", "USD"),
    }, "a duplicate created a metric row"
    first = m[(at("2024-03-01T12:00:00Z"), "m_1", "card", "USD")]
    assert (first["authorizations"], first["approved"], first["declined"]) == (3, 2, 1)
    assert first["approved_amount_minor"] == 300
    assert first["approval_rate"] == pytest.approx(2 / 3, abs=1e-12)
    assert first["latency_max_ms"] == 20.0
    second = m[(at("2024-03-01T12:05:00Z"), "m_1", "card", "USD")]
    assert (second["authorizations"], second["approved_amount_minor"]) == (1, 500)
    assert (second["captures"], second["captured_amount_minor"]) == (1, 400)


def test_a_second_file_with_the_same_events_changes_no_number(
    tmp_path: Path, tmp_db_url: str, run_cli: Callable[..., Any], dump_tables: Callable[..., Any]
) -> None:
    events = [
        event("d1", "2024-03-01T12:00:00Z", amount=100, latency=12.5),
        event("d2", "2024-03-01T12:03:00Z", amount=200, status="declined", latency=40.0),
        event("d3", "2024-03-01T12:06:00Z", amount=300, event_type="capture"),
        event("d4", "2024-03-01T12:06:30Z", amount=50, method="wallet", currency="eur"),
    ]
    first = write_lines(tmp_path / "first.jsonl", events)
    # The same event_ids again, in another order and with other contents: still duplicates.
    again = [dict(e, amount_minor=e["amount_minor"] * 7, latency_ms=999.0) for e in events[::-1]]
    second = write_lines(tmp_path / "second.jsonl", again)
    archive = tmp_path / "raw"
    summary = run_json(
        run_cli, "--source", f"file:{first}", "--db", tmp_db_url, "--archive", archive
    )
    assert counts(summary) == (4, 4, 0, 0)
    before = dump_tables(tmp_db_url)
    summary = run_json(
        run_cli, "--source", f"file:{second}", "--db", tmp_db_url, "--archive", archive
    )
    assert counts(summary) == (4, 0, 4, 0)
    assert summary["metric_rows_touched"] == 0
    after = dump_tables(tmp_db_url)
    for table in ("payment_metrics_5m", "aggregate_histograms", "normalized_transactions"):
        assert after[table] == before[table], f"{table} changed by a re-delivery"
    assert after["failed_items"] == before["failed_items"] == []


def test_running_the_same_command_twice_changes_nothing(
    tmp_path: Path, tmp_db_url: str, run_cli: Callable[..., Any], dump_tables: Callable[..., Any]
) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            event("r1", "2024-03-01T12:00:00Z", latency=5.0),
            "",
            event("r2", "2024-03-01T12:10:00Z"),
            '{"event_id": "r3"}',
            event("r1", "2024-03-01T12:00:00Z"),
        ],
    )
    archive = tmp_path / "raw"
    args = ("--source", f"file:{path}", "--db", tmp_db_url, "--archive", archive)
    args += ("--batch-max-events", "2")
    assert counts(run_json(run_cli, *args)) == (4, 2, 1, 1)
    before = dump_tables(tmp_db_url, exclude={})
    files = sorted(p.relative_to(archive) for p in archive.rglob("*") if p.is_file())
    summary = run_json(run_cli, *args)
    assert counts(summary) == (0, 0, 0, 0)
    assert summary["batches"] == 0
    assert dump_tables(tmp_db_url) == before
    assert sorted(p.relative_to(archive) for p in archive.rglob("*") if p.is_file()) == files


# -- lateness ------------------------------------------------------------------------


def test_late_events_update_their_own_earlier_window_in_any_run(
    tmp_path: Path, tmp_db_url: str, dump_table: Callable[..., Any]
) -> None:
    path = write_lines(
        tmp_path / "late.jsonl",
        [
            event("l1", "2024-03-01T12:00:30Z", amount=100, latency=100.0),
            event("l2", "2024-03-01T12:10:00Z", amount=200, latency=50.0),
            event("l3", "2024-03-01T09:02:00Z", amount=300, latency=70.0),  # 3 h late
        ],
    )
    assert counts(run_pipeline(tmp_db_url, path, batch=2)) == (3, 3, 0, 0)
    m = metrics(dump_table, tmp_db_url)
    key = (at("2024-03-01T09:00:00Z"), "m_1", "card", "USD")
    assert (m[key]["authorizations"], m[key]["approved_amount_minor"]) == (1, 300)
    noon = (at("2024-03-01T12:00:00Z"), "m_1", "card", "USD")
    assert (m[noon]["authorizations"], m[noon]["latency_max_ms"]) == (1, 100.0)
    # Appended later, read by the next run: still late, still counted where they belong.
    write_lines(
        path,
        [
            event("l4", "2024-03-01T08:01:00+01:00", amount=40, latency=1.0),  # 07:01Z, 5 h late
            event("l5", "2024-03-01T12:04:59.999Z", amount=7, latency=300.0),
            event("l6", "2024-03-01T12:02:00Z", amount=3, status="error", latency=200.0),
        ],
        append=True,
    )
    assert counts(run_pipeline(tmp_db_url, path, batch=2)) == (3, 3, 0, 0)
    m = metrics(dump_table, tmp_db_url)
    assert m[(at("2024-03-01T07:00:00Z"), "m_1", "card", "USD")]["approved_amount_minor"] == 40
    row = m[noon]
    assert (row["authorizations"], row["approved"], row["errors"]) == (3, 2, 1)
    assert row["approved_amount_minor"] == 107
    assert row["approval_rate"] == pytest.approx(2 / 3, abs=1e-12)
    assert row["latency_max_ms"] == 300.0
    # Nearest rank over {100, 200, 300}: p50 = 200, p95 = p99 = 300 (1 % sketch error).
    assert row["latency_p50_ms"] == pytest.approx(200.0, rel=0.01)
    assert row["latency_p95_ms"] == pytest.approx(300.0, rel=0.01)
    assert row["latency_p99_ms"] == pytest.approx(300.0, rel=0.01)
    assert m[(at("2024-03-01T12:10:00Z"), "m_1", "card", "USD")]["authorizations"] == 1


def test_too_late_is_judged_against_the_newest_valid_event_of_the_file(
    tmp_path: Path, tmp_db_url: str, dump_table: Callable[..., Any]
) -> None:
    stored_late = event("t2", "2024-03-03T00:00:00Z", amount=2)
    path = write_lines(
        tmp_path / "a.jsonl",
        [
            event("t1", "2024-03-10T00:00:00Z", amount=1),
            stored_late,  # exactly 7 days older: accepted (the limit is strict)
            event("t3", "2024-03-02T23:59:59Z", amount=3),  # 7 days + 1 s: too_late
            event("t4", "2030-01-01T00:00:00Z", currency="XYZ"),  # dead: does not move newest
            event("t5", "2024-03-04T00:00:00Z", amount=5),
            stored_late,  # a duplicate, within the limit
            event("t6", "2024-03-10T00:00:01Z", amount=6),  # newest moves on
            stored_late,  # now 7 days + 1 s older: too_late before it is a duplicate
        ],
    )
    assert counts(run_pipeline(tmp_db_url, path, batch=3)) == (8, 4, 1, 3)
    assert dead_letters(tmp_db_url) == {
        3: "too_late",
        4: "unknown_currency",
        8: "too_late",
    }
    late = rows(tmp_db_url, "SELECT * FROM failed_items WHERE position = 3")[0]
    assert late["event_id"] == "t3"
    assert "occurred_at" in late["message"]
    assert json.loads(late["payload"]) == event("t3", "2024-03-02T23:59:59Z", amount=3)
    stored = rows(tmp_db_url, "SELECT event_id FROM normalized_transactions ORDER BY event_id")
    assert [r["event_id"] for r in stored] == ["t1", "t2", "t5", "t6"]
    m = metrics(dump_table, tmp_db_url)
    assert sum(r["approved_amount_minor"] for r in m.values()) == 1 + 2 + 5 + 6
    assert all(k[0] != at("2024-03-02T23:55:00Z") for k in m), "a too_late event has a metric row"

    # The newest occurred_at is kept per file across runs ...
    write_lines(path, [event("t7", "2024-03-01T00:00:00Z", amount=7)], append=True)
    assert counts(run_pipeline(tmp_db_url, path)) == (1, 0, 0, 1)
    assert dead_letters(tmp_db_url)[9] == "too_late"
    # ... and another file is another partition with its own newest.
    other = write_lines(tmp_path / "b.jsonl", [event("t8", "2024-03-01T00:00:00Z", amount=8)])
    assert counts(run_pipeline(tmp_db_url, other)) == (1, 1, 0, 0)


@pytest.mark.parametrize(
    ("limit", "expected_dead"),
    [
        ("3600", {3: "too_late"}),  # 1.5 h late: too late; 30 min late: fine
        ("0", {3: "too_late", 4: "too_late"}),  # anything older than the newest
    ],
)
def test_max_lateness_seconds_is_honoured(
    tmp_path: Path,
    tmp_db_url: str,
    run_cli: Callable[..., Any],
    limit: str,
    expected_dead: dict[int, str],
) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            event("m1", "2024-03-01T12:00:00Z"),
            event("m2", "2024-03-01T12:00:00Z"),  # as old as the newest: never too late
            event("m3", "2024-03-01T10:30:00Z"),
            event("m4", "2024-03-01T11:30:00Z"),
        ],
    )
    summary = run_json(
        run_cli,
        "--source",
        f"file:{path}",
        "--db",
        tmp_db_url,
        "--no-archive",
        "--max-lateness-seconds",
        limit,
    )
    assert summary["dead_lettered"] == len(expected_dead)
    assert dead_letters(tmp_db_url) == expected_dead


# -- card numbers --------------------------------------------------------------------

PAN_EVENT = event(
    "p1",
    "2024-03-01T12:00:00Z",
    transaction_id="4111111111111111",  # identifiers are exempt
    customer_id="5555-5555-5555-4444",
    metadata={"note": "card 4111 1111 1111 1111 read out", "4242424242424242": "as a key"},
    card_number="378282246310005",  # an unknown field
)
MASKED_PAN_EVENT = dict(
    PAN_EVENT,
    customer_id="555555******4444",
    metadata={"note": "card 411111******1111 read out", "424242******4242": "as a key"},
    card_number="378282*****0005",
)
NOT_A_PAN = event(
    "p2",
    "2024-03-01T12:01:00Z",
    customer_id="4111111111111112",  # fails Luhn
    metadata={"ref": "41111111111111111111", "order": "4111 1111  1111 1111"},  # 20 digits; "  "
)
_RUN = re.compile(r"[0-9](?:[ -]?[0-9])*")


def card_numbers(text: str) -> list[str]:
    """Luhn-valid maximal runs of 13-19 digits (single spaces or dashes between digits)."""
    found = []
    for match in _RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        checksum = sum(
            int(d) if i % 2 == 0 else sum(divmod(int(d) * 2, 10))
            for i, d in enumerate(reversed(digits))
        )
        if 13 <= len(digits) <= 19 and checksum % 10 == 0:
            found.append(digits)
    return found


def test_the_card_number_scanner_of_these_tests() -> None:
    assert card_numbers("a 4111 1111 1111 1111, 5555-5555-5555-4444") == [
        "4111111111111111",
        "5555555555554444",
    ]
    assert card_numbers("41111111111111111111 4111111111111112 411111******1111") == []


def test_card_numbers_are_masked_everywhere_and_flagged(
    tmp_path: Path, tmp_db_url: str, run_cli: Callable[..., Any]
) -> None:
    truncated = '{"event_id": "p3", "note": "pay with 4111111111111111 please", "amount'
    missing = dict(event("4111111111111111", "2024-03-01T12:02:00Z"), note="5555555555554444")
    del missing["currency"]
    path = write_lines(tmp_path / "pan.jsonl", [PAN_EVENT, NOT_A_PAN, truncated, missing])
    archive = tmp_path / "raw"
    summary = run_json(
        run_cli, "--source", f"file:{path}", "--db", tmp_db_url, "--archive", archive
    )
    assert counts(summary) == (4, 2, 0, 2)

    stored = {
        r["event_id"]: r
        for r in rows(
            tmp_db_url,
            "SELECT event_id, transaction_id, customer_id, pan_exposure "
            "FROM normalized_transactions",
        )
    }
    assert stored["p1"]["pan_exposure"] in (1, True)
    assert stored["p1"]["transaction_id"] == "4111111111111111"
    assert stored["p1"]["customer_id"] == "555555******4444"
    assert stored["p2"]["pan_exposure"] in (0, False)
    assert stored["p2"]["customer_id"] == "4111111111111112"

    archived = {r["event_id"]: r for r in archive_rows(archive)}
    assert archived["p1"]["pan_exposure"] is True
    assert json.loads(archived["p1"]["payload"]) == MASKED_PAN_EVENT
    assert archived["p1"]["transaction_id"] == "4111111111111111"
    assert archived["p2"]["pan_exposure"] is False
    assert archived["p2"]["payload"] == render(NOT_A_PAN), "an unmasked message must stay as is"

    dead = {
        r["position"]: r
        for r in rows(tmp_db_url, "SELECT position, reason, event_id, payload FROM failed_items")
    }
    assert dead[3]["reason"] == "invalid_json"
    assert dead[3]["payload"] == truncated.replace("4111111111111111", "411111******1111")
    assert dead[4]["reason"] == "missing_field"
    assert dead[4]["event_id"] == "4111111111111111"
    assert json.loads(dead[4]["payload"]) == dict(missing, note="555555******4444")

    # And no full card number anywhere else, apart from the exempt identifiers.
    exempt = {"event_id", "transaction_id"}
    for table in ("normalized_transactions", "failed_items", "payment_metrics_5m"):
        for row in rows(tmp_db_url, f"SELECT * FROM {table}"):
            for column, value in row.items():
                if column in exempt or not isinstance(value, str):
                    continue
                if column == "payload" and row.get("reason") == "missing_field":
                    value = json.dumps(
                        {k: v for k, v in json.loads(value).items() if k not in exempt}
                    )
                assert not card_numbers(value), (table, column, value)
    for r in archived.values():
        payload = {k: v for k, v in json.loads(r["payload"]).items() if k not in exempt}
        assert not card_numbers(json.dumps(payload)), payload


# -- dead letters --------------------------------------------------------------------


def test_dead_letters_stay_unique_per_position_when_a_file_is_read_again(
    tmp_path: Path, tmp_db_url: str, dump_tables: Callable[..., Any]
) -> None:
    lines: list[Line] = []
    for i in range(1, 16):
        if i % 4 == 0:
            lines.append("   ")
        elif i % 3 == 0:
            lines.append(f'{{"event_id": "bad{i}", "amount_minor": "12"}}')
        elif i % 5 == 0:
            lines.append(event(f"x{i}", "2024-03-01T12:00:00Z", currency="XYZ"))
        else:
            lines.append(event(f"v{i}", f"2024-03-01T12:{i:02d}:00Z", amount=i))
    path = write_lines(tmp_path / "dlq.jsonl", lines)
    first = run_pipeline(tmp_db_url, path, batch=2)
    expected_dead = {3: "invalid_type", 5: "unknown_currency", 6: "invalid_type"}
    expected_dead |= {9: "invalid_type", 10: "unknown_currency", 15: "invalid_type"}
    assert dead_letters(tmp_db_url) == expected_dead
    assert counts(first) == (12, 6, 0, 6)
    before = dump_tables(tmp_db_url)

    execute(tmp_db_url, "DELETE FROM source_checkpoints")
    second = run_pipeline(tmp_db_url, path, batch=3)
    assert counts(second) == (12, 0, 6, 6)
    after = dump_tables(tmp_db_url)
    for table in ("failed_items", "normalized_transactions", "payment_metrics_5m"):
        assert after[table] == before[table], table
    keys = rows(
        tmp_db_url,
        "SELECT source_id, partition, position, count(*) AS n FROM failed_items "
        "GROUP BY source_id, partition, position HAVING count(*) > 1",
    )
    assert keys == []


def test_run_summary_counts_every_non_blank_line_once(
    tmp_path: Path, tmp_db_url: str, run_cli: Callable[..., Any]
) -> None:
    path = tmp_path / "summary.jsonl"
    lines: list[Line] = [
        event("s1", "2024-03-01T12:00:00Z", latency=10.0),
        "",
        event("s2", "2024-03-01T12:01:00Z", status="declined", decline_code="do_not_honor"),
        "  \t ",
        event("s3", "2024-03-01T12:02:00Z", latency=30.0),
        event("s1", "2024-03-01T12:00:00Z"),  # duplicate
        "[1, 2]",
        event("s4", "2024-03-01T12:03:00Z", event_type="capture"),
        '{"event_id": "s5", "occurred_at": "2024-03-01T12:00:00"}',
        "\r",
        event("s6", "2024-03-01T12:04:00Z", status="error"),
    ]
    with path.open("w", encoding="utf-8", newline="") as fh:
        for i, line in enumerate(lines):
            fh.write(render(line) + ("\r\n" if i == 4 else "\n"))  # one CRLF line
    summary = run_json(
        run_cli,
        "--source",
        f"file:{path}",
        "--db",
        tmp_db_url,
        "--archive",
        tmp_path / "raw",
        "--batch-max-events",
        "3",
    )
    assert counts(summary) == (8, 5, 1, 2)
    assert summary["batches"] == 3
    assert summary["approval_rate"] == pytest.approx(2 / 4, abs=1e-12)
    assert summary["source"] == f"file:{path}"
    assert summary["database"] == tmp_db_url
    assert summary["archive"] == str(tmp_path / "raw")
    assert summary["stopped_by"] is None
    assert summary["metric_rows_touched"] >= 1
    assert summary["events_per_second"] >= 0
    assert summary["elapsed_seconds"] >= 0
    assert dead_letters(tmp_db_url) == {7: "not_an_object", 9: "missing_timezone"}
    positions = rows(
        tmp_db_url, "SELECT event_id, source_position FROM normalized_transactions ORDER BY 2"
    )
    assert [(r["event_id"], r["source_position"]) for r in positions] == [
        ("s1", 1),
        ("s2", 3),
        ("s3", 5),
        ("s4", 8),
        ("s6", 11),
    ]
    (checkpoint,) = rows(tmp_db_url, "SELECT * FROM source_checkpoints")
    assert (checkpoint["position"], checkpoint["byte_offset"]) == (11, path.stat().st_size)
    assert (checkpoint["messages"], checkpoint["normalized"]) == (8, 5)
    assert (checkpoint["duplicates"], checkpoint["dead_lettered"]) == (1, 2)
