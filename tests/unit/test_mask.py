"""PAN masking (PCI DSS 3.4): the masking rule against a reference, and the prefilter's promise.

The reference below scans character by character (no regular expressions) so that
it shares no code or approach with `paymetrics.mask`.
"""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from paymetrics.mask import (
    EXEMPT_KEYS,
    candidates,
    luhn_valid,
    mask_batch,
    mask_bytes,
    mask_message,
    mask_text,
    mask_value,
)

DIGITS = "0123456789"

# --- the reference ------------------------------------------------------------------


def ref_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def ref_runs(text: str) -> list[tuple[int, int, str]]:
    """Maximal runs: (start, end, digits) of ASCII digits joined by single spaces or dashes."""
    runs = []
    i = 0
    while i < len(text):
        if text[i] not in DIGITS:
            i += 1
            continue
        start, digits = i, [text[i]]
        i += 1
        while i < len(text):
            if text[i] in DIGITS:
                digits.append(text[i])
                i += 1
            elif text[i] in " -" and i + 1 < len(text) and text[i + 1] in DIGITS:
                digits.append(text[i + 1])
                i += 2
            else:
                break
        runs.append((start, i, "".join(digits)))
    return runs


def is_pan(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and ref_luhn(digits)


def ref_mask_text(text: str) -> tuple[str, int]:
    out, position, count = [], 0, 0
    for start, end, digits in ref_runs(text):
        if is_pan(digits):
            out += [text[position:start], digits[:6], "*" * (len(digits) - 10), digits[-4:]]
            position = end
            count += 1
    out.append(text[position:])
    return "".join(out), count


def ref_mask_value(value: Any, *, top: bool = True) -> tuple[Any, int]:
    if isinstance(value, str):
        return ref_mask_text(value)
    if isinstance(value, list):
        items = [ref_mask_value(item, top=False) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        members: dict[str, Any] = {}
        total = 0
        for key, item in value.items():
            if top and key in EXEMPT_KEYS:
                members[key] = item
                continue
            masked_key, n_key = ref_mask_text(key)
            masked_item, n_item = ref_mask_value(item, top=False)
            members[masked_key] = masked_item
            total += n_key + n_item
        return members, total
    return value, 0


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal with equal types all the way down (so True != 1 and 1 != 1.0); -0.0 != 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def strings_and_keys(value: Any, *, top: bool = True) -> list[str]:
    """Every string value and key, except the values of exempt top-level members."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings_and_keys(item, top=False)]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found.append(key)
            if not (top and key in EXEMPT_KEYS):
                found += strings_and_keys(item, top=False)
        return found
    return []


def complete_luhn(prefix: str) -> str:
    return next(prefix + d for d in DIGITS if ref_luhn(prefix + d))


# --- strategies ---------------------------------------------------------------------

pan_digits = st.integers(13, 19).flatmap(
    lambda n: st.text(DIGITS, min_size=n - 1, max_size=n - 1).map(complete_luhn)
)
any_digits = st.text(DIGITS, min_size=1, max_size=25)


@st.composite
def separated(draw: st.DrawFn, digits: st.SearchStrategy[str]) -> str:
    """Digits with a random single separator (or none) between each pair."""
    ds = draw(digits)
    seps = draw(
        st.lists(
            st.sampled_from(["", "", "", " ", "-"]), min_size=len(ds) - 1, max_size=len(ds) - 1
        )
    )
    return ds[0] + "".join(sep + d for sep, d in zip(seps, ds[1:], strict=True))


texts = st.lists(
    st.one_of(
        st.text(max_size=8),
        st.text(" -0123456789x*", max_size=8),
        separated(pan_digits),
        separated(any_digits),
    ),
    max_size=8,
).map("".join)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    pan_digits.map(int),  # a PAN as a JSON number is left alone
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=16,
)
exempt_values = st.one_of(separated(pan_digits), texts, json_values)


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A top-level object, often with exempt identifiers (PANs among them), or any value."""
    if draw(st.integers(0, 3)) == 0:
        return draw(json_values)
    members = draw(st.dictionaries(texts, json_values, max_size=5))
    for key in sorted(EXEMPT_KEYS):
        if draw(st.booleans()):
            members[key] = draw(exempt_values)
    return members


# --- luhn_valid and mask_text -------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("378282246310005", True),
        ("4222222222222", True),
        ("6011000990139421237", True),
        ("4111111111111112", False),
        ("41111111111111112", False),
        ("0", True),
        ("", False),
        ("4111 1111 1111 1111", False),  # separators are not digits
        ("４１１１１１１１１１１１１１１１", False),  # fullwidth digits are not ASCII digits
    ],
)
def test_luhn_valid_examples(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@given(st.text(DIGITS, min_size=1, max_size=30))
def test_luhn_valid_agrees_with_reference(digits: str) -> None:
    assert luhn_valid(digits) == ref_luhn(digits)


@pytest.mark.parametrize(
    ("text", "masked", "count"),
    [
        ("4111 1111 1111 1111", "411111******1111", 1),
        ("4111-1111-1111-1111", "411111******1111", 1),
        ("4111111111111111", "411111******1111", 1),
        ("amex 378282246310005.", "amex 378282*****0005.", 1),
        ("6011000990139421237", "601100*********1237", 1),  # 19 digits
        ("visa13=4222222222222;", "visa13=422222***2222;", 1),
        ("x4111111111111111y", "x411111******1111y", 1),
        ("4111111111111111-", "411111******1111-", 1),  # a trailing dash is not in the run
        ("-4111 1111-1111 1111 ", "-411111******1111 ", 1),
        ("a 4111111111111111, b 378282246310005", "a 411111******1111, b 378282*****0005", 2),
        ("4111111111111111000000", "4111111111111111000000", 0),  # 22 digits: not 13-19
        ("4111111111111111 000000", "4111111111111111 000000", 0),  # still one 22-digit run
        ("41111111111111112", "41111111111111112", 0),  # not Luhn-valid
        ("4111111111111112", "4111111111111112", 0),
        ("4111  1111 1111 1111", "4111  1111 1111 1111", 0),  # a double space ends a run
        ("4111 -1111-1111-1111", "4111 -1111-1111-1111", 0),
        ("411111111111", "411111111111", 0),  # 12 digits
        ("4111-1111-1119", "4111-1111-1119", 0),  # 12 digits, Luhn-valid
        ("４１１１１１１１１１１１１１１１", "４１１１１１１１１１１１１１１１", 0),
        ("", "", 0),
    ],
)
def test_mask_text_examples(text: str, masked: str, count: int) -> None:
    assert mask_text(text) == (masked, count)
    assert mask_bytes(text.encode()) == (masked.encode(), count)


@given(texts)
@example("4111 1111 1111 1111")
@example("12 4111111111111111")
def test_mask_text_masks_exactly_the_pans(text: str) -> None:
    masked, count = mask_text(text)
    expected, expected_count = ref_mask_text(text)
    assert (masked, count) == (expected, expected_count)
    # no maximal Luhn-valid 13-19-digit run survives
    assert not any(is_pan(digits) for _, _, digits in ref_runs(masked))
    # each PAN keeps its first six and last four digits and hides the rest, one star each
    pans = [digits for _, _, digits in ref_runs(text) if is_pan(digits)]
    assert count == len(pans)
    assert masked.count("*") - text.count("*") == sum(len(p) - 10 for p in pans)
    position = 0
    for pan in pans:
        position = masked.index(pan[:6] + "*" * (len(pan) - 10) + pan[-4:], position)
    if not pans:
        assert masked is text  # other runs, and everything else, untouched
    assert mask_text(masked) == (masked, 0)  # idempotent


@given(st.lists(st.one_of(st.binary(max_size=8), texts.map(str.encode)), max_size=6).map(b"".join))
def test_mask_bytes_is_mask_text_on_every_byte(raw: bytes) -> None:
    masked, count = mask_bytes(raw)
    expected, expected_count = ref_mask_text(raw.decode("latin-1"))
    assert (masked, count) == (expected.encode("latin-1"), expected_count)
    if not count:
        assert masked is raw


# --- mask_value and mask_message on JSON ----------------------------------------------


def test_mask_value_keys_exemption_and_numbers() -> None:
    value = {
        "event_id": "4111111111111111",
        "transaction_id": {"pan": "4111111111111111"},
        "4111111111111111": [
            4111111111111111,
            "x 378282246310005",
            {"event_id": "4111111111111111"},
        ],
    }
    masked, count = mask_value(value, exempt_keys=EXEMPT_KEYS)
    assert count == 3
    assert masked == {
        "event_id": "4111111111111111",
        "transaction_id": {"pan": "4111111111111111"},
        "411111******1111": [
            4111111111111111,
            "x 378282*****0005",
            {"event_id": "411111******1111"},
        ],
    }
    assert mask_value(value) == (
        {
            "event_id": "411111******1111",
            "transaction_id": {"pan": "411111******1111"},
            "411111******1111": masked["411111******1111"],
        },
        5,
    )
    untouched = {"a": ["b", 1, 2.5, None, True]}
    assert mask_value(untouched)[0] is untouched


@given(events())
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_mask_message_masks_every_string_and_key(value: Any) -> None:
    raw = msgspec.json.encode(value)
    out, count = mask_message(raw)
    decoded = msgspec.json.decode(out)
    expected, expected_count = ref_mask_value(value)
    # strings and keys masked, exempt identifiers and all non-string values unchanged
    assert strictly_equal(decoded, expected)
    assert count == expected_count
    assert not any(is_pan(d) for s in strings_and_keys(decoded) for _, _, d in ref_runs(s))
    if isinstance(value, dict):
        for key in EXEMPT_KEYS & value.keys():
            assert strictly_equal(decoded[key], value[key])
    if not count:
        assert out is raw


no_digits = st.text(
    st.characters(exclude_characters=DIGITS + "<>", exclude_categories=["Cs"]), max_size=6
)


@st.composite
def injected(draw: st.DrawFn) -> str:
    """Digit-free text with PANs, each between `<` and `>`, at random places."""
    parts = [draw(no_digits)]
    for _ in range(draw(st.integers(0, 2))):
        parts += ["<", draw(separated(pan_digits)), ">", draw(no_digits)]
    return "".join(parts)


injected_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), injected()),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(injected(), children, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(injected(), injected_values, max_size=4), injected(), injected())
def test_mask_message_counts_injected_pans(
    value: dict[str, Any], event_id: str, transaction_id: str
) -> None:
    value = {"event_id": event_id, **value, "transaction_id": transaction_id}
    raw = msgspec.json.encode(value)
    out, count = mask_message(raw)
    injected_count = sum(s.count("<") for s in strings_and_keys(value))
    assert count == injected_count
    decoded = msgspec.json.decode(out)
    assert decoded["event_id"] == event_id
    assert decoded["transaction_id"] == transaction_id
    for s in strings_and_keys(decoded):
        for part in s.split("<")[1:]:
            pan = part.split(">")[0]
            assert pan[:6].isdigit()
            assert pan[-4:].isdigit()
            assert set(pan[6:-4]) == {"*"}


