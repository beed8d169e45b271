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

# Maximal digit runs with at least 13 digits. Scanning left to right, a match can
# only start at the first digit of a run (a shorter run has no 13-digit suffix) and
# the greedy tail ends where the run ends, so the matches are exactly the maximal
# runs of >= 13 digits. `_ROUGH` is a cheaper superset used to skip the common case.
_PAN_RUN: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")
_PAN_RUN_BYTES: Final = re.compile(rb"[0-9](?:[ -]?[0-9]){12,}")
_ROUGH: Final = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
_ROUGH_BYTES: Final = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# One JSON string token or structural character, for the token-level masker.
_JSON_TOKEN: Final = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}\[\],:]', re.DOTALL)
_TOKEN_HINT: Final = re.compile(rb"[0-9]|\\u")


def luhn_valid(digits: str) -> bool:
    """True if `digits` (ASCII digits only, at least one) passes the Luhn mod-10 check."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def _masked_run(run: str) -> str | None:
    """The masked form of one maximal run, or None if it is not a PAN."""
    digits = run.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return None
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_text(text: str) -> tuple[str, int]:
    """Mask every PAN in `text`; return the masked text (`text` itself if none) and the count."""
    if len(text) < 13 or not _ROUGH.search(text):
        return text, 0
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        masked = _masked_run(match.group())
        if masked is None:
            return match.group()
        count += 1
        return masked

    masked_text = _PAN_RUN.sub(replace, text)
    return (masked_text, count) if count else (text, 0)


def mask_bytes(raw: bytes) -> tuple[bytes, int]:
    """Mask every PAN in raw bytes (any ASCII-compatible encoding); `raw` itself if none."""
    if len(raw) < 13 or not _ROUGH_BYTES.search(raw):
        return raw, 0
    count = 0

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal count
        masked = _masked_run(match.group().decode("ascii"))
        if masked is None:
            return match.group()
        count += 1
        return masked.encode("ascii")

    masked_raw = _PAN_RUN_BYTES.sub(replace, raw)
    return (masked_raw, count) if count else (raw, 0)


def mask_value(value: Any, *, exempt_keys: frozenset[str] = frozenset()) -> tuple[Any, int]:
    """Mask PANs in every string and object key of a decoded JSON value.

    Values of the keys in `exempt_keys` are kept as they are; the exemption applies
    to this (top) level only. Returns `value` itself when nothing was masked. Should
    two keys of one object become equal by masking, the later member wins, as with
    duplicate keys in JSON.
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


def _count_keys(value: Any) -> int:
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def _maybe_duplicate_keys(raw: bytes, value: Any) -> bool:
    """False only if the JSON text `raw`, which decoded to `value`, has no duplicate keys.

    Outside strings, valid JSON has one colon per object member; a duplicate key
    makes the decoded value hold fewer keys than that.
    """
    if b'\\"' in raw:
        return True  # quotes inside strings: splitting at quotes would not find the strings
    outside = b"".join(raw.split(b'"')[::2])
    return outside.count(b":") != _count_keys(value)


def _mask_json_tokens(raw: bytes, exempt_keys: frozenset[str]) -> tuple[bytes, int]:
    """Mask every JSON string token of `raw` in place, leaving all other bytes as they are.

    The fallback for what decoding and re-encoding cannot do: a member shadowed by a
    duplicate key (the decoder keeps only the last one, but the raw bytes keep both)
    and nesting too deep for recursion. Values of exempt keys of the top-level object
    are left alone (every occurrence). Returns `raw` itself if no PAN was found.
    """
    depth = 0
    top_object = expect_key = in_exempt = False
    key = ""
    pieces: list[bytes] = []
    position = count = 0
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        first = token[0]
        if first == 0x22:  # '"'
            is_key = top_object and depth == 1 and expect_key
            if in_exempt and not is_key:
                continue
            if not is_key and not _TOKEN_HINT.search(token):
                continue
            try:
                text = msgspec.json.decode(token)
            except ValueError:
                continue
            if not isinstance(text, str):
                continue
            if is_key:
                key = text
                expect_key = False
            masked, n = mask_text(text)
            if n:
                pieces += (raw[position : match.start()], msgspec.json.encode(masked))
                position = match.end()
                count += n
        elif first in b"{[":
            if depth == 0 and first == 0x7B:  # '{'
                top_object = expect_key = True
            depth += 1
        elif first in b"}]":
            depth -= 1
        elif top_object and depth == 1:
            if first == 0x2C:  # ','
                expect_key = True
                in_exempt = False
            else:  # ':'
                in_exempt = key in exempt_keys
    if not count:
        return raw, 0
    pieces.append(raw[position:])
    return b"".join(pieces), count


