"""End to end: a simulated file through `paymetrics run`, checked against an independent model.

The model below reads the same file with the `json` module and plain datetime arithmetic
and applies the contract (docs/event-contract.md): blank lines are skipped but keep their
line numbers; a line is dead-lettered when the simulator's label says it is invalid (and
the pipeline must give exactly the labelled reason), or when it is more than 7 days older
than the newest `occurred_at` accepted before it on the file; the first delivery of an
`event_id` wins; windows are `occurred_at` in UTC floored to 5 minutes. It shares no code
with paymetrics (it has its own Luhn scanner and masker), so a bug in a stage shows up as
a difference here.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from paymetrics.simulator import SimulatorConfig, generate_labeled, scenario_info, write_jsonl
from paymetrics.storage.tables import metadata

pytestmark = pytest.mark.slow

CONFIG = SimulatorConfig(
    events=60_000,
    seed=424_242,
    rate_invalid=0.01,
    rate_duplicate=0.02,
    rate_late=0.02,
    rate_pan_leak=0.005,
    scenario="decline_spike",
)
BATCH = 7_000
MAX_LATENESS = dt.timedelta(days=7)
BLANKS = (b"", b"   ", b"\t", b"\r", b" \t ")
"""Whitespace-only lines inserted into the simulated stream: ignored, but they count as lines."""
BLANK_EVERY = 4_999

REQUIRED = {
    "event_id": str,
    "event_type": str,
    "transaction_id": str,
    "occurred_at": str,
    "merchant_id": str,
    "amount_minor": int,
    "currency": str,
    "status": str,
    "payment_method": str,
}
COUNT_COLUMNS = (
    "authorizations",
    "approved",
    "declined",
    "errors",
    "approved_amount_minor",
    "captures",
    "captured_amount_minor",
    "refunds",
    "refunded_amount_minor",
    "chargebacks",
    "chargeback_amount_minor",
)
PERCENTILES = {"latency_p50_ms": 50, "latency_p95_ms": 95, "latency_p99_ms": 99}


# -- an independent Luhn scanner and masker ------------------------------------------

DIGITS = frozenset("0123456789")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def digit_runs(text: str) -> Iterator[tuple[int, int, str]]:
    """Maximal runs of ASCII digits, single spaces/dashes allowed between two digits."""
    i, n = 0, len(text)
    while i < n:
        if text[i] not in DIGITS:
            i += 1
            continue
        digits = [text[i]]
        j = i + 1
        while j < n:
            if text[j] in DIGITS:
                digits.append(text[j])
                j += 1
            elif text[j] in " -" and j + 1 < n and text[j + 1] in DIGITS:
                digits.append(text[j + 1])
                j += 2
            else:
                break
        yield i, j, "".join(digits)
        i = j


_THIRTEEN = re.compile(r"[0-9](?:[ -]?[0-9]){12}")
"""A prefilter only: any maximal run of 13 or more digits contains a match."""


def _maybe_pan(text: str) -> bool:
    return len(text) >= 13 and _THIRTEEN.search(text) is not None


def pans_in(text: str) -> list[str]:
    """The card numbers (Luhn-valid 13-19 digit maximal runs) in `text`."""
    if not _maybe_pan(text):
        return []
    return [d for _, _, d in digit_runs(text) if 13 <= len(d) <= 19 and luhn_ok(d)]


def mask(text: str) -> str:
    if not _maybe_pan(text):
        return text
    out, last = [], 0
    for start, end, d in digit_runs(text):
        if 13 <= len(d) <= 19 and luhn_ok(d):
            out += [text[last:start], d[:6], "*" * (len(d) - 10), d[-4:]]
            last = end
    return "".join(out) + text[last:]


def mask_json(value: Any, *, top: bool = True) -> Any:
    if isinstance(value, dict):
        return {
            mask(k): v if top and k in ("event_id", "transaction_id") else mask_json(v, top=False)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_json(v, top=False) for v in value]
    return mask(value) if isinstance(value, str) else value


def json_strings(value: Any, *, top: bool = True) -> Iterator[str]:
    """Every string and key in a JSON value, except the top-level identifiers' values."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            if not (top and k in ("event_id", "transaction_id")):
                yield from json_strings(v, top=False)
    elif isinstance(value, list):
        for v in value:
            yield from json_strings(v, top=False)
    elif isinstance(value, str):
        yield value