@pytest.mark.parametrize(
    ("raw", "out", "count"),
    [
        (b'{"card":"4111 1111 1111 1111"}', b'{"card":"411111******1111"}', 1),
        (b'{"card": "\\u0034111111111111111"}', b'{"card":"411111******1111"}', 1),
        (
            b'{"event_id":"4111111111111111","k":"4111111111111111"}',
            b'{"event_id":"4111111111111111","k":"411111******1111"}',
            1,
        ),
        (b'{"a":{"event_id":"4111111111111111"}}', b'{"a":{"event_id":"411111******1111"}}', 1),
        (b'["4111111111111111", 4111111111111111]', b'["411111******1111",4111111111111111]', 1),
        # not JSON: the raw text is masked, numbers and identifiers included
        (
            b'{"event_id": "4111111111111111", "n": 4111111111111111',
            b'{"event_id": "411111******1111", "n": 411111******1111',
            2,
        ),
        (b"\xffcard 4111-1111-1111-1111\xfe", b"\xffcard 411111******1111\xfe", 1),
        # a member shadowed by a duplicate key is still in the raw bytes: masked there
        (b'{"a":"4111111111111111","a":"x"}', b'{"a":"411111******1111","a":"x"}', 1),
    ],
)
def test_mask_message_examples(raw: bytes, out: bytes, count: int) -> None:
    assert mask_message(raw) == (out, count)
    assert candidates([raw]).tolist() == [True]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount_minor":4111111111111111,"latency_ms":0.4111111111111111}',
        b'{"event_id":"4111111111111111","transaction_id":"4111 1111 1111 1111"}',
        b'{"event_id":"4111111111111111","event_id":"x"}',  # every exempt occurrence
        b'{"id":"41111111111111112","ref":"4111111111111111000000"}',
        b"not json 4111111111111112",
        b"",
    ],
)
def test_mask_message_leaves_alone(raw: bytes) -> None:
    out, count = mask_message(raw)
    assert out is raw
    assert count == 0