def mask_message(raw: bytes) -> tuple[bytes, int]:
    """Mask one raw message; return it (the same object if nothing was masked) and the count.

    JSON (UTF-8) is decoded, masked with the top-level identifiers exempt (when the
    top level is an object) and re-encoded, key order kept. Anything else is masked
    as raw bytes, without exemptions.

    Two corners are masked in the raw bytes instead: a PAN in a member shadowed by a
    duplicate key (invisible once decoded, yet still in the bytes), and JSON nested
    too deep for msgspec (string tokens are masked with escapes decoded, then any
    digit run left anywhere, as for a message that does not parse).
    """
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        # Too deep to decode, valid or not: mask the string tokens (escapes decoded),
        # then whatever runs remain anywhere, as for any message that does not parse.
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
        if not _maybe_duplicate_keys(raw, value):
            return raw, 0
    except RecursionError:
        pass
    return _mask_json_tokens(raw, exempt)


# --- the vectorized prefilter ------------------------------------------------------
#
# Patterns are RE2 (pyarrow.compute) and run on the raw bytes (pyarrow matches binary
# arrays byte by byte), so a message that is not UTF-8 needs no special path.

_RUN13: Final = r"[0-9](?:[ -]?[0-9]){12}"
_DIGIT_ESCAPE: Final = r"\\u00(?:3[0-9]|20|2[dD])"  # decodes to a digit, space or dash

_MAYBE: Final = rf"{_RUN13}|{_DIGIT_ESCAPE}"
"""Stage 1, on every message: anything masking could change has 13 digits or an escape."""

_WS: Final = r"[ \t\n\r]*"
_STR: Final = r'"(?:[^"\\]|\\.)*"'  # a complete string token
_OPEN: Final = rf'"(?:[^"\\]|\\.)*{_RUN13}'  # a string token holding 13 digits (a hit)
_OUT: Final = r'[^"\[\]{}]'  # outside strings, not a bracket
_NESTING: Final = 8  # deeper containers count as hits


def _string_except(words: frozenset[str]) -> str:
    """RE2 for a JSON string token whose raw content is none of `words` (a trie complement)."""
    char = r'(?:[^"\\]|\\.)'

    def rest(prefix: str) -> str:  # the content after `prefix`, a prefix of some word
        following = sorted({w[len(prefix)] for w in words if w.startswith(prefix) and w != prefix})
        others = "".join(re.escape(c) for c in following)
        alternatives = [rf'(?:[^"\\{others}]|\\.){char}*']  # leaves every word here
        alternatives += [re.escape(c) + rest(prefix + c) for c in following]
        if prefix not in words:
            alternatives.append("")  # ends as a proper prefix
        return "(?:" + "|".join(alternatives) + ")"

    return f'"{rest("")}"'


