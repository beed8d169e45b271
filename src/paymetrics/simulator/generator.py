"""A deterministic, vectorized stream of payment events: the input every other stage is tested on.

How the stream is built:

* Internally the output is a sequence of fixed-size *slot blocks*. For every emitted
  message one draw decides what it is: a normal event, a PAN leak (a normal event with a
  card number in it), a duplicate, a late event or an invalid message. Each rate is
  therefore exactly the expected fraction of emitted lines.
* Normal events come from a time-ordered merge of authorizations (non-homogeneous
  Poisson arrivals shaped by time of day) and the captures, refunds and chargebacks
  they schedule. Events are final once no later authorization can precede them.
* Every random draw comes from a generator keyed by (seed, stream, internal block
  index) and never by output chunk, so `chunk_events` cannot change a byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Final, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from paymetrics.events import Reason
from paymetrics.simulator.catalog import (
    COMBO,
    COUNTRIES,
    COUNTRY_FRAGMENTS,
    DECLINE_CODES,
    DISPUTE_REASONS,
    HOURLY_SHAPE,
    LATENCY_MEDIAN_MS,
    LATENCY_SIGMA,
    METHOD_NETWORKS,
    MN_WALLET,
    N_STATUS_CODES,
    NETWORK_WEIGHTS,
    RISK_FRAGMENTS,
    Merchants,
    build_merchants,
    luhn_check_digit,
)
from paymetrics.simulator.scenarios import Scenario, ScenarioContext, resolve_scenario

__all__ = [
    "LABEL_DUPLICATE",
    "LABEL_LATE",
    "LABEL_PAN_LEAK",
    "LABEL_VALID",
    "SimulatorConfig",
    "generate",
    "generate_labeled",
    "scenario_info",
    "write_jsonl",
]

_T = TypeVar("_T")
Columns = dict[str, npt.NDArray[Any]]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Objs = npt.NDArray[np.object_]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Internal block sizes. They fix which draws belong to which block: changing them changes
# the output for a given seed (chunk_events never does).
_SLOT_BLOCK: Final = 16_384
_AUTH_BLOCK: Final = 16_384
_RING: Final = 512
"""Recent plain valid lines a duplicate may copy."""

# SeedSequence spawn keys: one independent stream per purpose.
_K_CATALOG: Final = 0
_K_SCENARIO: Final = 1
_K_AUTHS: Final = 2
_K_SLOTS: Final = 3
_K_SALT: Final = 4

# Transaction life cycle.
P_APPROVED: Final = 0.90
P_CAPTURE: Final = 0.93
P_PARTIAL_CAPTURE: Final = 0.05
P_REFUND: Final = 0.05
P_CHARGEBACK: Final = 0.004
_MESSAGES_PER_AUTH: Final = 1.0 + P_APPROVED * P_CAPTURE * (
    1.0 + P_REFUND + (1.0 - P_REFUND) * P_CHARGEBACK
)
"""Expected events per authorization, to turn `rate_per_second` into an auth arrival rate."""

_SECOND: Final = 1_000
_MINUTE: Final = 60 * _SECOND
_HOUR: Final = 60 * _MINUTE
_DAY: Final = 24 * _HOUR
_LATE_MIN_MS: Final = _MINUTE
_LATE_MAX_MS: Final = 6 * _HOUR - _SECOND  # room for flooring to whole seconds

_COLUMNS: Final[dict[str, type[np.generic]]] = {
    "t": np.int64,  # occurred_at, Unix ms, already truncated to the merchant's precision
    "merchant": np.int64,  # popularity rank
    "etype": np.int8,  # index into EVENT_TYPES
    "status": np.int8,  # index into STATUSES: approved, declined, error
    "decline": np.int8,  # index into DECLINE_CODES, -1 none
    "mn": np.int8,  # method/network code (catalog.METHOD_NETWORKS)
    "channel": np.int8,  # index into CHANNELS
    "country": np.int64,  # index into COUNTRIES, -1 none
    "amount": np.int64,
    "latency": np.float64,  # NaN for non-authorizations
    "txn_a": np.uint64,
    "txn_b": np.uint64,
    "cust": np.int64,  # customer number, -1 none
    "meta": np.int8,  # metadata shape, -1 none
    "meta_arg": np.int64,
    "risk": np.int64,  # risk_score in thousandths, -1 none
    "eid_a": np.uint64,
    "eid_b": np.uint64,
}

CUSTOMERS: Final = 5_000_000
"""Customer numbers of plain traffic are 0 ..< CUSTOMERS; scenarios use numbers above."""

_NORMAL: Final = 0
_PAN: Final = 1
_DUP: Final = 2
_LATE: Final = 3
_INVALID: Final = 10  # + index into _REASONS

LABEL_VALID: Final = "valid"
LABEL_PAN_LEAK: Final = "pan_leak"
LABEL_DUPLICATE: Final = "duplicate"
LABEL_LATE: Final = "late"
_REASONS: Final = tuple(Reason)
_LABELS: Final = np.array(
    [LABEL_VALID, LABEL_PAN_LEAK, LABEL_DUPLICATE, LABEL_LATE, *([""] * 6)]
    + [f"invalid:{r.value}" for r in _REASONS],
    dtype=object,
)


_DEFECT_RATES: Final = ("rate_invalid", "rate_duplicate", "rate_late", "rate_pan_leak")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines the stream: the same config gives byte-identical output."""

    events: int = 1_000_000
    seed: int = 0
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    rate_per_second: float = 1_000_000 / 86_400
    """Mean emitted messages per simulated second (the time-of-day shape averages to 1)."""
    rate_invalid: float = 0.0
    rate_duplicate: float = 0.0
    rate_late: float = 0.0
    rate_pan_leak: float = 0.0
    scenario: str = "baseline"
    merchants: int = 500
    chunk_events: int = 50_000

    def __post_init__(self) -> None:
        for name in ("events", "seed", "merchants", "chunk_events"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.events < 0:
            raise ValueError(f"events must be >= 0, got {self.events}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.merchants < 1:
            raise ValueError(f"merchants must be >= 1, got {self.merchants}")
        if self.chunk_events < 1:
            raise ValueError(f"chunk_events must be >= 1, got {self.chunk_events}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(
                f"start must be a timezone-aware datetime (e.g. tzinfo=UTC), got {self.start!r}"
            )
        if not (math.isfinite(self.rate_per_second) and self.rate_per_second > 0):
            raise ValueError(f"rate_per_second must be > 0, got {self.rate_per_second!r}")
        total = 0.0
        for name in _DEFECT_RATES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
            total += value
        if total > 1.0 + 1e-9:
            raise ValueError(
                "rate_invalid + rate_duplicate + rate_late + rate_pan_leak must be <= 1 "
                f"(each is a share of emitted messages), got {total:g}"
            )
        resolve_scenario(self.scenario)


def generate(config: SimulatorConfig) -> Iterator[list[bytes]]:
    """Yield chunks of JSON Lines messages (bytes, no trailing newline).

    Exactly `config.events` messages in total, invalid, duplicate and late ones included;
    every chunk but the last has `config.chunk_events` messages.
    """
    return _rechunk((lines for lines, _ in _Engine(config).blocks()), config.chunk_events)


def generate_labeled(config: SimulatorConfig) -> Iterator[list[tuple[bytes, str]]]:
    """Like `generate`, with each message's ground truth for tests and demos.

    Labels: "valid", "pan_leak", "duplicate", "late", or "invalid:<Reason value>".
    """
    blocks = _Engine(config).blocks()
    labeled = (list(zip(lines, _LABELS[codes].tolist(), strict=True)) for lines, codes in blocks)
    return _rechunk(labeled, config.chunk_events)


def write_jsonl(config: SimulatorConfig, out: BinaryIO) -> int:
    """Write the stream as JSON Lines (one message per line); return the message count."""
    count = 0
    for chunk in generate(config):
        out.write(b"\n".join(chunk))
        out.write(b"\n")
        count += len(chunk)
    return count


def scenario_info(config: SimulatorConfig) -> dict[str, Any]:
    """What `config.scenario` injects, where and when, without generating the stream."""
    return _Engine(config).scenario.info()


# --------------------------------------------------------------------------- internals


def _rechunk(parts: Iterable[list[_T]], size: int) -> Iterator[list[_T]]:
    """Re-cut internal blocks into `size`-long chunks (the last may be shorter)."""
    buf: list[_T] = []
    for part in parts:
        buf.extend(part)
        if len(buf) >= size:
            pos = 0
            while len(buf) - pos >= size:
                yield buf[pos : pos + size]
                pos += size
            buf = buf[pos:]
    if buf:
        yield buf


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _unix_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _empty() -> Columns:
    return {k: np.empty(0, dtype) for k, dtype in _COLUMNS.items()}


def _concat(*parts: Columns) -> Columns:
    return {k: np.concatenate([p[k] for p in parts]) for k in _COLUMNS}


def _take(ev: Columns, idx: npt.NDArray[Any]) -> Columns:
    return {k: v[idx] for k, v in ev.items()}


def _cdf(weights: tuple[float, ...]) -> F64:
    c = np.cumsum(np.asarray(weights, np.float64))
    c /= c[-1]
    return c


_NETWORK_CDF: Final = _cdf(NETWORK_WEIGHTS)
_DECLINE_CDF: Final = _cdf(tuple(w for _, w in DECLINE_CODES))
_N_MN: Final = len(METHOD_NETWORKS)
_HEX: Final = np.frombuffer(b"0123456789abcdef", np.uint8)
_B32: Final = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", np.uint8)
_DISPUTE_BYTES: Final = tuple(r.encode() for r in DISPUTE_REASONS)
_CUST_PREFIX: Final = np.frombuffer(b',"customer_id":"cus_', np.uint8)


class _Clock:
    """Maps "weighted seconds" (the integral of the time-of-day shape) to Unix ms.

    Arrivals are unit-rate in weighted time, so inverting this map gives a Poisson
    process whose rate follows HOURLY_SHAPE.
    """

    def __init__(self, start_ms: int) -> None:
        self._w = HOURLY_SHAPE / HOURLY_SHAPE.mean()
        self._cum = np.concatenate([[0.0], np.cumsum(self._w) * 3600.0])
        self.day0_ms = start_ms - start_ms % _DAY
        seconds = (start_ms - self.day0_ms) / 1000.0
        hour = min(int(seconds // 3600), 23)
        self.y0 = float(self._cum[hour] + self._w[hour] * (seconds - hour * 3600))

    def to_ms(self, y: F64) -> I64:
        day = np.floor(y / 86_400.0)
        rem = y - day * 86_400.0
        hour = np.clip(np.searchsorted(self._cum, rem, side="right") - 1, 0, 23)
        seconds = day * 86_400.0 + hour * 3600.0 + (rem - self._cum[hour]) / self._w[hour]
        out: I64 = self.day0_ms + np.floor(seconds * 1000.0).astype(np.int64)
        return out


def _hex(words: U64) -> npt.NDArray[np.uint8]:
    """(n, k) uint64 → (n, 16k) lowercase ASCII hex, big-endian."""
    raw = np.ascontiguousarray(words.astype(">u8")).view(np.uint8).reshape(len(words), -1)
    out = np.empty((raw.shape[0], raw.shape[1] * 2), np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    return out


def _ascii_rows(rows: npt.NDArray[np.uint8]) -> list[bytes]:
    """Each row of an (n, w) byte matrix as bytes (trailing NULs dropped), without a Python loop."""
    width = rows.shape[1]
    out: list[bytes] = np.ascontiguousarray(rows).view(f"S{width}").ravel().tolist()
    return out


_PREFIX_PARTS: Final = (b'{"event_id":"', b'","transaction_id":"txn_', b'","occurred_at":"')
_PREFIX_WIDTH: Final = sum(map(len, _PREFIX_PARTS)) + 36 + 24 + 19


def _put(out: npt.NDArray[np.uint8], col: int, text: bytes) -> int:
    out[:, col : col + len(text)] = np.frombuffer(text, np.uint8)
    return col + len(text)


_PAIRS: Final = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], np.uint8)


def _digits(out: npt.NDArray[np.uint8], col: int, value: I64, width: int) -> None:
    """Write `value` zero-padded to `width` ASCII digits, two digits per table lookup."""
    if width == 2:  # month, day, hour, minute, second: already < 100
        out[:, col : col + 2] = _PAIRS[value]
        return
    end = col + width
    while end - col >= 2:
        out[:, end - 2 : end] = _PAIRS[value % 100]
        value = value // 100
        end -= 2
    if end > col:
        out[:, col] = 48 + value % 10


def _prefixes(
    t_ms: I64,
    local_ms: I64,
    eid_a: U64,
    eid_b: U64,
    txn_a: U64,
    txn_b: U64,
    tails: npt.NDArray[np.uint8],
) -> list[bytes]:
    """`{"event_id":"<uuid7>","transaction_id":"txn_<hex>","occurred_at":"YYYY-MM-DDTHH:MM:SS`
    followed by each row of `tails` (NUL-padded: `.123+05:30",` or `Z",`).

    Built as one byte matrix: fixed-width work stays in numpy, and Python sees a single
    bytes object per event (the S dtype drops the padding). The UUIDv7 carries the 48-bit
    UTC ms of `t_ms`, version 7, 74 random bits and the RFC 9562 variant.
    """
    n = len(t_ms)
    hi = (t_ms.astype(np.uint64) << np.uint64(16)) | np.uint64(0x7000) | (eid_a >> np.uint64(52))
    lo = (eid_b >> np.uint64(2)) | np.uint64(0x8000_0000_0000_0000)
    hx = _hex(np.stack([hi, lo, txn_a, txn_b], axis=1))
    out = np.empty((n, _PREFIX_WIDTH + tails.shape[1]), np.uint8)
    out[:, _PREFIX_WIDTH:] = tails
    col = _put(out, 0, _PREFIX_PARTS[0])
    for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)):
        if a:
            out[:, col] = ord("-")
            col += 1
        out[:, col : col + b - a] = hx[:, a:b]
        col += b - a
    col = _put(out, col, _PREFIX_PARTS[1])
    out[:, col : col + 24] = hx[:, 32:56]
    col = _put(out, col + 24, _PREFIX_PARTS[2])

    # Civil date from days since 1970-01-01 (H. Hinnant's algorithm), all in numpy.
    days, ms = np.divmod(local_ms, _DAY)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    secs = ms // 1000
    for value, width, sep in (
        (year, 4, "-"),
        (month, 2, "-"),
        (day, 2, "T"),
        (secs // 3600, 2, ":"),
        (secs // 60 % 60, 2, ":"),
        (secs % 60, 2, ""),
    ):
        _digits(out, col, value, width)
        col += width
        if sep:
            out[:, col] = ord(sep)
            col += 1
    return _ascii_rows(out)


def _latency_fragments(latency: F64) -> list[bytes]:
    """`,"latency_ms":123.45` with at most 3 decimals and no trailing zeros (like repr)."""
    q = np.rint(np.minimum(latency, 1e9) * 1000.0).astype(np.int64)
    whole, frac = np.divmod(q, 1000)
    head = b',"latency_ms":'
    width = len(head) + 10 + 4
    ext = np.zeros((len(q), width + 10), np.uint8)  # zero bytes are dropped by the S dtype
    _put(ext, 0, head)
    # Integer part right-aligned in 10 columns, then shifted left over its leading zeros.
    _digits(ext, len(head), whole, 10)
    ext[:, len(head) + 10] = ord(".")
    _digits(ext, len(head) + 11, frac, 3)
    ext[:, len(head) + 13] *= frac % 10 != 0
    ext[:, len(head) + 12] *= frac % 100 != 0
    ndig = np.ones(len(q), np.int64)
    for k in range(1, 10):
        ndig += whole >= 10**k
    cols = np.arange(width)[None, :]
    src = np.where(cols < len(head), cols, cols + (10 - ndig)[:, None])
    return _ascii_rows(np.take_along_axis(ext, src, axis=1))


def _customer_fragments(cust: I64, salt: int) -> list[bytes]:
    """`,"customer_id":"cus_…"` with 13 base-32 letters (no long digit runs to look like PANs)."""
    h = cust.astype(np.uint64) * np.uint64(0x9E37_79B9_7F4A_7C15) + np.uint64(salt)
    h ^= h >> np.uint64(29)
    out = np.empty((len(cust), len(_CUST_PREFIX) + 14), np.uint8)
    out[:, : len(_CUST_PREFIX)] = _CUST_PREFIX
    for j in range(13):
        idx = ((h >> np.uint64(5 * j)) & np.uint64(31)).astype(np.intp)
        out[:, len(_CUST_PREFIX) + j] = _B32[idx]
    out[:, -1] = ord('"')
    return _ascii_rows(out)


def _objects(values: list[Any]) -> Objs:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


# ------------------------------------------------------------------- PAN leaks

_TEST_PANS: Final = (
    "4111111111111111",
    "4242424242424242",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "3530111333300000",
    "4222222222222",
)
_PAN_SHAPES: Final = (
    ("4", 16),
    ("4", 16),
    ("4", 13),
    ("4", 19),
    ("34", 15),
    ("37", 15),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("6011", 16),
    ("35", 16),
    ("62", 19),
)


def _pan(rng: np.random.Generator) -> str:
    """A Luhn-valid card number: a well-known test PAN or a random one with a real prefix."""
    if rng.random() < 0.4:
        return _TEST_PANS[int(rng.integers(0, len(_TEST_PANS)))]
    prefix, length = _PAN_SHAPES[int(rng.integers(0, len(_PAN_SHAPES)))]
    body = prefix + "".join(map(str, rng.integers(0, 10, size=length - len(prefix) - 1).tolist()))
    return body + luhn_check_digit(body)


def _format_pan(pan: str, style: int) -> str:
    """Plain, or grouped with spaces or dashes the way people type them (amex 4-6-5)."""
    if style == 0:
        return pan
    sep = " " if style == 1 else "-"
    n = len(pan)
    groups = (4, 6, 5) if n == 15 else (4, 4, 5) if n == 13 else (4,) * (n // 4) + (n % 4,)
    parts, pos = [], 0
    for g in groups:
        if g:
            parts.append(pan[pos : pos + g])
            pos += g
    return sep.join(parts)


# --------------------------------------------------------------- invalid messages

_REQUIRED: Final = (
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
_BAD_ENUMS: Final[dict[str, tuple[str, ...]]] = {
    "event_type": ("authorisation", "AUTH", "sale"),
    "status": ("APPROVED", "success", "pending"),
    "payment_method": ("crypto", "Card", "paypal"),
    "channel": ("web", "in_store"),
}
_CORRUPTIONS: Final[tuple[tuple[str, Reason, float], ...]] = (
    ("missing_field", Reason.MISSING_FIELD, 2.0),
    ("null_field", Reason.MISSING_FIELD, 1.0),
    ("amount_string", Reason.INVALID_TYPE, 1.0),
    ("amount_float", Reason.INVALID_TYPE, 1.0),
    ("amount_bool", Reason.INVALID_TYPE, 0.5),
    ("timestamp_number", Reason.INVALID_TYPE, 0.5),
    ("amount_negative", Reason.INVALID_VALUE, 1.0),
    ("bad_enum", Reason.INVALID_VALUE, 1.0),
    ("empty_event_id", Reason.INVALID_VALUE, 0.5),
    ("unknown_currency", Reason.UNKNOWN_CURRENCY, 1.0),
    ("unknown_country", Reason.UNKNOWN_COUNTRY, 1.0),
    ("naive_timestamp", Reason.MISSING_TIMEZONE, 1.0),
    ("impossible_date", Reason.INVALID_TIMESTAMP, 1.0),
    ("garbage_timestamp", Reason.INVALID_TIMESTAMP, 0.5),
    ("schema_version", Reason.UNSUPPORTED_SCHEMA_VERSION, 1.0),
    ("truncated", Reason.INVALID_JSON, 1.0),
    ("array", Reason.NOT_AN_OBJECT, 0.5),
    ("non_utf8", Reason.INVALID_ENCODING, 0.5),
)
_CORRUPTION_W: Final = np.array([w for _, _, w in _CORRUPTIONS])
_CORRUPTION_P: Final = _CORRUPTION_W / _CORRUPTION_W.sum()


def _strip_offset(ts: str) -> str:
    return ts[:-1] if ts.endswith("Z") else ts[:-6]


def _corrupt(line: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """Break one valid message the way a real producer would."""
    if kind == "truncated":
        return line[: int(rng.integers(len(line) // 3, len(line) - 1))]
    if kind == "non_utf8":
        return line.replace(b'"merchant_id":"', b'"merchant_id":"caf\xe9-', 1)
    d: dict[str, Any] = msgspec.json.decode(line)
    if kind == "missing_field":
        del d[_REQUIRED[int(rng.integers(0, len(_REQUIRED)))]]
    elif kind == "null_field":
        d[_REQUIRED[int(rng.integers(0, len(_REQUIRED)))]] = None
    elif kind == "amount_string":
        d["amount_minor"] = str(d["amount_minor"])
    elif kind == "amount_float":
        d["amount_minor"] = d["amount_minor"] + 0.5
    elif kind == "amount_bool":
        d["amount_minor"] = True
    elif kind == "timestamp_number":
        d["occurred_at"] = int(rng.integers(1_700_000_000_000, 1_800_000_000_000))
    elif kind == "amount_negative":
        d["amount_minor"] = -d["amount_minor"]
    elif kind == "bad_enum":
        name = list(_BAD_ENUMS)[int(rng.integers(0, len(_BAD_ENUMS)))]
        d[name] = _BAD_ENUMS[name][int(rng.integers(0, len(_BAD_ENUMS[name])))]
    elif kind == "empty_event_id":
        d["event_id"] = ""
    elif kind == "unknown_currency":
        d["currency"] = "XYZ"
    elif kind == "unknown_country":
        d["country"] = "QQ"
    elif kind == "naive_timestamp":
        d["occurred_at"] = _strip_offset(d["occurred_at"])
    elif kind == "impossible_date":
        ts: str = d["occurred_at"]
        d["occurred_at"] = ts[:4] + "-02-30" + ts[10:]
    elif kind == "garbage_timestamp":
        ts = d["occurred_at"]
        d["occurred_at"] = (f"{ts[8:10]}/{ts[5:7]}/{ts[:4]} {ts[11:16]}", "yesterday", "")[
            int(rng.integers(0, 3))
        ]
    elif kind == "schema_version":
        d["schema_version"] = "2"
    elif kind == "array":
        return msgspec.json.encode([d])
    else:  # pragma: no cover - _CORRUPTIONS and this function are edited together
        raise AssertionError(kind)
    return msgspec.json.encode(d)


# ---------------------------------------------------------------------- the engine


class _Engine:
    """Holds the stream state between blocks: the ready queue, pending follow-ups, dup ring."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.cfg = config
        self.start_ms = _unix_ms(config.start.astimezone(UTC))
        self.merchants: Merchants = build_merchants(_rng(config.seed, _K_CATALOG), config.merchants)
        self.clock = _Clock(self.start_ms)
        self.scenario: Scenario = resolve_scenario(config.scenario)(
            ScenarioContext(_rng(config.seed, _K_SCENARIO), self.merchants, self._moment)
        )
        salt_rng = _rng(config.seed, _K_SALT)
        self.cust_salt = int(salt_rng.integers(0, 1 << 62))
        octets = salt_rng.integers([1, 0, 0, 1], [224, 256, 256, 255], (4096, 4)).tolist()
        self.ips: tuple[bytes, ...] = tuple(b"%d.%d.%d.%d" % tuple(o) for o in octets)
        self.c_invalid = config.rate_invalid
        self.c_dup = self.c_invalid + config.rate_duplicate
        self.c_late = self.c_dup + config.rate_late
        self.c_pan = self.c_late + config.rate_pan_leak
        normal_share = max(1.0 - self.c_late, 1e-3)
        self.auth_rate = config.rate_per_second * normal_share / _MESSAGES_PER_AUTH
        self.ready: Columns = _empty()
        self.pending: Columns = _empty()
        self.y_last = self.clock.y0
        self.auth_block = 0
        self.last_t = self.start_ms
        self.ring: Objs = np.empty(0, dtype=object)
        # `.123+05:30",` style tails: index = millisecond (1000 = none) * n_suffix + suffix id.
        suffixes, suffix_id = np.unique(self.merchants.suffix, return_inverse=True)
        self.suffix_id: I64 = suffix_id.astype(np.int64)
        self.n_suffix = len(suffixes)
        sufs = [str(x).encode() for x in suffixes.tolist()]
        tails = [b'.%03d%s",' % (ms, suf) for ms in range(1000) for suf in sufs]
        tails += [b'%s",' % suf for suf in sufs]
        self.tails = np.array(tails, dtype="S12").view(np.uint8).reshape(len(tails), 12)

    def _moment(self, fraction: float) -> int:
        """Expected time by which `fraction` of all messages has been emitted."""
        y = self.clock.y0 + fraction * self.cfg.events / self.cfg.rate_per_second
        return max(int(self.clock.to_ms(np.array([y]))[0]), self.start_ms)

    def blocks(self) -> Iterator[tuple[list[bytes], npt.NDArray[np.int16]]]:
        remaining, j = self.cfg.events, 0
        while remaining > 0:
            n = min(_SLOT_BLOCK, remaining)
            yield self._slot_block(j, n)
            remaining -= n
            j += 1

    # ---------------------------------------------------------------- normal stream

    def _auths(self, rng: np.random.Generator, t_actual: I64) -> Columns:
        """Draw one authorization per arrival time, field by field, as arrays."""
        m = self.merchants
        n = len(t_actual)
        merchant = np.minimum(np.searchsorted(m.cdf, rng.random(n), side="right"), len(m) - 1)
        t = np.where(m.ms_precision[merchant], t_actual, t_actual - t_actual % _SECOND)

        method = (rng.random(n)[:, None] >= m.method_cdf[merchant]).sum(axis=1)
        channel = (rng.random(n)[:, None] >= m.channel_cdf[merchant]).sum(axis=1)
        method[(channel == 1) & (method >= 2)] = 0  # no bank transfers or BNPL at a till
        network = np.minimum(np.searchsorted(_NETWORK_CDF, rng.random(n), side="right"), 5)
        mn = np.where(method == 0, network, MN_WALLET + method - 1)

        u = rng.random(n)
        p_decline = m.p_decline[merchant]
        status = np.where(u < p_decline, 1, np.where(u < p_decline + m.p_error[merchant], 2, 0))
        code = np.searchsorted(_DECLINE_CDF, rng.random(n), side="right")
        decline = np.where(status == 1, np.minimum(code, len(DECLINE_CODES) - 1), -1)

        z = rng.standard_normal(n)
        # z clipped to 3 sigma: a merchant's price list ends somewhere, and plain traffic
        # stays clear of the compliance thresholds (the compliance scenarios cross them).
        amount = np.exp(m.amount_mu[merchant] + m.amount_sigma[merchant] * np.minimum(z, 3.0))
        amount = np.clip(np.rint(amount), 1, 10**12).astype(np.int64)

        latency = LATENCY_MEDIAN_MS[mn] * np.exp(LATENCY_SIGMA[mn] * rng.standard_normal(n))
        tail = rng.random(n)
        latency *= np.where(tail < 0.015, np.exp(rng.uniform(0.7, 3.0, n)), 1.0)
        timeout = (status == 2) & (tail > 0.6)  # errors are often gateway timeouts
        latency = np.where(timeout, rng.uniform(29_500.0, 30_500.0, n), latency)

        country = np.where(
            rng.random(n) < 0.08, rng.integers(0, len(COUNTRIES), n), m.country[merchant]
        )
        country = np.where(m.sends_country[merchant], country, -1)
        has_cust = (channel != 1) | (rng.random(n) < 0.35)
        # Uniform over many customers: plain traffic never looks like a velocity burst.
        cust = np.where(has_cust, (rng.random(n) * CUSTOMERS).astype(np.int64), -1)

        has_meta = rng.random(n) < m.p_metadata[merchant]
        three_ds = (mn < MN_WALLET) & (rng.random(n) < 0.4)
        meta = np.select([channel == 0, channel == 1], [np.where(three_ds, 4, 0), 2], 1)
        meta = np.where(has_meta, meta, -1)
        meta_arg = rng.integers(0, 1 << 20, n)
        risk = np.where(m.sends_risk[merchant], rng.integers(0, 1000, n), -1)

        raw = rng.bit_generator.random_raw(4 * n).reshape(4, n)
        ev: Columns = {
            "t": t.astype(np.int64),
            "merchant": merchant.astype(np.int64),
            "etype": np.zeros(n, np.int8),
            "status": status.astype(np.int8),
            "decline": decline.astype(np.int8),
            "mn": mn.astype(np.int8),
            "channel": channel.astype(np.int8),
            "country": country.astype(np.int64),
            "amount": amount,
            "latency": latency,
            "txn_a": raw[0],
            "txn_b": raw[1],
            "cust": cust,
            "meta": meta.astype(np.int8),
            "meta_arg": meta_arg.astype(np.int64),
            "risk": risk.astype(np.int64),
            "eid_a": raw[2],
            "eid_b": raw[3],
        }
        self.scenario.apply(ev, rng)
        return ev

    def _followups(self, rng: np.random.Generator, a: Columns) -> Columns:
        """Captures, refunds and chargebacks of the approved authorizations in `a`."""
        appr = np.flatnonzero(a["status"] == 0)
        n = len(appr)
        u = rng.random((6, n))
        cap_delay = np.where(
            u[1] < 0.65,
            rng.uniform(1_000, 20_000, n),  # auto-capture
            np.exp(rng.uniform(math.log(_MINUTE), math.log(4 * _HOUR), n)),
        ).astype(np.int64)
        amount = a["amount"][appr]
        partial = np.maximum(1, np.floor(amount * rng.uniform(0.5, 1.0, n))).astype(np.int64)
        cap_amount = np.where(u[2] < P_PARTIAL_CAPTURE, partial, amount)
        ref_delay = np.exp(rng.uniform(math.log(30 * _MINUTE), math.log(44 * _HOUR), n))
        ref_part = np.maximum(1, np.floor(cap_amount * rng.uniform(0.1, 0.9, n))).astype(np.int64)
        ref_amount = np.where(u[5] < 0.7, cap_amount, ref_part)
        cb_delay = rng.uniform(_DAY, 5 * _DAY, n).astype(np.int64)
        meta_arg = rng.integers(0, 1 << 20, n)
        raw = rng.bit_generator.random_raw(2 * n).reshape(2, n)

        captured = u[0] < P_CAPTURE
        refunded = captured & (u[3] < P_REFUND)
        charged = captured & ~refunded & (u[4] < P_CHARGEBACK)
        t_auth = a["t"][appr]
        t_cap = t_auth + cap_delay
        plans = (
            (captured, 1, t_cap, cap_amount),
            (refunded, 2, t_cap + ref_delay.astype(np.int64), ref_amount),
            (charged, 3, t_auth + cb_delay, cap_amount),
        )
        parts = []
        for mask, etype, t, amt in plans:
            ev = _take(a, appr[mask])
            ms_prec = self.merchants.ms_precision[ev["merchant"]]
            ev["t"] = np.where(ms_prec, t[mask], t[mask] - t[mask] % _SECOND)
            ev["etype"] = np.full(len(ev["t"]), etype, np.int8)
            ev["amount"] = amt[mask]
            ev["latency"] = np.full(len(ev["t"]), np.nan)
            ev["risk"] = np.full(len(ev["t"]), -1, np.int64)
            ev["meta"] = np.full(len(ev["t"]), 3 if etype == 3 else -1, np.int8)
            ev["meta_arg"] = meta_arg[mask]
            ev["eid_a"] = raw[0][mask]
            ev["eid_b"] = raw[1][mask]
            parts.append(ev)
        return _concat(*parts)

    def _advance(self) -> None:
        """Draw the next block of authorizations and release everything that is now final."""
        rng = _rng(self.cfg.seed, _K_AUTHS, self.auth_block)
        gaps = rng.exponential(1.0 / self.auth_rate, size=_AUTH_BLOCK)
        if self.auth_block == 0:
            gaps[0] = 0.0
        y = self.y_last + np.cumsum(gaps)
        self.y_last = float(y[-1])
        t_actual = self.clock.to_ms(y)
        if self.auth_block == 0:
            t_actual[0] = self.start_ms  # the stream starts exactly at `start`
        t_actual = np.maximum.accumulate(np.maximum(t_actual, self.start_ms))
        auths = self._auths(rng, t_actual)
        follow = self._followups(rng, auths)
        # Later authorizations arrive at >= t_actual[-1]; truncated to whole seconds they
        # can't land before this cutoff, and their follow-ups come later still.
        last = int(t_actual[-1])
        cutoff = last - last % _SECOND
        pool = _concat(self.pending, auths, follow)
        pool = _take(pool, np.argsort(pool["t"], kind="stable"))
        k = int(np.searchsorted(pool["t"], cutoff, side="left"))
        self.ready = _concat(self.ready, {c: v[:k] for c, v in pool.items()})
        self.pending = {c: v[k:] for c, v in pool.items()}
        self.auth_block += 1

    def _pull(self, k: int) -> Columns:
        while len(self.ready["t"]) < k:
            self._advance()
        out = {c: v[:k] for c, v in self.ready.items()}
        self.ready = {c: v[k:] for c, v in self.ready.items()}
        return out

    # -------------------------------------------------------------------- rendering

    def _render(
        self, ev: Columns, pan_rows: npt.NDArray[np.intp], rng: np.random.Generator
    ) -> list[bytes]:
        """JSON lines for a column batch.

        Fixed-width parts (ids, timestamps, numbers) are built as byte matrices in numpy and
        categorical members come from pre-rendered tables, so Python does one bytes
        formatting per event and never encodes text.
        """
        n = len(ev["t"])
        if n == 0:
            return []
        m = self.merchants
        t, merch, etype = ev["t"], ev["merchant"], ev["etype"]
        local = t + m.offset_ms[merch]
        millis = np.where(m.ms_precision[merch], local % _SECOND, _SECOND)
        tails = self.tails[millis * self.n_suffix + self.suffix_id[merch]]
        heads = _prefixes(t, local, ev["eid_a"], ev["eid_b"], ev["txn_a"], ev["txn_b"], tails)
        mfrag = m.fragment[merch].tolist()
        amounts = ev["amount"].tolist()

        status = ev["status"].astype(np.int64)
        sd = np.where(status == 0, 0, np.where(status == 2, 1, 2 + ev["decline"].astype(np.int64)))
        combo_idx = ((etype.astype(np.int64) * N_STATUS_CODES + sd) * _N_MN + ev["mn"]) * 3
        combos = COMBO[combo_idx + ev["channel"]].tolist()
        countries = COUNTRY_FRAGMENTS[ev["country"]].tolist()
        risks: list[bytes] = RISK_FRAGMENTS[ev["risk"]].tolist()

        lat = np.full(n, b"", dtype=object)
        auth = np.flatnonzero(etype == 0)
        if auth.size:
            lat[auth] = _objects(_latency_fragments(ev["latency"][auth]))
        cust = np.full(n, b"", dtype=object)
        has = np.flatnonzero(ev["cust"] >= 0)
        if has.size:
            cust[has] = _objects(_customer_fragments(ev["cust"][has], self.cust_salt))
        custs: list[bytes] = cust.tolist()
        meta = np.full(n, b"", dtype=object)
        rows = np.flatnonzero(ev["meta"] >= 0)
        if rows.size:
            meta[rows] = _objects(self._metadata(ev, rows))
        metas: list[bytes] = meta.tolist()

        for r in pan_rows.tolist():
            pan = _format_pan(_pan(rng), int(rng.integers(0, 3)))
            where = int(rng.integers(0, 4))
            if where == 0:
                note = f"customer read card {pan} over the phone"
                metas[r] = f',"metadata":{{"note":"{note}"}}'.encode()
            elif where == 1:
                mcc = m.mcc[int(merch[r])]
                metas[r] = f',"metadata":{{"card":"{pan}","mcc":"{mcc}"}}'.encode()
            elif where == 2:
                custs[r] = f',"customer_id":"{pan}"'.encode()
            else:
                risks[r] += f',"card_number":"{pan}"'.encode()

        fmt = b"%s%s%d%s%s%s%s%s%s}"
        return [
            fmt % row
            for row in zip(
                heads,
                mfrag,
                amounts,
                combos,
                countries,
                lat.tolist(),
                custs,
                metas,
                risks,
                strict=True,
            )
        ]

    def _metadata(self, ev: Columns, rows: npt.NDArray[np.intp]) -> list[bytes]:
        """`metadata` objects: client IP and MCC online, terminal at the till, dispute reasons."""
        mcc = self.merchants.mcc_bytes
        ips = self.ips
        out: list[bytes] = []
        for kind, arg, merch in zip(
            ev["meta"][rows].tolist(),
            ev["meta_arg"][rows].tolist(),
            ev["merchant"][rows].tolist(),
            strict=True,
        ):
            if kind == 0:
                out.append(b',"metadata":{"ip":"%s","mcc":"%s"}' % (ips[arg & 4095], mcc[merch]))
            elif kind == 4:
                out.append(
                    b',"metadata":{"ip":"%s","mcc":"%s","three_ds":{"version":"2.2.0","eci":"0%d"}}'
                    % (ips[arg & 4095], mcc[merch], 5 + (arg >> 12) % 3)
                )
            elif kind == 2:
                out.append(
                    b',"metadata":{"terminal_id":"T%04d","mcc":"%s"}' % (arg % 10_000, mcc[merch])
                )
            elif kind == 1:
                out.append(b',"metadata":{"mcc":"%s"}' % mcc[merch])
            else:
                reason = _DISPUTE_BYTES[arg % len(_DISPUTE_BYTES)]
                out.append(b',"metadata":{"dispute_reason":"%s"}' % reason)
        return out

    # ---------------------------------------------------------------- slot blocks

    def _slot_block(self, j: int, n: int) -> tuple[list[bytes], npt.NDArray[np.int16]]:
        """Decide what each of the next `n` messages is, then fill them in."""
        rng = _rng(self.cfg.seed, _K_SLOTS, j)
        u = rng.random(_SLOT_BLOCK)[:n]
        kind = np.full(n, _NORMAL, np.int16)
        kind[u < self.c_pan] = _PAN
        kind[u < self.c_late] = _LATE
        kind[u < self.c_dup] = _DUP
        kind[u < self.c_invalid] = _INVALID
        if j == 0 and self.cfg.rate_duplicate > 0:
            kind[0] = _NORMAL  # a duplicate needs an earlier valid message to copy

        is_norm = (kind == _NORMAL) | (kind == _PAN)
        k = int(is_norm.sum())
        ev = self._pull(k)
        seen = np.cumsum(is_norm)
        if k:
            t_cur = np.where(seen > 0, ev["t"][np.clip(seen - 1, 0, k - 1)], self.last_t)
            self.last_t = int(ev["t"][-1])
        else:
            t_cur = np.full(n, self.last_t, np.int64)

        norm_kind = kind[is_norm]
        lines = _objects(self._render(ev, np.flatnonzero(norm_kind == _PAN), rng))
        out = np.empty(n, dtype=object)
        out[is_norm] = lines

        plain = lines[norm_kind == _NORMAL]
        history = np.concatenate([self.ring, plain])
        dup_pos = np.flatnonzero(kind == _DUP)
        if dup_pos.size:
            before = np.cumsum(kind == _NORMAL)[dup_pos]
            back = np.where(
                rng.random(dup_pos.size) < 0.3,
                rng.integers(1, 4, dup_pos.size),
                np.exp(rng.uniform(0.0, math.log(400.0), dup_pos.size)).astype(np.int64),
            )
            src = np.maximum(len(self.ring) + before - back, 0)
            out[dup_pos] = history[src]
        self.ring = history[-_RING:]

        late_pos = np.flatnonzero(kind == _LATE)
        if late_pos.size:
            lag = np.exp(rng.uniform(math.log(_LATE_MIN_MS), math.log(_LATE_MAX_MS), late_pos.size))
            late = self._auths(rng, t_cur[late_pos] - np.ceil(lag).astype(np.int64))
            out[late_pos] = _objects(self._render(late, np.empty(0, np.intp), rng))

        bad_pos = np.flatnonzero(kind == _INVALID)
        if bad_pos.size:
            bad = self._auths(rng, t_cur[bad_pos])
            valid = self._render(bad, np.empty(0, np.intp), rng)
            picks = rng.choice(len(_CORRUPTIONS), size=bad_pos.size, p=_CORRUPTION_P).tolist()
            broken = []
            for line, pick in zip(valid, picks, strict=True):
                broken.append(_corrupt(line, _CORRUPTIONS[pick][0], rng))
            out[bad_pos] = _objects(broken)
            kind[bad_pos] = _INVALID + np.array(
                [_REASONS.index(_CORRUPTIONS[p][1]) for p in picks], np.int16
            )
        result: list[bytes] = out.tolist()
        return result, kind