def test_mask_message_too_deep_to_decode() -> None:
    deep = b"[" * 5000 + b'"\\u0034111111111111111", "x", 4111111111111111' + b"]" * 5000
    out, count = mask_message(deep)
    assert count == 2
    assert b"\\u0034" not in out
    assert out.count(b"411111******1111") == 2
    assert candidates([deep]).tolist() == [True]


# --- the prefilter ------------------------------------------------------------------


def encode_loosely(value: Any, rnd: random.Random, escape: float) -> str:
    """JSON with random whitespace and random \\u escapes (of digits, spaces, dashes too)."""

    def ws() -> str:
        return "".join(rnd.choice(" \t\n\r") for _ in range(rnd.choice([0, 0, 0, 1, 2])))

    def string(s: str) -> str:
        out = []
        for char in s:
            if char in '"\\' or char < " " or rnd.random() < escape:
                code = ord(char)
                if code > 0xFFFF:
                    high, low = divmod(code - 0x10000, 0x400)
                    out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
                else:
                    out.append(f"\\u{code:04{rnd.choice('xX')}}")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'

    def encode(v: Any) -> str:
        if isinstance(v, str):
            return string(v)
        if isinstance(v, list):
            return "[" + ws() + ",".join(ws() + encode(i) + ws() for i in v) + "]"
        if isinstance(v, dict):
            members = (
                ws() + string(k) + ws() + ":" + ws() + encode(i) + ws() for k, i in v.items()
            )
            return "{" + ws() + ",".join(members) + "}"
        return msgspec.json.encode(v).decode()

    return ws() + encode(value) + ws()


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """JSON (compact or loose, escaped), JSON broken in small ways, text, and plain bytes."""
    kind = draw(st.sampled_from(["json", "loose", "broken", "text", "bytes"]))
    if kind == "text":
        return draw(texts).encode()
    if kind == "bytes":
        parts = draw(
            st.lists(
                st.one_of(st.binary(max_size=6), separated(pan_digits).map(str.encode)), max_size=5
            )
        )
        return b"".join(parts)
    value = draw(events())
    if kind == "json":
        return msgspec.json.encode(value)
    rnd = draw(st.randoms(use_true_random=False))
    message = encode_loosely(value, rnd, draw(st.sampled_from([0.0, 0.1, 0.5]))).encode()
    if kind == "loose":
        return message
    for _ in range(draw(st.integers(1, 3))):  # break it a little
        at = draw(st.integers(0, len(message)))
        edit = draw(st.sampled_from(["cut", "drop", "insert", "number"]))
        if edit == "cut":
            message = message[:at]
        elif edit == "drop":
            message = message[:at] + message[at + 1 :]
        elif edit == "insert":
            byte = draw(st.sampled_from([bytes([b]) for b in b'"\\{}[],:\xff\x001 -e']))
            message = message[:at] + byte + message[at:]
        else:
            message = message[:at] + draw(separated(pan_digits)).encode() + message[at:]
    return message


