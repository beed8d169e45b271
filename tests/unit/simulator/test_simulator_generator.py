"""The simulator's promises: deterministic bytes, exact counts, a valid contract stream,
defects at the configured rates, realistic transaction life cycles and visible incidents.

Most checks are black-box (they read only the emitted bytes); `generate_labeled` is used
to confirm that what a line looks like matches what the generator meant it to be.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pycountry
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paymetrics.events import PaymentEvent, Reason
from paymetrics.simulator import (
    SCENARIOS,
    SimulatorConfig,
    generate,
    generate_labeled,
    resolve_scenario,
    scenario_info,
    write_jsonl,
)

CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)
START = datetime(2026, 1, 1, tzinfo=UTC)
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TXN = re.compile(r"^txn_[0-9a-f]{24}$")
OFFSET = re.compile(rb'"occurred_at":"[^"]*?(Z|[+-]\d\d:\d\d)"')
PAN_RUN = re.compile(
    r"(?<![0-9A-Za-z])(\d{13,19}|\d{4}([ -])\d{4,6}(?:\2\d{3,5}){1,3})(?![0-9A-Za-z])"
)
REQUIRED = (
    "event_id",
    "event_type",
    "transaction_id",
    "occurred_at",
    "merchant_id",
    "amount_minor",
    "currency",
    "status",
    "payment_method",
)
FAST = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def lines_of(config: SimulatorConfig) -> list[bytes]:
    return [line for chunk in generate(config) for line in chunk]


def parse(line: bytes) -> PaymentEvent | None:
    """The event, or None when the line breaks the contract (what validation must reject)."""
    try:
        line.decode("utf-8")
        ev = msgspec.json.decode(line, type=PaymentEvent)
    except (UnicodeDecodeError, msgspec.DecodeError):
        return None
    if ev.currency not in CURRENCIES or (ev.country is not None and ev.country not in COUNTRIES):
        return None
    return ev


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def leaked_pans(line: bytes) -> list[str]:
    text = line.decode("utf-8", "replace")
    found = []
    for m in PAN_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(1))
        if 13 <= len(digits) <= 19 and luhn(digits):
            found.append(m.group(1))
    return found


def within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(observed - n * p) <= sigmas * sd + 1


def share(items: Iterable[bool]) -> float:
    values = list(items)
    return sum(values) / len(values)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clean() -> tuple[list[bytes], list[PaymentEvent]]:
    lines = lines_of(SimulatorConfig(events=50_000, seed=7))
    events = [msgspec.json.decode(line, type=PaymentEvent) for line in lines]
    return lines, events


DEFECTS = SimulatorConfig(
    events=50_000,
    seed=11,
    rate_invalid=0.03,
    rate_duplicate=0.02,
    rate_late=0.02,
    rate_pan_leak=0.01,
)


@pytest.fixture(scope="module")
def dirty() -> list[tuple[bytes, str]]:
    return [pair for chunk in generate_labeled(DEFECTS) for pair in chunk]


@pytest.fixture(scope="module")
def long_span() -> list[PaymentEvent]:
    """50k events spread over ten days, so refunds and chargebacks come due."""
    config = SimulatorConfig(events=50_000, seed=3, rate_per_second=50_000 / (10 * 86_400))
    return [msgspec.json.decode(line, type=PaymentEvent) for line in lines_of(config)]


# ------------------------------------------------------------------- determinism


def test_same_config_gives_identical_bytes_whatever_the_chunk_size() -> None:
    base = SimulatorConfig(
        events=20_000,
        seed=5,
        rate_invalid=0.02,
        rate_duplicate=0.02,
        rate_late=0.02,
        rate_pan_leak=0.02,
        scenario="decline_spike",
    )
    reference = lines_of(base)
    assert lines_of(base) == reference
    for size in (1, 997, 16_384, 100_000):
        chunks = list(generate(dataclasses.replace(base, chunk_events=size)))
        assert [line for chunk in chunks for line in chunk] == reference
        assert all(len(c) == size for c in chunks[:-1])
        assert 0 < len(chunks[-1]) <= size


def test_a_different_seed_gives_a_different_stream() -> None:
    a = lines_of(SimulatorConfig(events=2_000, seed=1))
    b = lines_of(SimulatorConfig(events=2_000, seed=2))
    assert len(a) == len(b) == 2_000
    assert not set(a) & set(b)


rates = st.floats(0.0, 0.25, allow_nan=False)


@FAST
@given(
    events=st.integers(0, 2_500),
    chunk=st.integers(1, 3_000),
    seed=st.integers(0, 2**32),
    ri=rates,
    rd=rates,
    rl=rates,
    rp=rates,
)
def test_exactly_the_requested_number_of_messages(
    events: int, chunk: int, seed: int, ri: float, rd: float, rl: float, rp: float
) -> None:
    config = SimulatorConfig(
        events=events,
        seed=seed,
        chunk_events=chunk,
        rate_invalid=ri,
        rate_duplicate=rd,
        rate_late=rl,
        rate_pan_leak=rp,
        merchants=50,
    )
    chunks = list(generate(config))
    assert sum(map(len, chunks)) == events
    assert all(len(c) == chunk for c in chunks[:-1])
    assert all(b"\n" not in line for c in chunks for line in c)


def test_all_defects_and_nothing_else_still_counts_exactly() -> None:
    config = SimulatorConfig(events=3_000, rate_invalid=0.5, rate_duplicate=0.5)
    labels = Counter(label for chunk in generate_labeled(config) for _, label in chunk)
    assert sum(labels.values()) == 3_000
    assert labels["valid"] == 1  # the one a duplicate can copy


def test_write_jsonl_writes_the_same_stream_newline_terminated() -> None:
    config = SimulatorConfig(events=3_000, seed=9, rate_invalid=0.05, chunk_events=700)
    buf = io.BytesIO()
    assert write_jsonl(config, buf) == 3_000
    assert buf.getvalue() == b"".join(line + b"\n" for line in lines_of(config))


# ------------------------------------------------------------------- contract


def test_every_line_is_a_valid_event_when_no_defects_are_asked_for(
    clean: tuple[list[bytes], list[PaymentEvent]],
) -> None:
    lines, events = clean
    assert all(parse(line) is not None for line in lines)
    assert len({e.event_id for e in events}) == len(events)
    for e in events:
        assert UUID7.match(e.event_id), e.event_id
        ms = (e.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        assert int(e.event_id.replace("-", "")[:12], 16) == ms  # time-ordered ids
        assert TXN.match(e.transaction_id)
        assert e.occurred_at >= START
        assert (e.decline_code is not None) == (e.status == "declined")
        assert (e.card_network is not None) == (e.payment_method == "card")
        assert (e.latency_ms is not None) == (e.event_type == "authorization")
        if e.latency_ms is not None:
            assert round(e.latency_ms, 3) == e.latency_ms
    assert events[0].occurred_at == START


def test_the_stream_looks_like_a_real_psp_feed(
    clean: tuple[list[bytes], list[PaymentEvent]],
) -> None:
    lines, events = clean
    auths = [e for e in events if e.event_type == "authorization"]
    assert 0.45 < len(auths) / len(events) < 0.6
    statuses = Counter(e.status for e in auths)
    assert 0.86 < statuses["approved"] / len(auths) < 0.93
    assert 0.05 < statuses["declined"] / len(auths) < 0.11
    assert 0.01 < statuses["error"] / len(auths) < 0.035
    assert {"insufficient_funds", "do_not_honor", "suspected_fraud", "expired_card"} <= {
        e.decline_code for e in auths
    }
    methods = Counter(e.payment_method for e in events)
    assert methods.most_common(1)[0][0] == "card"
    assert set(methods) == {"card", "wallet", "bank_transfer", "bnpl"}

    by_merchant = Counter(e.merchant_id for e in events).most_common()
    assert by_merchant[0][1] / len(events) > 0.08  # Zipf: a few big merchants dominate
    assert sum(n for _, n in by_merchant[:10]) / len(events) > 0.4
    assert len(by_merchant) > 300

    currencies = {e.currency for e in events}
    assert {"JPY", "EUR", "GBP", "USD", "BRL", "INR"} <= currencies
    # Amounts are in minor units: yen have none, so a ¥1,500 basket is 1500 like a $15.00 one.
    for currency in ("JPY", "USD", "EUR"):
        median = statistics.median(e.amount_minor for e in events if e.currency == currency)
        assert 300 < median < 30_000, (currency, median)

    offsets = Counter(m.group(1) for m in map(OFFSET.search, lines) if m)
    assert len(offsets) >= 5
    assert 0.03 < 1 - offsets[b"Z"] / len(lines) < 0.7
    with_millis = share(b"." in line.split(b'"occurred_at":"')[1][:24] for line in lines)
    assert 0.1 < with_millis < 0.95
    assert 0.05 < share(e.metadata is not None for e in events) < 0.8
    assert 0.01 < share(b'"risk_score":' in line for line in lines) < 0.6

    visa = [e.latency_ms or 0.0 for e in auths if e.card_network == "visa" and e.status != "error"]
    amex = [e.latency_ms or 0.0 for e in auths if e.card_network == "amex" and e.status != "error"]
    assert statistics.median(amex) > 1.4 * statistics.median(visa)
    q = statistics.quantiles(visa, n=1000)
    assert q[-1] > 5 * statistics.median(visa)  # heavy right tail


def test_events_come_in_occurred_at_order_with_a_daily_rhythm(
    clean: tuple[list[bytes], list[PaymentEvent]],
) -> None:
    _, events = clean
    times = [e.occurred_at for e in events]
    assert all(a <= b for a, b in itertools.pairwise(times))
    day = lines_of(SimulatorConfig(events=60_000, seed=4, rate_per_second=60_000 / 86_400))
    hours = Counter(
        msgspec.json.decode(x, type=PaymentEvent).occurred_at.astimezone(UTC).hour for x in day
    )
    assert hours[13] > 3 * hours[3]  # busy afternoon, quiet night (UTC)


def test_follow_ups_share_the_transaction_and_come_after_it(long_span: list[PaymentEvent]) -> None:
    auths: dict[str, PaymentEvent] = {}
    captures: dict[str, PaymentEvent] = {}
    kinds: Counter[str] = Counter()
    for e in long_span:
        kinds[e.event_type] += 1
        if e.event_type == "authorization":
            assert e.transaction_id not in auths
            auths[e.transaction_id] = e
            continue
        auth = auths[e.transaction_id]  # the authorization was emitted earlier
        assert auth.status == "approved"
        for field in ("merchant_id", "currency", "payment_method", "card_network", "customer_id"):
            assert getattr(e, field) == getattr(auth, field)
        delay = e.occurred_at - auth.occurred_at
        if e.event_type == "capture":
            assert timedelta(seconds=1) <= delay <= timedelta(hours=4, seconds=1)
            assert e.amount_minor <= auth.amount_minor
            captures[e.transaction_id] = e
        else:
            cap = captures[e.transaction_id]
            assert cap.occurred_at < e.occurred_at
            assert e.amount_minor <= cap.amount_minor
            if e.event_type == "refund":
                assert delay <= timedelta(hours=49)
            else:
                assert timedelta(days=1) <= delay <= timedelta(days=5, seconds=1)
    approved = sum(a.status == "approved" for a in auths.values())
    assert 0.85 < kinds["capture"] / approved < 0.96
    assert 0.025 < kinds["refund"] / kinds["capture"] < 0.07
    assert 0 < kinds["chargeback"] < 0.01 * kinds["capture"]


# ----------------------------------------------------------------------- defects


def test_defect_rates_and_what_each_defect_looks_like(dirty: list[tuple[bytes, str]]) -> None:
    n = len(dirty)
    seen: set[bytes] = set()
    newest = START
    found: Counter[str] = Counter()
    for line, label in dirty:
        if line in seen:
            found["duplicate"] += 1
            assert label == "duplicate"
            continue
        seen.add(line)
        ev = parse(line)
        if ev is None:
            found["invalid"] += 1
            assert label.startswith("invalid:"), (label, line)
            continue
        assert not label.startswith("invalid:"), (label, line)
        if ev.occurred_at < newest:
            found["late"] += 1
            assert label == "late"
            assert timedelta(minutes=1) <= newest - ev.occurred_at <= timedelta(hours=6, seconds=1)
        else:
            newest = ev.occurred_at
        if leaked_pans(line):
            found["pan_leak"] += 1
            assert label == "pan_leak"
    labels = Counter(label.split(":")[0] for _, label in dirty)
    assert found == {k: labels[k] for k in ("duplicate", "invalid", "late", "pan_leak")}
    assert within(found["invalid"], n, DEFECTS.rate_invalid)
    assert within(found["duplicate"], n, DEFECTS.rate_duplicate)
    assert within(found["late"], n, DEFECTS.rate_late)
    assert within(found["pan_leak"], n, DEFECTS.rate_pan_leak)


def test_duplicates_are_byte_copies_from_a_little_earlier(dirty: list[tuple[bytes, str]]) -> None:
    last_at: dict[bytes, int] = {}
    gaps = []
    for i, (line, label) in enumerate(dirty):
        if label == "duplicate":
            assert line in last_at
            gaps.append(i - last_at[line])
        else:
            last_at[line] = i
    assert min(gaps) == 1
    assert 100 < max(gaps) < 600
    assert share(g <= 5 for g in gaps) > 0.2


def test_invalid_lines_cover_every_reason_and_really_are_broken(
    dirty: list[tuple[bytes, str]],
) -> None:
    invalid = [
        (line, label.removeprefix("invalid:"))
        for line, label in dirty
        if label.startswith("invalid:")
    ]
    reasons = Counter(reason for _, reason in invalid)
    expected = {r.value for r in Reason} - {Reason.TOO_LARGE, Reason.TOO_LATE, Reason.BATCH_FAILED}
    assert set(reasons) == expected
    for line, reason in invalid:
        assert parse(line) is None
        if reason == Reason.INVALID_ENCODING:
            with pytest.raises(UnicodeDecodeError):
                line.decode("utf-8")
            continue
        if reason == Reason.INVALID_JSON:
            with pytest.raises(msgspec.DecodeError):
                msgspec.json.decode(line)
            continue
        raw: Any = msgspec.json.decode(line)
        if reason == Reason.NOT_AN_OBJECT:
            assert isinstance(raw, list)
        elif reason == Reason.UNKNOWN_CURRENCY:
            assert raw["currency"] == "XYZ"
        elif reason == Reason.UNKNOWN_COUNTRY:
            assert raw["country"] == "QQ"
        elif reason == Reason.UNSUPPORTED_SCHEMA_VERSION:
            assert raw["schema_version"] == "2"
        elif reason == Reason.MISSING_TIMEZONE:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?", raw["occurred_at"])
        elif reason == Reason.MISSING_FIELD:
            assert any(raw.get(f) is None for f in REQUIRED)
        elif reason == Reason.INVALID_TYPE:
            assert type(raw["amount_minor"]) is not int or type(raw["occurred_at"]) is not str


def test_pan_leaks_carry_luhn_valid_numbers_in_varied_places_and_formats(
    dirty: list[tuple[bytes, str]],
) -> None:
    leaks = [line for line, label in dirty if label == "pan_leak"]
    pans = [pan for line in leaks for pan in leaked_pans(line)]
    assert len(pans) >= len(leaks)
    lengths = Counter(len(re.sub(r"[ -]", "", p)) for p in pans)
    assert {15, 16} <= set(lengths)
    assert set(lengths) <= set(range(13, 20))
    assert any(" " in p for p in pans)
    assert any("-" in p for p in pans)
    assert any(p.isdigit() for p in pans)
    where: Counter[str] = Counter()
    for line in leaks:
        raw = msgspec.json.decode(line)
        pan = leaked_pans(line)[0]
        if raw.get("card_number") == pan:
            where["card_number"] += 1
        elif raw.get("customer_id") == pan:
            where["customer_id"] += 1
        else:
            assert pan in msgspec.json.encode(raw["metadata"]).decode()
            where["metadata"] += 1
    assert set(where) == {"metadata", "customer_id", "card_number"}
    clean = [line for line, label in dirty if label in ("valid", "late", "duplicate")]
    assert not any(leaked_pans(line) for line in clean)


# --------------------------------------------------------------------- scenarios


def _window(events: list[PaymentEvent], info: dict[str, Any]) -> tuple[list[PaymentEvent], ...]:
    inside = [e for e in events if info["start"] <= e.occurred_at < info["end"]]
    outside = [e for e in events if not info["start"] <= e.occurred_at < info["end"]]
    return inside, outside


def test_decline_spike_collapses_one_merchants_approval_rate() -> None:
    config = SimulatorConfig(
        events=60_000,
        seed=21,
        merchants=100,
        scenario="decline_spike",
        rate_per_second=60_000 / (4 * 3600),
    )
    info = scenario_info(config)
    assert info["end"] - info["start"] == timedelta(minutes=45)
    events = [msgspec.json.decode(x, type=PaymentEvent) for x in lines_of(config)]
    first, last = events[0].occurred_at, events[-1].occurred_at
    assert first + (last - first) / 4 < info["start"] < first + 3 * (last - first) / 4
    auths = [
        e
        for e in events
        if e.merchant_id == info["merchant_id"] and e.event_type == "authorization"
    ]
    inside, outside = _window(auths, info)
    assert len(inside) >= 30
    assert share(e.status == "approved" for e in inside) < 0.4
    assert share(e.status == "approved" for e in outside) > 0.8
    assert {e.decline_code for e in inside if e.status == "declined"} <= set(info["decline_codes"])
    # the merchant is mid-popularity, not the biggest
    ranking = [m for m, _ in Counter(e.merchant_id for e in events).most_common()]
    assert 1 <= ranking.index(info["merchant_id"]) <= 15


def test_latency_degradation_slows_one_network_fivefold() -> None:
    config = SimulatorConfig(
        events=60_000, seed=22, scenario="latency_degradation", rate_per_second=60_000 / (4 * 3600)
    )
    info = scenario_info(config)
    assert info["end"] - info["start"] == timedelta(hours=1)
    events = [msgspec.json.decode(x, type=PaymentEvent) for x in lines_of(config)]
    auths = [e for e in events if e.event_type == "authorization" and e.status != "error"]
    net = [e for e in auths if e.card_network == info["card_network"]]
    other = [e for e in auths if e.card_network not in (None, info["card_network"])]
    inside, outside = _window(net, info)
    ratio = statistics.median(e.latency_ms or 0 for e in inside) / statistics.median(
        e.latency_ms or 0 for e in outside
    )
    assert 4.0 < ratio < 6.0
    o_in, o_out = _window(other, info)
    assert (
        0.7
        < statistics.median(e.latency_ms or 0 for e in o_in)
        / statistics.median(e.latency_ms or 0 for e in o_out)
        < 1.4
    )


def test_baseline_injects_nothing_and_the_registry_rejects_unknown_names() -> None:
    assert scenario_info(SimulatorConfig()) == {"scenario": "baseline"}
    assert set(SCENARIOS) == {
        "baseline",
        "decline_spike",
        "latency_degradation",
        "large_transaction",
        "daily_aggregate",
        "structuring",
        "velocity",
    }
    assert resolve_scenario("decline_spike") is SCENARIOS["decline_spike"]
    with pytest.raises(
        ValueError,
        match=r"^unknown scenario 'x'; valid: baseline, decline_spike, latency_degradation, ",
    ):
        resolve_scenario("x")
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        SimulatorConfig(scenario="nope")


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": -1}, "events must be >= 0"),
        ({"seed": -3}, "seed must be >= 0"),
        ({"start": datetime(2026, 1, 1)}, "timezone-aware"),  # noqa: DTZ001 - the point
        ({"rate_invalid": 1.5}, r"rate_invalid must be within \[0, 1\]"),
        ({"rate_late": -0.1}, r"rate_late must be within \[0, 1\]"),
        ({"rate_duplicate": float("nan")}, r"rate_duplicate must be within \[0, 1\]"),
        ({"rate_invalid": 0.6, "rate_pan_leak": 0.6}, "must be <= 1"),
        ({"rate_per_second": 0.0}, "rate_per_second must be > 0"),
        ({"merchants": 0}, "merchants must be >= 1"),
        ({"chunk_events": 0}, "chunk_events must be >= 1"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**kwargs)


@FAST
@given(
    start=st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2199, 12, 31),  # noqa: DTZ001
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    ),
    seed=st.integers(0, 1_000),
)
def test_the_stream_starts_exactly_at_start_on_any_date(start: datetime, seed: int) -> None:
    (line,) = lines_of(SimulatorConfig(events=1, seed=seed, start=start, merchants=20))
    ev = msgspec.json.decode(line, type=PaymentEvent)
    start_ms = start.replace(microsecond=start.microsecond // 1000 * 1000)
    assert ev.occurred_at in (start_ms, start_ms.replace(microsecond=0))
    ms = (ev.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert int(ev.event_id.replace("-", "")[:12], 16) == ms