def pans_in_payload(payload: str) -> list[str]:
    """PANs in a stored payload: a JSON text is scanned value by value (identifiers exempt,
    as the contract says), anything else as raw text."""
    if "\\u" not in payload and not _maybe_pan(payload):
        return []  # no run of 13 digits, not even one spelled with escapes
    try:
        parsed = json.loads(payload)
    except ValueError:
        return pans_in(payload)
    return [p for s in json_strings(parsed) for p in pans_in(s)]


def test_independent_luhn_scanner() -> None:
    assert pans_in("card 4111 1111 1111 1111 x") == ["4111111111111111"]
    assert pans_in("4111-1111-1111-1111") == ["4111111111111111"]
    assert pans_in("cus_4111111111111111") == ["4111111111111111"]
    assert pans_in("4111111111111112") == []  # Luhn fails
    assert pans_in("41111111111111111111") == []  # 20 digits: not a card number
    assert pans_in("4111  1111 1111 1111") == []  # two separators end a run
    assert pans_in("411111******1111") == []
    assert mask("a 4111 1111 1111 1111 b") == "a 411111******1111 b"
    assert mask("6011000990139424") == "601100******9424"
    assert pans_in_payload('{"event_id": "4111111111111111", "x": "1"}') == []
    assert pans_in_payload('[{"event_id": "4111111111111111"}]') == ["4111111111111111"]


# -- the independent model -----------------------------------------------------------

TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)