tricky_messages = [
    b'{"a":"\\u0034111111111111111"}',
    b'{"a":"4111\\u00201111\\u002D1111\\u002d1111"}',
    b'{"a":"4111\\u002d1111\\u002D1111-1111"}',
    b'{"a":"4111\\u00201111 1111 1111"}',
    b'{"a":"\\ud83d\\ude00 4111111111111111"}',
    # deeper than stage 2 looks
    b'{"a":' + b"[" * 9 + b'{"b":"4111111111111111"}' + b"]" * 9 + b"}",
    b'{"a":' + b"[" * 60 + b'"4111111111111111"' + b"]" * 60 + b"}",
    b'{"n": 4111111111111111',  # truncated: not JSON, so the bare number is masked
    b'{"n": 4111111111111111}}',
    b'{"n": 4111111111111111,}',
    b'{"n": [4111111111111111}',
    b'{"n": 04111111111111111}',
    b'{"n": 4111111111111111, "x": 1e400}',  # out of range: not JSON for msgspec
    b'{"n": 4111111111111111, "x": ' + b"1" * 5000 + b"}",
    b'{"n": 4111111111111111, "x": "\xff"}',  # not UTF-8
    b'{"n": 4111111111111111, "x": "\\ud800"}',  # lone surrogate
    b'{"n": 4111111111111111, "x": "\x01"}',  # control character
    b'{"n": 4111111111111111} {}',
    b"\xef\xbb\xbf" + b'{"n": 4111111111111111}',  # BOM
    b'{"n": 4111111111111111, "d": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"event_id": "4111111111111111"',
    b'{"event_id":"x","k":"1","event_id":"4111111111111111","a":"4111111111111111","a":1}',
    b"4111111111111111,",  # a number, but not JSON
    b'"4111111111111111"',
    b"[4111111111111111",
]