def _hit_pattern(nesting: int) -> str:
    """RE2 that matches valid JSON if a string holds 13 digits, except exempt top-level values.

    The text is tokenized from the start: every quote opens or closes a complete
    string, brackets are counted up to `nesting` levels (deeper counts as a hit). In
    the top-level object, members are walked one by one so that the value of an
    exempt key is known as such.
    """
    skip: dict[int, str] = {}  # a complete container whose contents are at depth k
    for k in range(nesting, 1, -1):
        inner = rf"{_OUT}|{_STR}" + (f"|{skip[k + 1]}" if k < nesting else "")
        skip[k] = rf"[\[{{](?:{inner})*[\]}}]"
    hit: dict[int, str] = {nesting + 1: ""}  # at depth k, a hit lies ahead
    for k in range(nesting, 0, -1):
        inner = rf"{_OUT}|{_STR}" + (f"|{skip[k + 1]}" if k < nesting else "")
        hit[k] = rf"(?:{inner})*(?:{_OPEN}|[\[{{]{hit[k + 1]})"
    value = rf"(?:{_STR}|[^\"\[\]{{}},:]*|{skip[2]})"
    member = rf"{_STR}{_WS}:{_WS}{value}{_WS}"
    not_exempt = _string_except(EXEMPT_KEYS)
    in_object = (
        rf"{_WS}(?:{member},{_WS})*"
        rf"(?:{_OPEN}|{not_exempt}{_WS}:{_WS}{_OPEN}|{_STR}{_WS}:{_WS}[\[{{]{hit[2]})"
    )
    return rf"\A{_WS}(?:{_OPEN}|\[{hit[1]}|\{{{in_object})"


_BIG_NUMBER: Final = rf"\A(?:[^\"]|{_STR})*(?:[0-9]{{20}}|[0-9][eE][+-]?[0-9]{{3}})"
"""Outside strings, an integer part or exponent long enough to need a real parse."""

_CHANGES_IF_JSON: Final = f"(?s){_hit_pattern(_NESTING)}|{_DIGIT_ESCAPE}|{_BIG_NUMBER}"
"""Stage 2, on stage-1 hits: if the message is JSON, masking can change it only if this
matches (or `_BIG_NUMBER` says the cheap JSON check below cannot be trusted)."""


class _AnyObject(msgspec.Struct):
    """Decoding target that skips every member: checks JSON syntax without building objects."""


_SKIPPING_DECODER: Final = msgspec.json.Decoder(_AnyObject)


def _surely_json(message: bytes) -> bool:
    """True only if `msgspec.json.decode(message)` surely succeeds, given stage 2 did not match.

    Skipping checks the syntax but neither UTF-8 (checked here) nor number ranges
    (ruled out by `_BIG_NUMBER` in stage 2). Valid JSON nested deeper than
    `_NESTING` matches stage 2, so the real decode is far from the recursion limit.
    A top level that is not an object says False.
    """
    try:
        _SKIPPING_DECODER.decode(message)
        if not message.isascii():
            message.decode("utf-8")
    except (ValueError, RecursionError):  # msgspec.DecodeError, UnicodeDecodeError, ...
        return False
    return True


def candidates(messages: list[bytes]) -> npt.NDArray[np.bool_]:
    """True for every message that `mask_message` might change; False means surely not.

    Stage 1 (all messages): no 13-digit run and no escaped digit anywhere, no change.
    Stage 2 (the rest): JSON can only change if a string other than a top-level
    identifier holds 13 digits or an escaped digit. Whatever is not surely JSON
    (one decode each, for the few that get here) is a candidate.
    """
    result = np.zeros(len(messages), dtype=np.bool_)
    if not messages:
        return result
    array = pa.array(messages, type=pa.binary())
    hits = np.flatnonzero(_matches(array, _MAYBE))
    if not hits.size:
        return result
    changes_if_json = _matches(array.take(pa.array(hits)), _CHANGES_IF_JSON)
    result[hits[changes_if_json]] = True
    for i in hits[~changes_if_json].tolist():
        result[i] = not _surely_json(messages[i])
    return result


def _matches(array: Any, pattern: str) -> npt.NDArray[np.bool_]:
    matched = pc.match_substring_regex(array, pattern)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=np.bool_)


def mask_batch(messages: list[bytes]) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """Mask a batch: the messages (the same objects where nothing was masked), PANs per message."""
    masked = list(messages)
    counts = np.zeros(len(messages), dtype=np.int64)
    for i in np.flatnonzero(candidates(messages)).tolist():
        masked[i], counts[i] = mask_message(messages[i])
    return masked, counts
