"""Card-number (PAN) masking, applied to every message before it is written anywhere.

PCI DSS requirement 3.4 forbids storing a readable primary account number, so every
Luhn-valid maximal run of 13-19 digits (single spaces or dashes allowed between
digits) in a string value or object key is cut to its first six and last four
digits, e.g. ``411111******1111``. The top-level ``event_id`` and ``transaction_id``
are exempt; JSON numbers are not strings and are left alone; a message that is not
JSON (or not UTF-8) is masked as raw text.

Almost no message carries a card number, so `candidates` is a vectorized RE2
prefilter (pyarrow) that rules most messages out without decoding them. It may say
"maybe" too often, never too rarely: whenever `mask_message` would change a
message, `candidates` marks it.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "EXEMPT_KEYS",
    "candidates",
    "luhn_valid",
    "mask_batch",
    "mask_bytes",
    "mask_message",
    "mask_text",
    "mask_value",
]

EXEMPT_KEYS: Final = frozenset({"event_id", "transaction_id"})
"""Top-level identifiers that are kept exactly as received."""

# A maximal digit run with at least 13 digits. Scanning left to right, a match can
# only start at the first digit of a run (a shorter run has no 13-digit suffix) and
# the greedy tail always ends where the run ends, so matches are exactly the
# maximal runs of >= 13 digits. No backtracking blow-up: each step has one choice.
_PAN_RUN: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")
_PAN_RUN_BYTES: Final = re.compile(rb"[0-9](?:[ -]?[0-9]){12,}")
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# One JSON string token or structural character (used by the token-level masker).
# The possessive loop keeps it linear on unterminated strings.
_JSON_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*+"|[{}\[\],:]', re.DOTALL)
_TOKEN_HINT: Final = re.compile(rb"[0-9]|\\u")


def luhn_valid(digits: str) -> bool:
    """True if `digits` (ASCII digits only, at least one) passes the Luhn mod-10 check."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def _masked_digits(run: str) -> str | None:
    """The masked form of one maximal run, or None if it is not a PAN."""
    digits = run.replace(" ", "").replace("-", "")
    if len(digits) > 19 or not luhn_valid(digits):
        return None
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_text(text: str) -> tuple[str, int]:
    """Mask every PAN in `text`; return the masked text and how many PANs were masked."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        masked = _masked_digits(match.group())
        if masked is None:
            return match.group()
        count += 1
        return masked

    masked_text = _PAN_RUN.sub(replace, text)
    return (masked_text, count) if count else (text, 0)


def mask_bytes(raw: bytes) -> tuple[bytes, int]:
    """Mask every PAN in raw bytes (any ASCII-compatible encoding); `raw` itself if none."""
    count = 0

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal count
        masked = _masked_digits(match.group().decode("ascii"))
        if masked is None:
            return match.group()
        count += 1
        return masked.encode("ascii")

    masked_raw = _PAN_RUN_BYTES.sub(replace, raw)
    return (masked_raw, count) if count else (raw, 0)


def mask_value(value: Any, *, exempt_keys: frozenset[str] = frozenset()) -> tuple[Any, int]:
    """Mask PANs in every string and object key of a decoded JSON value.

    `exempt_keys` are object keys whose values are kept as they are; they apply to
    this (top) level only. Returns the value itself when nothing was masked.
    Should two keys of one object become equal by masking, the later one wins
    (as with duplicate keys in JSON).
    """
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        total = 0
        items: list[Any] = []
        for item in value:
            masked_item, n = mask_value(item)
            items.append(masked_item)
            total += n
        return (items, total) if total else (value, 0)
    if isinstance(value, dict):
        total = 0
        members: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                if key in exempt_keys:
                    members[key] = item
                    continue
                key, n_key = mask_text(key)
                total += n_key
            masked_item, n = mask_value(item)
            members[key] = masked_item
            total += n
        return (members, total) if total else (value, 0)
    return value, 0


def _mask_json_tokens(raw: bytes, exempt_keys: frozenset[str]) -> tuple[bytes, int]:
    """Mask every JSON string token of `raw` in place, leaving all other bytes as they are.

    The fallback for what decode/re-encode cannot handle: duplicate keys (the decoder
    keeps the last member, so a PAN in a shadowed one would otherwise survive in the
    raw bytes) and nesting too deep for recursion. Only the last member of an exempt
    top-level key is exempt, matching the decoded view. Returns `raw` itself if no
    PAN was found.
    """
    depth = 0
    top_object = False
    expect_key = False
    key = ""
    member = 0
    exempt_member: tuple[str, int] | None = None
    last_exempt: dict[str, int] = {}
    # (start, end, replacement, PANs, exempt member the token belongs to)
    edits: list[tuple[int, int, bytes, int, tuple[str, int] | None]] = []
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        first = token[0]
        if first == 0x22:  # '"'
            is_key = top_object and depth == 1 and expect_key
            if not is_key and not _TOKEN_HINT.search(token):
                continue
            try:
                text = msgspec.json.decode(token)
            except (ValueError, RecursionError):
                continue
            if not isinstance(text, str):
                continue
            if is_key:
                member += 1
                key = text
                expect_key = False
            masked, n = mask_text(text)
            if n:
                replacement = msgspec.json.encode(masked)
                edits.append((match.start(), match.end(), replacement, n, exempt_member))
        elif first in b"{[":
            if depth == 0 and first == 0x7B:  # '{'
                top_object = expect_key = True
            depth += 1
        elif first in b"}]":
            depth -= 1
            if depth == 0:
                exempt_member = None
        elif top_object and depth == 1:
            if first == 0x2C:  # ','
                expect_key = True
                exempt_member = None
            elif key in exempt_keys:  # ':' after an exempt key
                exempt_member = (key, member)
                last_exempt[key] = member
    pieces: list[bytes] = []
    count = 0
    position = 0
    for start, end, replacement, n, owner in edits:
        if owner is not None and last_exempt[owner[0]] == owner[1]:
            continue
        pieces += (raw[position:start], replacement)
        position = end
        count += n
    if not count:
        return raw, 0
    pieces.append(raw[position:])
    return b"".join(pieces), count


def mask_message(raw: bytes) -> tuple[bytes, int]:
    """Mask one raw message; return it (the same object if nothing was masked) and the count.

    JSON (UTF-8) is decoded, masked with the top-level identifiers exempt (when the
    top level is an object) and re-encoded, key order kept. Anything else is masked
    as raw bytes, without exemptions.
    """
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        # Valid or not, too deep to decode: mask string tokens (escapes decoded),
        # then whatever digit runs remain anywhere, as for any unparsable message.
        tokens_masked, n_tokens = _mask_json_tokens(raw, frozenset())
        masked_raw, n_raw = mask_bytes(tokens_masked)
        return masked_raw, n_tokens + n_raw
    except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
        return mask_bytes(raw)
    exempt = EXEMPT_KEYS if isinstance(value, dict) else frozenset[str]()
    try:
        masked, count = mask_value(value, exempt_keys=exempt)
        if count:
            return msgspec.json.encode(masked), count
    except RecursionError:
        pass
    # Nothing to mask in the decoded value; the raw bytes can still hide a PAN in a
    # member shadowed by a duplicate key. This returns `raw` itself when they don't.
    return _mask_json_tokens(raw, exempt)


# --- the vectorized prefilter ------------------------------------------------------

_RUN13: Final = r"[0-9](?:[ -]?[0-9]){12}"
_ANY_STRING: Final = r'"(?:[^"\\]|\\.)*"'
_DIGIT_ESCAPE: Final = r"\\u00(?:3[0-9]|20|2[dD])"

_IN_STRING_OR_ESCAPE: Final = (
    # complete tokens outside strings and complete strings, then an open string
    # holding 13 digits; or a \u escape that decodes to a digit, space or dash
    rf"(?s)\A(?:[^\"]|{_ANY_STRING})*\"(?:[^\"\\]|\\.)*{_RUN13}|{_DIGIT_ESCAPE}"
)
"""Matches every JSON message in which decoding can yield a 13-digit run in a string."""

_ANYWHERE: Final = rf"{_RUN13}|{_DIGIT_ESCAPE}"
"""Matches every message, JSON or not, that masking can change (a superset)."""


def _json_pattern(levels: int) -> str:
    """RE2 for JSON texts nested at most `levels` deep that msgspec surely decodes.

    A strict subset of what `msgspec.json.decode` accepts: no control characters or
    lone surrogates in strings, integer parts of at most 19 digits, exponents of at
    most two digits (so no number is out of range).
    """
    ws = r"[ \t\n\r]*"
    string = (
        r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}'
        r"|[dD][0-7][0-9a-fA-F]{2}|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))*\""
    )
    number = r"-?(?:0|[1-9][0-9]{0,18})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?"
    value = rf"(?:{string}|{number}|true|false|null)"
    for _ in range(levels):
        member = rf"{string}{ws}:{ws}{value}{ws}"
        element = rf"{value}{ws}"
        value = (
            rf"(?:{string}|{number}|true|false|null"
            rf"|\{{{ws}(?:{member}(?:,{ws}{member})*)?\}}"
            rf"|\[{ws}(?:{element}(?:,{ws}{element})*)?\])"
        )
    return rf"\A{ws}{value}{ws}\z"


_JSON_LEVELS: Final = 4
_SURELY_JSON: Final = _json_pattern(_JSON_LEVELS)
"""Matches only messages that `mask_message` handles as JSON."""


def candidates(messages: list[bytes]) -> npt.NDArray[np.bool_]:
    """True for every message that `mask_message` might change; False means surely not.

    A message can only change if a 13-digit run or an escaped digit/space/dash
    appears somewhere (`_ANYWHERE`). If it is JSON that msgspec decodes, only runs
    inside strings and escapes matter (`_IN_STRING_OR_ESCAPE`); whether it is such
    JSON is checked by `_SURELY_JSON`, and when unsure the message is a candidate.
    Messages that are not UTF-8 are always candidates.
    """
    result = np.zeros(len(messages), dtype=np.bool_)
    if not messages:
        return result
    array = pa.array(messages, type=pa.binary())
    try:
        texts = array.cast(pa.string())
        utf8 = None
    except pa.ArrowInvalid:
        utf8 = np.fromiter((_is_utf8(m) for m in messages), dtype=np.bool_, count=len(messages))
        result[~utf8] = True
        texts = array.filter(pa.array(utf8)).cast(pa.string())
    maybe = _matches(texts, _ANYWHERE)
    hits = np.flatnonzero(maybe)
    if len(hits):
        subset = texts.take(pa.array(hits))
        in_string = _matches(subset, _IN_STRING_OR_ESCAPE)
        surely_json = _matches(subset, _SURELY_JSON)
        maybe[hits] = in_string | ~surely_json
    if utf8 is None:
        return maybe
    result[utf8] = maybe
    return result


def _matches(texts: Any, pattern: str) -> npt.NDArray[np.bool_]:
    matched = pc.match_substring_regex(texts, pattern)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _is_utf8(message: bytes) -> bool:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def mask_batch(messages: list[bytes]) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """Mask a batch: messages (the same objects where nothing was masked) and PANs per message."""
    masked = list(messages)
    counts = np.zeros(len(messages), dtype=np.int64)
    for i in np.flatnonzero(candidates(messages)).tolist():
        masked[i], counts[i] = mask_message(messages[i])
    return masked, counts