@given(st.lists(messages(), min_size=1, max_size=6))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=300)
def test_candidates_never_misses_a_message_that_masking_changes(batch: list[bytes]) -> None:
    flags = candidates(batch)
    assert flags.dtype == np.bool_
    assert flags.shape == (len(batch),)
    for message, flag in zip(batch, flags.tolist(), strict=True):
        out, count = mask_message(message)
        if out != message:
            assert flag, message
            assert count > 0
        else:
            assert out is message


@pytest.mark.parametrize("message", tricky_messages)
def test_candidates_on_tricky_messages(message: bytes) -> None:
    out, _ = mask_message(message)
    assert out != message  # each of these is masked...
    assert candidates([message]).tolist() == [True]  # ...and flagged
    assert candidates([b"{}", message, b"{}"]).tolist() == [False, True, False]


@pytest.mark.parametrize(
    "key", ["event_i", "event_idx", "Event_id", "transaction", "transaction_idd", "id", "", "4"]
)
def test_candidates_only_exempt_the_exact_identifiers(key: str) -> None:
    message = msgspec.json.encode({"event_id": "1", key: "4111111111111111"})
    assert mask_message(message)[1] == 1
    assert candidates([message]).tolist() == [True]


def realistic_event(rng: random.Random, **overrides: Any) -> bytes:
    event = {
        "event_id": f"{rng.getrandbits(128):032x}",
        "event_type": "authorization",
        "transaction_id": str(rng.randrange(10**18, 10**19)),  # a numeric id looks like a PAN
        "occurred_at": f"2024-05-01T12:34:56.{rng.randrange(10**6):06d}+00:00",
        "merchant_id": "m_0042",
        "amount_minor": rng.randrange(10**15, 10**16),  # a 16-digit number, not a string
        "currency": "EUR",
        "status": "declined",
        "payment_method": "card",
        "decline_code": "51",
        "card_network": "visa",
        "latency_ms": rng.uniform(1, 1000),  # ~17 significant digits
        "country": "DE",
        "channel": "ecommerce",
        "customer_id": f"cus_{rng.getrandbits(48):012x}",
        "metadata": {
            "ip": "203.0.113.7",
            "attempt": 2,
            "tags": ["web", "3ds"],
            "phone": "+1 555-123-4567",
        },
        "schema_version": "1",
    }
    event.update(overrides)
    return msgspec.json.encode(event)


def test_candidates_rarely_flags_realistic_events_without_pans() -> None:
    rng = random.Random(7)
    batch = [realistic_event(rng) for _ in range(300)]
    assert not candidates(batch).any()
    with_pan = realistic_event(rng, metadata={"note": "paid with 4111 1111 1111 1111"})
    assert candidates([*batch, with_pan]).tolist() == [False] * 300 + [True]


def test_candidates_of_nothing() -> None:
    flags = candidates([])
    assert flags.shape == (0,)
    assert flags.dtype == np.bool_


def test_mask_batch_keeps_untouched_messages_and_counts() -> None:
    rng = random.Random(3)
    plain = realistic_event(rng)
    pan = realistic_event(rng, metadata={"a": "4111111111111111", "b": ["378282246310005"]})
    not_json = b"card=4111111111111111&cvv=123"
    not_pan = b'{"x":"41111111111111112"}'  # a candidate, but nothing to mask
    batch = [plain, pan, not_json, not_pan, plain]
    out, counts = mask_batch(batch)
    assert counts.dtype == np.int64
    assert counts.tolist() == [0, 2, 1, 0, 0]
    assert out[0] is plain
    assert out[3] is not_pan
    assert out[4] is plain
    assert out[1] == mask_message(pan)[0]
    assert b"4111111111111111" not in out[1]
    assert out[2] == b"card=411111******1111&cvv=123"
    empty, no_counts = mask_batch([])
    assert empty == []
    assert no_counts.dtype == np.int64
    assert no_counts.shape == (0,)
