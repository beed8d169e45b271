"""`paymetrics.decode.decode` (and decode → normalize → validate) against the contract.

Every dead-letter reason except `too_late` (a pipeline concern, tested elsewhere) has at
least one message that must yield exactly that reason, with a message naming the field;
each rule has valid counterparts that must come out as normalized events.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paymetrics.decode import Decoded, Rejects, decode
from paymetrics.events import MAX_EVENT_BYTES, Reason
from paymetrics.normalize import normalize
from paymetrics.validate import DEFAULT_RULES, resolve_rules, validate

BASE: Final[dict[str, object]] = {
    "event_id": "evt_1",
    "event_type": "authorization",
    "transaction_id": "txn_1",
    "occurred_at": "2024-03-01T12:00:00Z",
    "merchant_id": "m_1",
    "amount_minor": 1299,
    "currency": "USD",
    "status": "approved",
    "payment_method": "card",
}

OMIT: Final = object()


class Raw(str):
    """JSON text inserted as is (for literals json.dumps cannot write: 12.0, 1e400, -0)."""

    __slots__ = ()


def _value(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def msg(**changes: object) -> bytes:
    """BASE with fields replaced (OMIT drops one), encoded as one JSON object."""
    fields = dict(BASE)
    for key, value in changes.items():
        if value is OMIT:
            fields.pop(key)
        else:
            fields[key] = value
    return pairs(list(fields.items()))


def pairs(members: list[tuple[str, object]]) -> bytes:
    """A JSON object with exactly these members, in order (repeated keys allowed)."""
    text = ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_value(v)}" for k, v in members)
    return ("{" + text + "}").encode("utf-8")


def with_tail(message: bytes, tail: bytes) -> bytes:
    """`message` with raw bytes `tail` inserted as extra members before the closing brace."""
    assert message.endswith(b"}")
    return message[:-1] + b", " + tail + b"}"


def decode_batch(messages: list[bytes], raw_sizes: list[int], rejects: Rejects) -> Decoded:
    """`decode` as the pipeline calls it (the UTF-8 flags come from `as_text`)."""
    if "bad_utf8" in inspect.signature(decode).parameters:
        from paymetrics.decode import as_text

        _, bad_utf8 = as_text(messages)
        return decode(messages, raw_sizes, bad_utf8, rejects)
    return decode(messages, raw_sizes, rejects)  # the earlier signature


def run_decode(
    messages: list[bytes], raw_sizes: list[int] | None = None
) -> tuple[Decoded, Rejects]:
    rejects = Rejects()
    sizes = raw_sizes if raw_sizes is not None else [len(m) for m in messages]
    decoded = decode_batch(messages, sizes, rejects)
    return decoded, rejects


def run_full(messages: list[bytes]) -> tuple[pa.Table, Rejects]:
    """decode → normalize → validate with the default rules; returns the surviving rows."""
    decoded, rejects = run_decode(messages)
    n = len(messages)
    table = normalize(
        decoded.events,
        decoded.index,
        np.arange(1, n + 1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )
    ok = validate(table, resolve_rules(DEFAULT_RULES), rejects)
    return table.filter(pa.array(ok)), rejects


@dataclass(frozen=True)
class Bad:
    id: str
    message: bytes
    reason: Reason
    names: str
    """Text the dead-letter message must contain (the field, or `message` for the whole)."""
    full: bool = False
    """Needs normalize + validate (ISO codes, UTC range)."""
    raw_size: int | None = None


NESTED_2000_ARRAYS: Final = b"[" * 2000 + b"]" * 2000
NESTED_2000_OBJECTS: Final = b'{"a": ' * 2000 + b"1" + b"}" * 2000

BAD: Final[list[Bad]] = [
    # too_large: size is checked first, on the size as received (before masking)
    Bad("too_large_raw_size", msg(), Reason.TOO_LARGE, "message", raw_size=MAX_EVENT_BYTES + 1),
    Bad(
        "too_large_metadata_blob",
        msg(metadata={"blob": "x" * (2 * MAX_EVENT_BYTES)}),
        Reason.TOO_LARGE,
        "message",
    ),
    Bad(
        "too_large_beats_bad_json",
        b"{not json",
        Reason.TOO_LARGE,
        "message",
        raw_size=MAX_EVENT_BYTES + 1,
    ),
    # invalid_encoding: anywhere in the message
    Bad(
        "latin1_merchant",
        msg(merchant_id="caf\xe9").replace("café".encode(), b"caf\xe9"),
        Reason.INVALID_ENCODING,
        "message",
    ),
    Bad(
        "bad_utf8_unknown_field",
        with_tail(msg(), b'"processor": "ac\xffme"'),
        Reason.INVALID_ENCODING,
        "message",
    ),
    Bad(
        "bad_utf8_metadata",
        msg(metadata={"k": "XX"}).replace(b'"XX"', b'"\xc3\x28"'),
        Reason.INVALID_ENCODING,
        "message",
    ),
    Bad("bad_utf8_key", with_tail(msg(), b'"\xfe": 1'), Reason.INVALID_ENCODING, "message"),
    # invalid_json
    Bad("trailing_comma", with_tail(msg(), b""), Reason.INVALID_JSON, "message"),
    Bad("nan", with_tail(msg(), b'"x": NaN'), Reason.INVALID_JSON, "message"),
    Bad("infinity", msg(latency_ms=Raw("Infinity")), Reason.INVALID_JSON, "message"),
    Bad("comment", msg()[:-1] + b" /* c */}", Reason.INVALID_JSON, "message"),
    Bad("bom", b"\xef\xbb\xbf" + msg(), Reason.INVALID_JSON, "message"),
    Bad("two_values", msg() + b" " + msg(), Reason.INVALID_JSON, "message"),
    Bad("control_char", msg(merchant_id=Raw('"a\x01b"')), Reason.INVALID_JSON, "message"),
    Bad("lone_surrogate", msg(merchant_id=Raw('"\\ud800"')), Reason.INVALID_JSON, "message"),
    Bad("truncated", msg()[:-20], Reason.INVALID_JSON, "message"),
    Bad("empty_object_text", b"{", Reason.INVALID_JSON, "message"),
    Bad(
        "nesting_2000_in_unknown_field",
        with_tail(msg(), b'"x": ' + NESTED_2000_ARRAYS),
        Reason.INVALID_JSON,
        "message",
    ),
    Bad(
        "nesting_2000_in_metadata",
        msg(metadata=Raw('{"a": ' + NESTED_2000_ARRAYS.decode() + "}")),
        Reason.INVALID_JSON,
        "message",
    ),
    Bad("nesting_2000_objects_top", NESTED_2000_OBJECTS, Reason.INVALID_JSON, "message"),
    # not_an_object
    Bad("array", b"[" + msg() + b"]", Reason.NOT_AN_OBJECT, "message"),
    Bad("null", b"null", Reason.NOT_AN_OBJECT, "message"),
    Bad("string", b'"e1"', Reason.NOT_AN_OBJECT, "message"),
    Bad("number", b"42", Reason.NOT_AN_OBJECT, "message"),
    # missing_field
    Bad("no_currency", msg(currency=OMIT), Reason.MISSING_FIELD, "currency"),
    Bad("null_occurred_at", msg(occurred_at=None), Reason.MISSING_FIELD, "occurred_at"),
    Bad("null_status", msg(status=None), Reason.MISSING_FIELD, "status"),
    Bad(
        "case_sensitive_name",
        msg(currency=OMIT, Currency="USD"),
        Reason.MISSING_FIELD,
        "currency",
    ),
    Bad(
        "repeated_key_null_first",
        pairs([("currency", None), *BASE.items()]),
        Reason.MISSING_FIELD,
        "currency",
    ),
    Bad("empty_object", b"{}", Reason.MISSING_FIELD, "event_id"),
    # invalid_type
    Bad("amount_string", msg(amount_minor="1299"), Reason.INVALID_TYPE, "amount_minor"),
    Bad("amount_12_0", msg(amount_minor=Raw("12.0")), Reason.INVALID_TYPE, "amount_minor"),
    Bad("amount_12_5", msg(amount_minor=12.5), Reason.INVALID_TYPE, "amount_minor"),
    Bad("amount_1e2", msg(amount_minor=Raw("1e2")), Reason.INVALID_TYPE, "amount_minor"),
    Bad("amount_true", msg(amount_minor=True), Reason.INVALID_TYPE, "amount_minor"),
    Bad(
        "repeated_key_bad_first",
        pairs([("amount_minor", "5"), *BASE.items()]),
        Reason.INVALID_TYPE,
        "amount_minor",
    ),
    Bad("occurred_at_epoch", msg(occurred_at=1709294400), Reason.INVALID_TYPE, "occurred_at"),
    Bad("metadata_array", msg(metadata=[]), Reason.INVALID_TYPE, "metadata"),
    Bad("metadata_string", msg(metadata="x"), Reason.INVALID_TYPE, "metadata"),
    Bad("latency_string", msg(latency_ms="12"), Reason.INVALID_TYPE, "latency_ms"),
    Bad("latency_bool", msg(latency_ms=False), Reason.INVALID_TYPE, "latency_ms"),
    Bad("decline_code_int", msg(decline_code=5), Reason.INVALID_TYPE, "decline_code"),
    Bad("currency_int", msg(currency=840), Reason.INVALID_TYPE, "currency"),
    Bad("country_int", msg(country=49), Reason.INVALID_TYPE, "country"),
    Bad("event_id_int", msg(event_id=1), Reason.INVALID_TYPE, "event_id"),
    # invalid_value
    Bad("status_upper", msg(status="APPROVED"), Reason.INVALID_VALUE, "status"),
    Bad("event_type_unknown", msg(event_type="sale"), Reason.INVALID_VALUE, "event_type"),
    Bad("method_unknown", msg(payment_method="cash"), Reason.INVALID_VALUE, "payment_method"),
    Bad("channel_unknown", msg(channel="web"), Reason.INVALID_VALUE, "channel"),
    Bad("merchant_empty", msg(merchant_id=""), Reason.INVALID_VALUE, "merchant_id"),
    Bad("merchant_65", msg(merchant_id="m" * 65), Reason.INVALID_VALUE, "merchant_id"),
    Bad("event_id_129_emoji", msg(event_id="😀" * 129), Reason.INVALID_VALUE, "event_id"),
    Bad("transaction_id_empty", msg(transaction_id=""), Reason.INVALID_VALUE, "transaction_id"),
    Bad("customer_id_empty", msg(customer_id=""), Reason.INVALID_VALUE, "customer_id"),
    Bad("amount_negative", msg(amount_minor=-1), Reason.INVALID_VALUE, "amount_minor"),
    Bad("amount_over_max", msg(amount_minor=10**15 + 1), Reason.INVALID_VALUE, "amount_minor"),
    Bad("latency_negative", msg(latency_ms=-1), Reason.INVALID_VALUE, "latency_ms"),
    Bad("latency_1e400", msg(latency_ms=Raw("1e400")), Reason.INVALID_VALUE, "latency_ms"),
    Bad("latency_400_digits", msg(latency_ms=Raw("9" * 400)), Reason.INVALID_VALUE, "latency_ms"),
    Bad("metadata_1e400", msg(metadata=Raw('{"x": 1e400}')), Reason.INVALID_VALUE, "metadata"),
    # invalid_timestamp
    Bad("feb_30", msg(occurred_at="2024-02-30T12:00:00Z"), Reason.INVALID_TIMESTAMP, "occurred_at"),
    Bad(
        "feb_29_2023",
        msg(occurred_at="2023-02-29T12:00:00Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad("apr_31", msg(occurred_at="2024-04-31T00:00:00Z"), Reason.INVALID_TIMESTAMP, "occurred_at"),
    Bad(
        "no_seconds", msg(occurred_at="2024-03-01T12:00Z"), Reason.INVALID_TIMESTAMP, "occurred_at"
    ),
    Bad(
        "leap_second",
        msg(occurred_at="2016-12-31T23:59:60Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad("date_only", msg(occurred_at="2024-03-01"), Reason.INVALID_TIMESTAMP, "occurred_at"),
    Bad(
        "hour_24", msg(occurred_at="2024-03-01T24:00:00Z"), Reason.INVALID_TIMESTAMP, "occurred_at"
    ),
    Bad(
        "year_0000",
        msg(occurred_at="0000-03-01T12:00:00Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "basic_format", msg(occurred_at="20240301T120000Z"), Reason.INVALID_TIMESTAMP, "occurred_at"
    ),
    Bad(
        "hour_offset",
        msg(occurred_at="2024-03-01T12:00:00+01"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "comma_fraction",
        msg(occurred_at="2024-03-01T12:00:00,5Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "leading_space",
        msg(occurred_at=" 2024-03-01T12:00:00Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "trailing_newline",
        msg(occurred_at="2024-03-01T12:00:00Z\n"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "impossible_and_naive",
        msg(occurred_at="2024-02-30T12:00:00"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "fraction_carries_past_9999",
        msg(occurred_at="9999-12-31T23:59:59.9999996Z"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    Bad(
        "utc_before_year_1",
        msg(occurred_at="0001-01-01T00:30:00+01:00"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
        full=True,
    ),
    Bad(
        "utc_after_year_9999",
        msg(occurred_at="9999-12-31T23:30:00-01:00"),
        Reason.INVALID_TIMESTAMP,
        "occurred_at",
        full=True,
    ),
    # missing_timezone
    Bad("naive", msg(occurred_at="2024-03-01T12:00:00"), Reason.MISSING_TIMEZONE, "occurred_at"),
    Bad(
        "naive_space_fraction",
        msg(occurred_at="2024-03-01 12:00:00.5"),
        Reason.MISSING_TIMEZONE,
        "occurred_at",
    ),
    # unknown_currency (after decoding: the decoder takes any string)
    Bad("xyz", msg(currency="XYZ"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("hrk_withdrawn", msg(currency="HRK"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("two_letters", msg(currency="US"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("empty", msg(currency=""), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("padded", msg(currency="USD "), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("dotless_i_INR", msg(currency="ıNR"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("dotless_i_inr", msg(currency="ınr"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    Bad("long_s_usd", msg(currency="uſd"), Reason.UNKNOWN_CURRENCY, "currency", full=True),
    # unknown_country
    Bad("uk", msg(country="UK"), Reason.UNKNOWN_COUNTRY, "country", full=True),
    Bad("eu", msg(country="EU"), Reason.UNKNOWN_COUNTRY, "country", full=True),
    Bad("xk", msg(country="XK"), Reason.UNKNOWN_COUNTRY, "country", full=True),
    Bad("usa", msg(country="USA"), Reason.UNKNOWN_COUNTRY, "country", full=True),
    Bad("country_empty", msg(country=""), Reason.UNKNOWN_COUNTRY, "country", full=True),
    # unsupported_schema_version
    Bad("sv_2", msg(schema_version="2"), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    Bad("sv_int_2", msg(schema_version=2), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    Bad("sv_int_1", msg(schema_version=1), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    Bad("sv_1_0", msg(schema_version="1.0"), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    Bad("sv_v1", msg(schema_version="v1"), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    Bad("sv_empty", msg(schema_version=""), Reason.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
]


def test_every_reason_but_too_late_has_an_invalid_case() -> None:
    """too_late and batch_failed are the pipeline's, not a message's (tested elsewhere)."""
    covered = {case.reason for case in BAD}
    assert covered == set(Reason) - {Reason.TOO_LATE, Reason.BATCH_FAILED}


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_invalid_message_yields_exactly_its_reason(case: Bad) -> None:
    sizes = [case.raw_size if case.raw_size is not None else len(case.message)]
    if case.full:
        kept, rejects = run_full([case.message])
        assert kept.num_rows == 0
    else:
        decoded, rejects = run_decode([case.message], sizes)
        assert decoded.events == []
        assert decoded.index.tolist() == []
    assert rejects.index == [0]
    assert rejects.reason == [case.reason]
    assert case.names in rejects.message[0], rejects.message[0]


def test_event_id_kept_when_usable() -> None:
    _, rejects = run_decode([msg(event_id="evt_9", amount_minor="x"), b"[1]"])
    assert rejects.event_id == ["evt_9", None]


# --------------------------------------------------------------------------- valid


def one_event(message: bytes) -> dict[str, object]:
    """The single normalized row of a message that must be valid."""
    kept, rejects = run_full([message])
    assert list(zip(rejects.reason, rejects.message, strict=True)) == []
    assert kept.num_rows == 1
    return kept.to_pylist()[0]


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("message", "column", "expected"),
    [
        (msg(currency="usd"), "currency", "USD"),
        (msg(currency="Usd"), "currency", "USD"),
        (msg(currency="XAU"), "currency", "XAU"),
        (msg(country="de"), "country", "DE"),
        (msg(country="aq"), "country", "AQ"),
        (msg(amount_minor=0), "amount_minor", 0),
        (msg(amount_minor=10**15), "amount_minor", 10**15),
        (msg(amount_minor=Raw("-0")), "amount_minor", 0),
        (msg(occurred_at="2024-03-01T12:00:00+05:30"), "occurred_at", utc(2024, 3, 1, 6, 30)),
        (msg(occurred_at="2024-03-01T12:00:00-00:00"), "occurred_at", utc(2024, 3, 1, 12)),
        (msg(occurred_at="2024-03-01t12:00:00z"), "occurred_at", utc(2024, 3, 1, 12)),
        (msg(occurred_at="2024-03-01 12:00:00Z"), "occurred_at", utc(2024, 3, 1, 12)),
        (msg(occurred_at="2024-02-29T23:59:59-01:00"), "occurred_at", utc(2024, 3, 1, 0, 59, 59)),
        (
            msg(occurred_at="2024-03-01T13:04:05.123+01:00"),
            "window_start",
            utc(2024, 3, 1, 12, 0),
        ),
        (
            msg(occurred_at="2024-12-31T23:59:59.9999996Z"),
            "occurred_at",
            utc(2025, 1, 1),
        ),
        (
            msg(occurred_at="2024-03-01T12:00:00.1234564Z"),
            "occurred_at",
            utc(2024, 3, 1, 12, 0, 0, 123456),
        ),
        (msg(latency_ms=0), "latency_ms", 0.0),
        (msg(latency_ms=Raw("-0.0")), "latency_ms", 0.0),
        (msg(latency_ms=183.4), "latency_ms", 183.4),
        (msg(schema_version="1"), "schema_version", "1"),
        (msg(), "schema_version", "1"),
        (msg(event_id="😀" * 128), "event_id", "😀" * 128),
        (msg(merchant_id="m_42 "), "merchant_id", "m_42 "),
        (msg(status="declined"), "decline_code", "unknown"),
        (msg(status="declined", decline_code=None), "decline_code", "unknown"),
        (msg(status="declined", decline_code=""), "decline_code", ""),
        (msg(status="approved", decline_code="x"), "decline_code", "x"),
        (msg(status="approved"), "decline_code", None),
        (
            pairs([*BASE.items(), ("amount_minor", 5), ("amount_minor", 7)]),
            "amount_minor",
            7,
        ),
    ],
)
def test_valid_counterpart(message: bytes, column: str, expected: object) -> None:
    row = one_event(message)
    assert row[column] == expected


def test_null_optional_fields_mean_absent() -> None:
    optional = (
        "decline_code",
        "card_network",
        "latency_ms",
        "country",
        "channel",
        "customer_id",
        "metadata",
        "schema_version",
    )
    row = one_event(msg(**dict.fromkeys(optional)))
    for name in ("decline_code", "card_network", "latency_ms", "country", "channel", "customer_id"):
        assert row[name] is None, name
    assert row["schema_version"] == "1"


def test_unknown_top_level_fields_accepted() -> None:
    row = one_event(
        msg(processor="acme", extra={"nested": [1, None, {"x": 1e300}]}, big=10**40, n=None)
    )
    assert row["event_id"] == "evt_1"


def test_metadata_may_hold_any_json() -> None:
    row = one_event(msg(metadata={"cart": "c-77", "items": 3, "gift": None, "big": 10**40}))
    assert row["amount_minor"] == 1299


def test_raw_size_exactly_1_mib_is_valid() -> None:
    padded = msg(pad="")
    padded = msg(pad="x" * (MAX_EVENT_BYTES - len(padded)))
    assert len(padded) == MAX_EVENT_BYTES
    decoded, rejects = run_decode([padded])
    assert len(rejects) == 0
    assert len(decoded.events) == 1


def test_too_large_judged_on_raw_size_not_masked_size() -> None:
    # masking shortened a message that was 1 MiB + 1 as received
    decoded, rejects = run_decode([msg(), msg()], [MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES])
    assert rejects.index == [0]
    assert rejects.reason == [Reason.TOO_LARGE]
    assert decoded.index.tolist() == [1]


@pytest.mark.parametrize(
    "occurred_at", ["0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00", "0001-01-01T00:04:59Z"]
)
def test_first_instant_of_year_1_utc_is_valid(occurred_at: str) -> None:
    """Contract §7/§8.3: only a UTC instant *outside* years 0001–9999 is invalid."""
    assert one_event(msg(occurred_at=occurred_at))["window_start"] == utc(1, 1, 1)


@pytest.mark.parametrize(
    "occurred_at",
    ["9999-12-31T23:59:59.999999Z", "9999-12-31T23:55:00Z", "9999-12-31T22:59:59-01:00"],
)
def test_last_instant_of_year_9999_utc_is_valid(occurred_at: str) -> None:
    """Contract §7/§8.3: only a UTC instant *outside* years 0001–9999 is invalid."""
    assert one_event(msg(occurred_at=occurred_at))["window_start"] == utc(9999, 12, 31, 23, 55)


def test_syntax_error_before_bad_utf8_is_invalid_json() -> None:
    """Contract §7: errors are reported where they first occur, left to right."""
    message = b'{"event_id": "e1",, "processor": "\xff"}'
    _, rejects = run_decode([message])
    assert rejects.reason == [Reason.INVALID_JSON]


def test_batch_keeps_order_and_indices() -> None:
    messages = [msg(event_id="a"), b"nope", msg(event_id="b"), msg(amount_minor=-1), b""]
    decoded, rejects = run_decode(messages)
    assert [e.event_id for e in decoded.events] == ["a", "b"]
    assert decoded.index.tolist() == [0, 2]
    assert rejects.index == [1, 3, 4]
    assert rejects.reason == [Reason.INVALID_JSON, Reason.INVALID_VALUE, Reason.INVALID_JSON]


# --------------------------------------------------------------------------- conservation

_SEEDS: Final = [
    msg(),
    msg(status="declined", latency_ms=12.5, country="de", metadata={"a": [1, {"b": None}]}),
    b"[]",
    b"null",
    NESTED_2000_OBJECTS,
]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=120))
    seed = draw(st.sampled_from(_SEEDS))
    if kind == 1:
        return seed
    start = draw(st.integers(0, len(seed)))
    end = draw(st.integers(start, min(len(seed), start + 8)))
    return seed[:start] + draw(st.binary(max_size=8)) + seed[end:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages(), max_size=12), data=st.data())
def test_decode_never_raises_and_conserves_messages(
    batch: list[bytes], data: st.DataObject
) -> None:
    sizes = [
        data.draw(st.sampled_from([len(m), len(m), MAX_EVENT_BYTES + 1]), label=f"size{i}")
        for i, m in enumerate(batch)
    ]
    decoded, rejects = run_decode(batch, sizes)
    good = decoded.index.tolist()
    assert len(decoded.events) == len(good)
    assert len(set(rejects.index)) == len(rejects.index), "a message rejected twice"
    assert sorted(good + rejects.index) == list(range(len(batch)))
    assert len(rejects.reason) == len(rejects.message) == len(rejects.event_id) == len(rejects)
    assert all(r in set(Reason) and r is not Reason.TOO_LATE for r in rejects.reason)
    reasons = dict(zip(rejects.index, rejects.reason, strict=True))
    for i, message in enumerate(batch):
        too_large = sizes[i] > MAX_EVENT_BYTES
        assert (reasons.get(i) is Reason.TOO_LARGE) == too_large
        if not too_large and not _is_utf8(message):
            # invalid UTF-8 is rejected; as invalid_json when a syntax error comes first
            assert reasons.get(i) in (Reason.INVALID_ENCODING, Reason.INVALID_JSON)
        if reasons.get(i) is Reason.INVALID_ENCODING:
            assert not _is_utf8(message)


def _is_utf8(message: bytes) -> bool:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