def parse_occurred_at(text: str) -> dt.datetime:
    m = TIMESTAMP.fullmatch(text)
    assert m, f"the model cannot parse occurred_at {text!r}"
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    value = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    if frac := m.group(7):
        scale = 10 ** len(frac)
        value += dt.timedelta(microseconds=(int(frac) * 2_000_000 + scale) // (2 * scale))
    if sign := m.group(8):
        offset = dt.timedelta(hours=int(m.group(9)), minutes=int(m.group(10)))
        value -= offset if sign == "+" else -offset
    return value


def window_of(t: dt.datetime) -> dt.datetime:
    return t - dt.timedelta(minutes=t.minute % 5, seconds=t.second, microseconds=t.microsecond)


def nearest_rank(ordered: list[float], pct: int) -> float:
    rank = max(1, -(-pct * len(ordered) // 100))  # ceil(pct/100 * n), exactly
    return ordered[rank - 1]


@dataclass
class Stored:
    line: int
    event: dict[str, Any]
    occurred_at: dt.datetime


@dataclass
class Model:
    lines: list[bytes]
    """lines[i] is line i + 1 of the file (without its LF)."""
    labels: dict[int, str]
    nonblank: int = 0
    dead: dict[int, str] = field(default_factory=dict)
    stored: dict[str, Stored] = field(default_factory=dict)
    duplicate_lines: list[int] = field(default_factory=list)
    metrics: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The parsed object of every line that is not labelled invalid."""
    exposed: dict[int, bool] = field(default_factory=dict)
    """Whether the line's object carries a card number outside the exempt identifiers."""

    def line(self, number: int) -> bytes:
        return self.lines[number - 1]


def check_contract_types(event: Any, line: int) -> None:
    """A guard: the lines the labels call valid really carry the required fields."""
    assert isinstance(event, dict), f"line {line}: labelled valid but not an object"
    for name, kind in REQUIRED.items():
        value = event.get(name)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        assert ok, f"line {line}: labelled valid but {name}={value!r}"


def build_model(lines: list[bytes], labels: dict[int, str]) -> Model:
    model = Model(lines=lines, labels=labels)
    newest: dt.datetime | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        model.nonblank += 1
        label = labels[number]
        if label.startswith("invalid:"):
            model.dead[number] = label.removeprefix("invalid:")
            continue
        event = json.loads(raw)
        check_contract_types(event, number)
        model.events[number] = event
        model.exposed[number] = any(pans_in(x) for x in json_strings(event))
        occurred = parse_occurred_at(event["occurred_at"])
        if newest is not None and occurred < newest - MAX_LATENESS:
            model.dead[number] = "too_late"
            continue
        newest = occurred if newest is None else max(newest, occurred)
        if event["event_id"] in model.stored:
            model.duplicate_lines.append(number)
            continue
        model.stored[event["event_id"]] = Stored(number, event, occurred)

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for s in model.stored.values():
        e = s.event
        key = (
            window_of(s.occurred_at),
            mask(e["merchant_id"]),
            e["payment_method"],
            e["currency"].upper(),
        )
        groups.setdefault(key, []).append(e)
    for key, events in groups.items():
        row = dict.fromkeys(COUNT_COLUMNS, 0)
        latencies: list[float] = []
        for e in events:
            kind, status, amount = e["event_type"], e["status"], e["amount_minor"]
            if kind == "authorization":
                row["authorizations"] += 1
                row[
                    {"approved": "approved", "declined": "declined", "error": "errors"}[status]
                ] += 1
                if status == "approved":
                    row["approved_amount_minor"] += amount
                if e.get("latency_ms") is not None:
                    latencies.append(float(e["latency_ms"]))
            elif status == "approved":
                name = {"capture": "captures", "refund": "refunds", "chargeback": "chargebacks"}
                row[name[kind]] += 1
                prefix = {"capture": "captured", "refund": "refunded", "chargeback": "chargeback"}
                row[f"{prefix[kind]}_amount_minor"] += amount
        auths = row["authorizations"]
        row["approval_rate"] = row["approved"] / auths if auths else None
        latencies.sort()
        row["latency_max_ms"] = latencies[-1] if latencies else None
        for column, pct in PERCENTILES.items():
            row[column] = nearest_rank(latencies, pct) if latencies else None
        model.metrics[key] = row
    return model


# -- the run -------------------------------------------------------------------------


@dataclass
class E2E:
    path: Path
    db_url: str
    archive: Path
    summary: dict[str, Any]
    model: Model


#: Config-defined metrics in both runs, so the dynamic_metrics paths are compared too.
RULES = """
compliance:
  enabled: true
metrics:
  - name: approvals_by_network
    filter: "event_type = 'authorization' AND status = 'approved'"
    group_by: [card_network]
    window: 1h
  - name: decline_share
    filter: "event_type = 'authorization'"
    aggregate: ratio
    numerator: "status = 'declined'"
    group_by: [merchant_id]
    window: 15m
  - name: refund_amount
    filter: "event_type = 'refund'"
    aggregate: avg
    value: amount_minor
    group_by: [currency, country]
    window: 1d
"""


def build_e2e(work: Path, run_cli_in: Any) -> None:
    """The simulated file (with blank lines), its labels, and one `paymetrics run` of it."""
    lines: list[bytes] = []
    labels: dict[int, str] = {}
    messages: list[bytes] = []
    for chunk in generate_labeled(CONFIG):
        for message, label in chunk:
            messages.append(message)
            lines.append(message)
            labels[len(lines)] = label
            if len(messages) % BLANK_EVERY == 0:
                lines.append(BLANKS[len(messages) // BLANK_EVERY % len(BLANKS)])
    # The labelled stream is the stream `write_jsonl` (and `paymetrics simulate`) writes.
    sink = io.BytesIO()
    assert write_jsonl(CONFIG, sink) == CONFIG.events
    assert sink.getvalue() == b"".join(m + b"\n" for m in messages), (
        "generate_labeled differs from write_jsonl"
    )
    path = work / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    (work / "labels.json").write_text(json.dumps(labels))
    (work / "paymetrics.yaml").write_text(RULES)
    result = run_cli_in(
        "run",
        "--config",
        work / "paymetrics.yaml",
        "--source",
        f"file:{path}",
        "--db",
        f"sqlite:///{work / 'pm.db'}",
        "--archive",
        work / "raw",
        "--batch-max-events",
        str(BATCH),
        "--json",
        cwd=work,
    )
    assert result.returncode == 0, result.describe()
    (work / "summary.json").write_text(result.stdout)


@pytest.fixture(scope="module")
def e2e_sqlite(build_once: Any, run_cli_in: Any) -> E2E:
    work = build_once("e2e", lambda d: build_e2e(d, run_cli_in))
    path = work / "events.jsonl"
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    labels = {int(k): v for k, v in json.loads((work / "labels.json").read_text()).items()}
    summary = json.loads((work / "summary.json").read_text())
    return E2E(
        path, f"sqlite:///{work / 'pm.db'}", work / "raw", summary, build_model(lines, labels)
    )


@pytest.fixture(scope="module")
def e2e_postgres(
    e2e_sqlite: E2E,
    postgres_schema: Any,
    run_cli_in: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> E2E:
    """The same file, the same command, a PostgreSQL database."""
    url = postgres_schema("e2e")
    work = tmp_path_factory.mktemp("e2e-postgres")
    result = run_cli_in(
        "run",
        "--config",
        e2e_sqlite.path.parent / "paymetrics.yaml",
        "--source",
        f"file:{e2e_sqlite.path}",
        "--db",
        url,
        "--archive",
        work / "raw",
        "--batch-max-events",
        str(BATCH),
        "--json",
        cwd=work,
    )
    assert result.returncode == 0, result.describe()
    return E2E(e2e_sqlite.path, url, work / "raw", json.loads(result.stdout), e2e_sqlite.model)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def e2e(request: pytest.FixtureRequest) -> E2E:
    """Every check below runs against SQLite and against PostgreSQL."""
    fixture: E2E = request.getfixturevalue(f"e2e_{request.param}")
    return fixture


def test_sqlite_and_postgres_hold_identical_tables(e2e_sqlite: E2E, e2e_postgres: E2E) -> None:
    from tests.conftest import dump_tables

    on_sqlite = dump_tables(e2e_sqlite.db_url)
    on_postgres = dump_tables(e2e_postgres.db_url)
    for table, rows in on_sqlite.items():
        assert rows, f"{table} is empty on SQLite"
        assert on_postgres[table] == rows, f"{table} differs between SQLite and PostgreSQL"


def _select(url: str, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(metadata.tables[table])).mappings()]
    finally:
        engine.dispose()


def _report(problems: list[str], what: str) -> str:
    shown = "\n".join(problems[:25])
    return f"{len(problems)} {what}; first ones:\n{shown}"


# -- the checks ----------------------------------------------------------------------


def test_payment_metrics_5m_equal_the_independent_computation(e2e: E2E) -> None:
    stored = {
        (r["window_start"], r["merchant_id"], r["payment_method"], r["currency"]): r
        for r in _select(e2e.db_url, "payment_metrics_5m")
    }
    expected = e2e.model.metrics
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    assert missing + extra == [], (
        f"metric keys differ: {len(missing)} missing (e.g. {missing[:3]}), "
        f"{len(extra)} unexpected (e.g. {extra[:3]})"
    )
    problems = []
    for key, want in expected.items():
        got = stored[key]
        for column in COUNT_COLUMNS:
            if got[column] != want[column]:
                problems.append(f"{key} {column}: stored {got[column]}, expected {want[column]}")
        rate, want_rate = got["approval_rate"], want["approval_rate"]
        if (rate is None) != (want_rate is None) or (
            rate is not None and abs(rate - want_rate) > 1e-12
        ):
            problems.append(f"{key} approval_rate: stored {rate}, expected {want_rate}")
        if got["latency_max_ms"] != want["latency_max_ms"]:
            problems.append(
                f"{key} latency_max_ms: stored {got['latency_max_ms']}, "
                f"expected {want['latency_max_ms']}"
            )
        for column in PERCENTILES:
            value, exact = got[column], want[column]
            if exact is None or value is None:
                ok = value is exact
            else:
                # The sketch promises 1 % relative error; 1e-12 absorbs float rounding.
                ok = abs(value - exact) <= 0.01 * exact * (1 + 1e-12)
            if not ok:
                problems.append(f"{key} {column}: stored {value}, exact nearest-rank {exact}")
    assert not problems, _report(problems, "metric values differ")
    # The scenario's incident is visible in the stored numbers.
    info = scenario_info(CONFIG)
    spike = [
        r
        for k, r in stored.items()
        if k[1] == info["merchant_id"] and info["start"] <= k[0] < info["end"]
    ]
    auths = sum(r["authorizations"] for r in spike)
    assert auths >= 10, f"too few authorizations in the decline spike to judge: {auths}"
    assert sum(r["approved"] for r in spike) / auths < 0.5


def test_dead_letters_match_the_labels_line_by_line(e2e: E2E) -> None:
    rows = _select(e2e.db_url, "failed_items")
    positions = Counter(r["position"] for r in rows)
    assert all(n == 1 for n in positions.values()), "several dead letters at one position"
    source = f"file:{e2e.path}"
    assert {(r["source_id"], r["partition"]) for r in rows} == {(source, str(e2e.path))}
    got = {r["position"]: r["reason"] for r in rows}
    want = e2e.model.dead
    problems = [
        f"line {n}: stored reason {got.get(n)!r}, label says {want.get(n)!r} "
        f"(line starts {e2e.model.line(n)[:80]!r})"
        for n in sorted(set(got) | set(want))
        if got.get(n) != want.get(n)
    ]
    assert not problems, _report(problems, "dead letters differ from the labels")
    assert len(set(want.values())) >= 10, "the simulated file exercises too few reasons"
    for r in rows:
        assert r["message"].strip(), f"line {r['position']}: empty message"
        raw = e2e.model.line(r["position"])
        if not pans_in(raw.decode("utf-8", "replace")):
            # Nothing to mask: the payload is the line as received (\xNN for non-UTF-8).
            assert r["payload"] == raw.decode("utf-8", "backslashreplace"), r["position"]


def test_every_message_is_counted_exactly_once(e2e: E2E) -> None:
    m, s = e2e.model, e2e.summary
    normalized, duplicates, dead = len(m.stored), len(m.duplicate_lines), len(m.dead)
    assert normalized + duplicates + dead == m.nonblank == CONFIG.events
    assert (s["events_in"], s["normalized"], s["duplicates"], s["dead_lettered"]) == (
        m.nonblank,
        normalized,
        duplicates,
        dead,
    )
    assert s["batches"] == math.ceil(m.nonblank / BATCH)
    assert s["stopped_by"] is None
    (checkpoint,) = _select(e2e.db_url, "source_checkpoints")
    assert checkpoint["position"] == len(m.lines)
    assert checkpoint["byte_offset"] == e2e.path.stat().st_size
    assert (
        checkpoint["messages"],
        checkpoint["normalized"],
        checkpoint["duplicates"],
        checkpoint["dead_lettered"],
    ) == (m.nonblank, normalized, duplicates, dead)
    batches = _select(e2e.db_url, "ingest_batches")
    assert len(batches) == s["batches"]
    for column, want in (
        ("messages", m.nonblank),
        ("normalized", normalized),
        ("duplicates", duplicates),
        ("dead_lettered", dead),
    ):
        assert sum(b[column] for b in batches) == want, column
    engine = sa.create_engine(e2e.db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM normalized_transactions")).scalar()
            ids = conn.execute(
                sa.text("SELECT count(DISTINCT event_id) FROM normalized_transactions")
            ).scalar()
    finally:
        engine.dispose()
    assert stored == ids == normalized


def test_normalized_transactions_hold_the_first_delivery(e2e: E2E) -> None:
    rows = {r["event_id"]: r for r in _select(e2e.db_url, "normalized_transactions")}
    assert set(rows) == set(e2e.model.stored)
    batches = {b["batch_id"]: b for b in _select(e2e.db_url, "ingest_batches")}
    problems = []
    for event_id, s in e2e.model.stored.items():
        e, got = s.event, rows[event_id]
        declined = e["status"] == "declined"
        want = {
            "event_type": e["event_type"],
            "transaction_id": e["transaction_id"],
            "occurred_at": s.occurred_at,
            "merchant_id": mask(e["merchant_id"]),
            "amount_minor": e["amount_minor"],
            "currency": e["currency"].upper(),
            "status": e["status"],
            "payment_method": e["payment_method"],
            "decline_code": "unknown"
            if declined and e.get("decline_code") is None
            else (None if e.get("decline_code") is None else mask(e["decline_code"])),
            "card_network": e.get("card_network"),
            "latency_ms": None if e.get("latency_ms") is None else float(e["latency_ms"]),
            "country": None if e.get("country") is None else e["country"].upper(),
            "channel": e.get("channel"),
            "customer_id": None if e.get("customer_id") is None else mask(e["customer_id"]),
            "pan_exposure": e2e.model.exposed[s.line],
            "source_position": s.line,
        }
        for column, value in want.items():
            if got[column] != value:
                problems.append(f"{event_id} {column}: stored {got[column]!r}, expected {value!r}")
        batch = batches.get(got["batch_id"])
        if batch is None or not batch["first_position"] <= s.line <= batch["last_position"]:
            problems.append(f"{event_id}: batch_id {got['batch_id']} does not cover line {s.line}")
    assert not problems, _report(problems, "normalized rows differ")
    exposed = sum(r["pan_exposure"] for r in rows.values())
    assert exposed >= 0.5 * CONFIG.rate_pan_leak * CONFIG.events, exposed


def test_archive_holds_every_stored_event_masked_and_as_received(e2e: E2E) -> None:
    dataset = ds.dataset(e2e.archive, format="parquet", partitioning="hive")
    assert dataset.files, "no archive files"
    seen: set[tuple[str, int]] = set()
    problems = []
    model = e2e.model
    for file in dataset.files:
        rel = Path(file).relative_to(e2e.archive)
        table = ds.dataset(file, format="parquet").to_table()
        for r in table.to_pylist():
            line = r["position"]
            seen.add((r["event_id"], line))
            raw = model.line(line)
            if not raw.strip() or line in model.dead:
                problems.append(f"{rel}: line {line} is blank or dead-lettered but archived")
                continue
            event = model.events[line]
            occurred = parse_occurred_at(event["occurred_at"])
            folder = f"date={occurred:%Y-%m-%d}/hour={occurred:%H}"
            if str(rel.parent) != folder or r["occurred_at"] != occurred:
                problems.append(f"{rel}: line {line} occurred at {occurred}, not in {folder}")
            if r["event_id"] != event["event_id"] or r["source_id"] != f"file:{e2e.path}":
                problems.append(f"{rel}: line {line}: identity columns {r}")
            exposed = model.exposed[line]
            if r["pan_exposure"] != exposed:
                problems.append(f"{rel}: line {line}: pan_exposure {r['pan_exposure']}")
            if exposed:
                if json.loads(r["payload"]) != mask_json(event):
                    problems.append(f"{rel}: line {line}: payload not masked as expected")
            elif r["payload"] != raw.decode():
                problems.append(f"{rel}: line {line}: payload is not the message as received")
    assert not problems, _report(problems, "archive problems")
    first = {(event_id, s.line) for event_id, s in model.stored.items()}
    assert first <= seen, f"{len(first - seen)} stored events missing from the archive"


def test_no_card_number_is_stored_anywhere(e2e: E2E) -> None:
    exempt = {
        ("normalized_transactions", "event_id"),
        ("normalized_transactions", "transaction_id"),
        ("failed_items", "event_id"),
        ("compliance_alerts", "evidence_event_ids"),  # event ids, exempt by the contract
    }
    problems = []
    checked = 0
    for name in metadata.tables:
        for row in _select(e2e.db_url, name):
            for column, value in row.items():
                if not isinstance(value, str) or (name, column) in exempt:
                    continue
                identifier = row.get("subject_type") in {"event", "transaction"}
                if (name, column) == ("compliance_alerts", "subject_id") and identifier:
                    continue  # an event or transaction id, exempt as above
                checked += 1
                found = pans_in_payload(value) if column == "payload" else pans_in(value)
                if found:
                    problems.append(f"{name}.{column}: {found} in {value[:120]!r}")
    table = ds.dataset(e2e.archive, format="parquet", partitioning="hive").to_table()
    for column in table.column_names:
        if column in ("event_id", "transaction_id"):
            continue
        for value in table[column].to_pylist():
            if isinstance(value, str):
                checked += 1
                found = pans_in_payload(value) if column == "payload" else pans_in(value)
                if found:
                    problems.append(f"archive {column}: {found} in {value[:120]!r}")
    assert not problems, _report(problems, "card numbers stored")
    assert checked > 500_000
    leaked = [n for n, label in e2e.model.labels.items() if label == "pan_leak"]
    assert len(leaked) >= 100, "the simulated file leaks too few card numbers to prove anything"
