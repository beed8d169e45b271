"""Reference data and the seeded merchant population behind the simulated stream.

Kept apart from the generator so the shapes that make the stream look like a real
PSP feed (currencies with their minor units, local UTC offsets, per-network latency,
decline-code mix) can be read and tuned in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from paymetrics.events import CHANNELS

__all__ = [
    "CARD_NETWORKS",
    "COUNTRIES",
    "DECLINE_CODES",
    "HOURLY_SHAPE",
    "METHOD_NETWORKS",
    "REGIONS",
    "Merchants",
    "Region",
    "build_merchants",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objs = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class Region:
    """A merchant home market: where it is, what it charges in, which offsets it reports."""

    country: str
    currency: str
    exponent: int
    """ISO 4217 minor-unit digits: JPY 0, USD 2, KWD 3."""
    per_usd: float
    """Rough FX rate, so a $20 basket becomes ¥3000, not ¥20."""
    offsets: tuple[str, ...]
    weight: float


REGIONS: Final[tuple[Region, ...]] = (
    Region("US", "USD", 2, 1.0, ("-05:00", "-06:00", "-07:00", "-08:00"), 0.28),
    Region("GB", "GBP", 2, 0.79, ("+00:00",), 0.10),
    Region("DE", "EUR", 2, 0.92, ("+01:00",), 0.08),
    Region("FR", "EUR", 2, 0.92, ("+01:00",), 0.06),
    Region("NL", "EUR", 2, 0.92, ("+01:00",), 0.04),
    Region("ES", "EUR", 2, 0.92, ("+01:00",), 0.03),
    Region("IT", "EUR", 2, 0.92, ("+01:00",), 0.03),
    Region("IE", "EUR", 2, 0.92, ("+00:00",), 0.015),
    Region("JP", "JPY", 0, 150.0, ("+09:00",), 0.06),
    Region("KR", "KRW", 0, 1330.0, ("+09:00",), 0.02),
    Region("BR", "BRL", 2, 5.0, ("-03:00",), 0.05),
    Region("MX", "MXN", 2, 17.0, ("-06:00",), 0.03),
    Region("IN", "INR", 2, 83.0, ("+05:30",), 0.05),
    Region("AU", "AUD", 2, 1.5, ("+10:00", "+08:00"), 0.03),
    Region("CA", "CAD", 2, 1.35, ("-05:00", "-08:00"), 0.04),
    Region("SG", "SGD", 2, 1.34, ("+08:00",), 0.02),
    Region("SE", "SEK", 2, 10.5, ("+01:00",), 0.015),
    Region("CH", "CHF", 2, 0.88, ("+01:00",), 0.015),
    Region("AE", "AED", 2, 3.67, ("+04:00",), 0.01),
    Region("NP", "NPR", 2, 133.0, ("+05:45",), 0.005),
    Region("KW", "KWD", 3, 0.31, ("+03:00",), 0.005),
)

_HOME_COUNTRIES: Final = tuple(dict.fromkeys(r.country for r in REGIONS))
COUNTRIES: Final[tuple[str, ...]] = (
    *_HOME_COUNTRIES,
    *("PL", "PT", "BE", "AT", "NO", "DK", "FI", "ZA", "NG", "CN", "HK", "TW"),
    *("AR", "CL", "CO", "PH", "TH", "ID", "MY", "NZ", "IL", "TR"),
)
"""Every country an event may name: home markets first, then cross-border card origins."""

CARD_NETWORKS: Final = ("visa", "mastercard", "amex", "discover", "jcb", "unionpay")
NETWORK_WEIGHTS: Final = (0.52, 0.31, 0.09, 0.03, 0.03, 0.02)

METHOD_NETWORKS: Final[tuple[tuple[str, str | None], ...]] = (
    *(("card", n) for n in CARD_NETWORKS),
    ("wallet", None),
    ("bank_transfer", None),
    ("bnpl", None),
)
"""The `mn` code of an event: 0-5 a card on that network, then the non-card methods."""
MN_WALLET: Final = len(CARD_NETWORKS)
MN_BANK: Final = MN_WALLET + 1
MN_BNPL: Final = MN_WALLET + 2

LATENCY_MEDIAN_MS: Final = np.array([170, 190, 245, 240, 260, 300, 240, 650, 900], np.float64)
"""Authorization round-trip medians by `mn` code: amex and the non-card rails are slower."""
LATENCY_SIGMA: Final = np.array([0.45, 0.45, 0.45, 0.5, 0.5, 0.55, 0.5, 0.6, 0.55], np.float64)

DECLINE_CODES: Final[tuple[tuple[str, float], ...]] = (
    ("insufficient_funds", 0.30),
    ("do_not_honor", 0.22),
    ("suspected_fraud", 0.07),
    ("expired_card", 0.07),
    ("invalid_cvv", 0.06),
    ("limit_exceeded", 0.06),
    ("authentication_required", 0.05),
    ("invalid_card_number", 0.04),
    ("transaction_not_allowed", 0.04),
    ("card_not_supported", 0.04),
    ("lost_card", 0.03),
    ("stolen_card", 0.02),
)
DECLINE_NAMES: Final = tuple(name for name, _ in DECLINE_CODES)

MCCS: Final = ("5411", "5812", "5814", "5999", "5732", "5691", "4121", "7011", "4511", "5942")
DISPUTE_REASONS: Final = (
    "fraudulent",
    "product_not_received",
    "duplicate",
    "subscription_canceled",
)

HOURLY_SHAPE: Final = np.array(
    [
        *(0.45, 0.35, 0.30, 0.28, 0.30, 0.40, 0.60, 0.85, 1.10, 1.25, 1.35, 1.40),
        *(1.45, 1.45, 1.40, 1.35, 1.30, 1.30, 1.35, 1.40, 1.30, 1.10, 0.85, 0.60),
    ],
    np.float64,
)
"""Relative arrival rate per UTC hour (night trough, afternoon and evening peaks)."""

ZIPF_EXPONENT: Final = 1.1
"""Merchant popularity ∝ rank^-1.1: with 500 merchants the top 10 carry about half the volume."""


@dataclass(frozen=True)
class Merchants:
    """The merchant population as parallel arrays indexed by popularity rank (0 = biggest)."""

    ids: tuple[str, ...]
    weights: F64
    cdf: F64
    region: I64
    country: I64
    """Index into COUNTRIES of the home country."""
    sends_country: Bools
    offset_ms: I64
    """Offset added to UTC to render `occurred_at` (0 for merchants that report in Z)."""
    suffix: npt.NDArray[np.str_]
    """`Z` or the merchant's local offset such as `+05:30`."""
    ms_precision: Bools
    """True: `occurred_at` carries milliseconds; False: whole seconds."""
    amount_mu: F64
    amount_sigma: F64
    method_cdf: F64
    """(n, 4) cumulative mix over card, wallet, bank_transfer, bnpl."""
    channel_cdf: F64
    """(n, 3) cumulative mix over CHANNELS."""
    p_decline: F64
    p_error: F64
    mcc: tuple[str, ...]
    mcc_bytes: tuple[bytes, ...]
    p_metadata: F64
    sends_risk: Bools
    fragment: Objs
    """Pre-rendered `"merchant_id":…,"currency":…,"amount_minor":` (the amount follows)."""

    def __len__(self) -> int:
        return len(self.ids)


