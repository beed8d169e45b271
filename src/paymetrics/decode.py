"""Decode raw messages into `PaymentEvent`s; every failure becomes a reject.

msgspec enforces the contract's types, enums, lengths and ranges in C, one
message at a time (no JSON decoder offers per-row errors on a whole batch).
Its error text names the JSON path; `_classify` turns it into a reason code and
a message that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.events import MAX_EVENT_BYTES, PaymentEvent, Reason

__all__ = ["Decoded", "Rejects", "decode"]


@dataclass(slots=True)
class Rejects:
    """Dead letters found in one batch, keyed by the message's index in the batch."""

    index: list[int] = field(default_factory=list)
    reason: list[Reason | str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)
    event_id: list[str | None] = field(default_factory=list)

    def add(
        self, index: int, reason: Reason | str, message: str, event_id: str | None = None
    ) -> None:
        self.index.append(index)
        self.reason.append(reason)
        self.message.append(message)
        self.event_id.append(event_id)

    def __len__(self) -> int:
        return len(self.index)


@dataclass(slots=True)
class Decoded:
    """The messages that decoded, with their index in the batch."""

    events: list[PaymentEvent]
    index: npt.NDArray[np.int64]


_DECODER = msgspec.json.Decoder(PaymentEvent)
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _classify(error: msgspec.ValidationError) -> tuple[Reason, str]:
    text = str(error)
    missing = _MISSING.match(text)
    if missing:
        name = missing.group("field")
        return Reason.MISSING_FIELD, f"{name}: required field is missing"
    match = _PATH.search(text)
    path = match.group("path") if match else ""
    detail = text[: match.start()] if match else text
    name = path.split(".", 1)[0].split("[", 1)[0]
    if not path:
        return Reason.NOT_AN_OBJECT, f"message: {detail} (an event is a JSON object)"
    if detail.endswith("got `null`"):
        return Reason.MISSING_FIELD, f"{path}: required field is null"
    if name == "occurred_at":
        if "timezone" in detail:
            return Reason.MISSING_TIMEZONE, f"occurred_at: {detail} (add Z or ±hh:mm)"
        if "RFC3339" in detail:
            return Reason.INVALID_TIMESTAMP, f"occurred_at: {detail}"
    if name == "schema_version" and "enum" in detail:
        return Reason.UNSUPPORTED_SCHEMA_VERSION, f"schema_version: {detail}; only '1' is supported"
    if detail.startswith("Expected `") and ", got `" in detail:
        return Reason.INVALID_TYPE, f"{path}: {detail}"
    return Reason.INVALID_VALUE, f"{path}: {detail}"


def _event_id_of(message: bytes) -> str | None:
    """Best-effort event_id of a message that failed, for the dead-letter row."""
    try:
        obj = msgspec.json.decode(message)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        value = obj.get("event_id")
        if isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return None


def _utf8_problem(message: bytes) -> str:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 at byte {error.start}"
    return "not valid UTF-8"  # pragma: no cover - msgspec and Python agree on UTF-8


_UTF8_CHUNK = 1024


def as_text(messages: list[bytes]) -> tuple[pa.StringArray, npt.NDArray[np.bool_]]:
    """The messages as one Arrow string array, and which of them are not valid UTF-8.

    Validation is Arrow's vectorized cast: of the whole batch when every message is
    valid (the common case), else chunk by chunk, so only the chunks holding a bad
    message are checked one message at a time. Invalid ones become empty strings.
    """
    binary = pa.array(messages, pa.binary())
    try:
        return binary.cast(pa.string()), np.zeros(len(messages), dtype=bool)
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(len(messages), dtype=bool)
    for start in range(0, len(messages), _UTF8_CHUNK):
        try:
            binary.slice(start, _UTF8_CHUNK).cast(pa.string())
        except pa.ArrowInvalid:
            chunk = messages[start : start + _UTF8_CHUNK]
            bad[start : start + len(chunk)] = [not _is_utf8(m) for m in chunk]
    cleaned = pc.if_else(pa.array(bad), pa.scalar(b"", pa.binary()), binary)
    return cleaned.cast(pa.string()), bad


def _is_utf8(message: bytes) -> bool:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _schema_version_problem(message: bytes) -> str | None:
    """A message with another schema_version is reported as such, whatever else is wrong."""
    try:
        obj = msgspec.json.decode(message)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("schema_version", "1") not in ("1", None):
        return f"schema_version: {obj['schema_version']!r} is not supported; only '1' is"
    return None


_BYTE = re.compile(r"\(byte (\d+)\)")


def _encoding_problem(message: bytes) -> tuple[Reason, str]:
    """Invalid UTF-8: reported as such unless a JSON syntax error comes before it."""
    try:
        message.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_at = error.start
    else:  # pragma: no cover - only called for invalid UTF-8
        bad_at = len(message)
    try:
        msgspec.json.decode(message)
    except msgspec.DecodeError as error:
        syntax_at = _BYTE.search(str(error))
        if syntax_at and int(syntax_at.group(1)) < bad_at:
            return Reason.INVALID_JSON, f"message: not valid JSON ({error})"
    except (UnicodeDecodeError, RecursionError):
        pass
    return Reason.INVALID_ENCODING, f"message: not valid UTF-8 at byte {bad_at}"


def decode(
    messages: list[bytes],
    raw_sizes: list[int],
    bad_utf8: npt.NDArray[np.bool_],
    rejects: Rejects,
) -> Decoded:
    """Decode each (already masked) message; failures go to `rejects`.

    `raw_sizes` are the sizes as received: the 1 MiB limit applies before masking,
    which may shorten a message. `bad_utf8` comes from `as_text`: msgspec skips
    unknown fields without checking their encoding, so it is checked up front.
    """
    events: list[PaymentEvent] = []
    failed: list[int] = []
    oversize = np.asarray(raw_sizes, dtype=np.int64) > MAX_EVENT_BYTES
    flagged = set(np.flatnonzero(oversize | bad_utf8).tolist())
    decode_one = _DECODER.decode
    append = events.append
    for i, message in enumerate(messages):
        if flagged and i in flagged:
            if oversize[i]:
                reason, text = Reason.TOO_LARGE, f"message: {raw_sizes[i]} bytes, over 1 MiB"
            else:
                reason, text = _encoding_problem(message)
            rejects.add(i, reason, text)
            failed.append(i)
            continue
        try:
            append(decode_one(message))
        except msgspec.ValidationError as error:
            problem = _schema_version_problem(message)
            if problem is not None:
                rejects.add(i, Reason.UNSUPPORTED_SCHEMA_VERSION, problem, _event_id_of(message))
            else:
                reason, text = _classify(error)
                rejects.add(i, reason, text, _event_id_of(message))
            failed.append(i)
        except msgspec.DecodeError as error:
            rejects.add(i, Reason.INVALID_JSON, f"message: not valid JSON ({error})")
            failed.append(i)
        except RecursionError:
            rejects.add(i, Reason.INVALID_JSON, "message: nested too deeply to decode")
            failed.append(i)
    decoded = np.ones(len(messages), dtype=bool)
    decoded[failed] = False
    return Decoded(events, np.flatnonzero(decoded).astype(np.int64))