def _offset_ms(offset: str) -> int:
    sign = -1 if offset[0] == "-" else 1
    return sign * (int(offset[1:3]) * 60 + int(offset[4:6])) * 60_000


def build_merchants(rng: np.random.Generator, n: int) -> Merchants:
    """Draw `n` merchants; all variety is per merchant, as it is per integration in real life."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    weights = ranks**-ZIPF_EXPONENT
    weights /= weights.sum()
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0

    region_w = np.array([r.weight for r in REGIONS])
    region = rng.choice(len(REGIONS), size=n, p=region_w / region_w.sum()).astype(np.int64)
    country = np.array([COUNTRIES.index(REGIONS[r].country) for r in region], np.int64)
    sends_country = rng.random(n) < 0.9

    local = rng.random(n) < 0.25
    offset_pick = rng.integers(0, 1 << 30, size=n)
    offsets = [
        REGIONS[r].offsets[k % len(REGIONS[r].offsets)] if loc else "Z"
        for r, k, loc in zip(region.tolist(), offset_pick.tolist(), local.tolist(), strict=True)
    ]
    offset_ms = np.array([0 if o == "Z" else _offset_ms(o) for o in offsets], np.int64)
    suffix = np.array(offsets, dtype="U6")
    ms_precision = rng.random(n) < 0.6

    median_usd = np.exp(rng.uniform(np.log(6.0), np.log(250.0), size=n))
    scale = np.array([REGIONS[r].per_usd * 10 ** REGIONS[r].exponent for r in region])
    amount_mu = np.log(median_usd * scale)
    amount_sigma = rng.uniform(0.5, 1.1, size=n)

    method_mix = rng.dirichlet([16.0, 2.5, 1.0, 1.0], size=n)
    method_cdf = np.cumsum(method_mix, axis=1)
    method_cdf[:, -1] = 1.0

    kind = rng.choice(3, size=n, p=[0.55, 0.25, 0.20])  # online, in-store, omnichannel
    channel_mix = np.array([[0.95, 0.0, 0.05], [0.08, 0.92, 0.0], [0.55, 0.40, 0.05]])[kind]
    channel_cdf = np.cumsum(channel_mix, axis=1)
    channel_cdf[:, -1] = 1.0

    p_decline = np.clip(0.08 * rng.lognormal(0.0, 0.25, size=n), 0.02, 0.2)
    p_error = np.clip(0.02 * rng.lognormal(0.0, 0.25, size=n), 0.005, 0.06)
    mcc = tuple(MCCS[i] for i in rng.integers(0, len(MCCS), size=n).tolist())
    p_metadata = np.where(rng.random(n) < 0.5, rng.uniform(0.4, 0.9, size=n), 0.0)
    sends_risk = rng.random(n) < 0.15
    sends_schema = rng.random(n) < 0.4

    raw_ids = rng.integers(0, 1 << 48, size=n)
    ids = tuple(f"mch_{int(v):012x}" for v in raw_ids.tolist())
    fragment = np.empty(n, dtype=object)
    for i, mid in enumerate(ids):
        schema = ',"schema_version":"1"' if sends_schema[i] else ""
        cur = REGIONS[region[i]].currency
        fragment[i] = f'"merchant_id":"{mid}","currency":"{cur}"{schema},"amount_minor":'.encode()

    return Merchants(
        ids=ids,
        weights=weights,
        cdf=cdf,
        region=region,
        country=country,
        sends_country=sends_country,
        offset_ms=offset_ms,
        suffix=suffix,
        ms_precision=ms_precision,
        amount_mu=amount_mu,
        amount_sigma=amount_sigma,
        method_cdf=method_cdf,
        channel_cdf=channel_cdf,
        p_decline=p_decline,
        p_error=p_error,
        mcc=mcc,
        mcc_bytes=tuple(c.encode() for c in mcc),
        p_metadata=p_metadata,
        sends_risk=sends_risk,
        fragment=fragment,
    )


def _bytes_table(items: list[str]) -> Objs:
    """An object array of encoded members: fancy indexing picks one per event in C."""
    out = np.empty(len(items), dtype=object)
    out[:] = [s.encode() for s in items]
    return out


def _combo_table() -> Objs:
    """Every `event_type`/`status`/`decline_code`/`payment_method`/`card_network`/`channel` member
    string, pre-rendered, so each event picks its tail with one integer index."""
    from paymetrics.events import EVENT_TYPES

    statuses: list[str] = [',"status":"approved"', ',"status":"error"']
    statuses += [f',"status":"declined","decline_code":"{c}"' for c in DECLINE_NAMES]
    methods = [
        f',"payment_method":"{m}"' + (f',"card_network":"{n}"' if n else "")
        for m, n in METHOD_NETWORKS
    ]
    out: list[str] = []
    for et in EVENT_TYPES:
        for st in statuses:
            for me in methods:
                for ch in CHANNELS:
                    out.append(f',"event_type":"{et}"{st}{me},"channel":"{ch}"')
    return _bytes_table(out)


COMBO: Final = _combo_table()
N_STATUS_CODES: Final = 2 + len(DECLINE_NAMES)
"""Status code used by COMBO: 0 approved, 1 error, 2 + i declined with DECLINE_NAMES[i]."""

COUNTRY_FRAGMENTS: Final = _bytes_table([*(f',"country":"{c}"' for c in COUNTRIES), ""])
"""Index -1 (the last entry) renders no country."""

RISK_FRAGMENTS: Final = _bytes_table([*(f',"risk_score":{i / 1000!r}' for i in range(1000)), ""])


def luhn_check_digit(body: str) -> str:
    """The digit that makes `body + digit` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(digits: str) -> bool:
    """True when `digits` passes the Luhn check (what every card number does)."""
    return len(digits) >= 2 and luhn_check_digit(digits[:-1]) == digits[-1]
