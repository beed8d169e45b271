"""Injected incidents: the effects the monitoring side is supposed to notice.

A scenario edits freshly drawn authorizations in place, before their captures and
refunds are scheduled, so an incident flows through the rest of the stream the way a
real one would. Windows sit in the middle of the run (by expected message count), so a
test knows where to look without generating anything: see `scenario_info`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from paymetrics.simulator.catalog import CARD_NETWORKS, DECLINE_NAMES, REGIONS, Merchants

__all__ = [
    "SCENARIOS",
    "Baseline",
    "DailyAggregate",
    "DeclineSpike",
    "LargeTransactions",
    "LatencyDegradation",
    "Scenario",
    "ScenarioContext",
    "Structuring",
    "Velocity",
    "resolve_scenario",
]

Columns = dict[str, npt.NDArray[Any]]
"""Event columns as the generator keeps them (see generator._COLUMNS)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ScenarioContext:
    """What a scenario may use to place itself: its own seeded RNG, the merchants, the clock."""

    rng: np.random.Generator
    merchants: Merchants
    moment: Callable[[float], int]
    """Expected `occurred_at` (Unix ms) by which this fraction of the run's messages is out."""


def _to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _middle_window(ctx: ScenarioContext, minutes: int) -> tuple[int, int]:
    """A `minutes`-long window centred between 40 % and 60 % of the run (never before it)."""
    center = ctx.moment(float(ctx.rng.uniform(0.4, 0.6)))
    half = minutes * 30_000
    start = max(center - half, ctx.moment(0.0))
    return start, start + 2 * half


class Scenario:
    """No incident. Subclasses override `apply` and `info`."""

    name: ClassVar[str] = "baseline"

    def __init__(self, ctx: ScenarioContext) -> None:
        self.ctx = ctx

    def info(self) -> dict[str, Any]:
        """What was injected, where and when (datetimes are aware UTC; windows are [start, end))."""
        return {"scenario": self.name}

    def apply(self, ev: Columns, rng: np.random.Generator) -> None:
        """Edit freshly drawn authorizations in place."""
        return None


class Baseline(Scenario):
    """Business as usual."""

    name = "baseline"


class DeclineSpike(Scenario):
    """One mid-popularity merchant's approval rate collapses for 45 minutes.

    Looks like an issuer blocking the merchant or a card-testing attack: declines turn
    into do_not_honor / suspected_fraud.
    """

    name = "decline_spike"
    minutes: ClassVar[int] = 45
    approval_rate: ClassVar[float] = 0.2
    codes: ClassVar[tuple[str, ...]] = ("do_not_honor", "suspected_fraud")
    code_weights: ClassVar[tuple[float, ...]] = (0.6, 0.4)

    def __init__(self, ctx: ScenarioContext) -> None:
        super().__init__(ctx)
        n = len(ctx.merchants)
        lo = max(1, round(0.02 * n))
        hi = max(lo, round(0.06 * n))
        self.rank = min(n - 1, int(ctx.rng.integers(lo, hi + 1)))
        self.start_ms, self.end_ms = _middle_window(ctx, self.minutes)
        self._code_idx = np.array([DECLINE_NAMES.index(c) for c in self.codes], np.int8)

    def info(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "merchant_id": self.ctx.merchants.ids[self.rank],
            "merchant_rank": self.rank,
            "start": _to_datetime(self.start_ms),
            "end": _to_datetime(self.end_ms),
            "approval_rate": self.approval_rate,
            "decline_codes": list(self.codes),
        }

    def apply(self, ev: Columns, rng: np.random.Generator) -> None:
        t = ev["t"]
        hit = (ev["merchant"] == self.rank) & (t >= self.start_ms) & (t < self.end_ms)
        hit &= ev["etype"] == 0
        k = int(hit.sum())
        if not k:
            return
        approved = rng.random(k) < self.approval_rate
        code = self._code_idx[(rng.random(k) >= self.code_weights[0]).astype(np.intp)]
        ev["status"][hit] = np.where(approved, 0, 1)
        ev["decline"][hit] = np.where(approved, -1, code)


class LatencyDegradation(Scenario):
    """One card network answers five times slower for an hour (a degraded issuer gateway)."""

    name = "latency_degradation"
    minutes: ClassVar[int] = 60
    factor: ClassVar[float] = 5.0
    candidates: ClassVar[tuple[str, ...]] = ("visa", "mastercard")

    def __init__(self, ctx: ScenarioContext) -> None:
        super().__init__(ctx)
        self.network = self.candidates[int(ctx.rng.integers(0, len(self.candidates)))]
        self._mn = CARD_NETWORKS.index(self.network)
        self.start_ms, self.end_ms = _middle_window(ctx, self.minutes)

    def info(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "card_network": self.network,
            "factor": self.factor,
            "start": _to_datetime(self.start_ms),
            "end": _to_datetime(self.end_ms),
        }

    def apply(self, ev: Columns, rng: np.random.Generator) -> None:
        t = ev["t"]
        hit = (ev["mn"] == self._mn) & (t >= self.start_ms) & (t < self.end_ms)
        hit &= ev["etype"] == 0
        ev["latency"][hit] *= self.factor


class _UsdPayments(Scenario):
    """`count` authorizations at USD merchants inside a window in the middle of the run are
    rewritten: approved, an amount drawn from `amount_usd`, and `customer` (a number above
    the plain traffic's customers; -1: none). Compliance rules judge USD amounts without
    any FX rate configured, hence USD merchants."""

    minutes: ClassVar[int] = 60
    count: ClassVar[int] = 1
    amount_usd: ClassVar[tuple[float, float]] = (1.0, 2.0)
    customer: ClassVar[int] = -1

    def __init__(self, ctx: ScenarioContext) -> None:
        super().__init__(ctx)
        usd = [
            i for i, r in enumerate(ctx.merchants.region.tolist()) if REGIONS[r].currency == "USD"
        ]
        self.usd = np.asarray(usd, dtype=np.int64)
        self.start_ms, self.end_ms = _middle_window(ctx, self.minutes)
        self.left = self.count

    def info(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "count": self.count,
            "amount_usd": self.amount_usd,
            "customer_number": self.customer,
            "start": _to_datetime(self.start_ms),
            "end": _to_datetime(self.end_ms),
        }

    def apply(self, ev: Columns, rng: np.random.Generator) -> None:
        if self.left <= 0:
            return
        t = ev["t"]
        window = (t >= self.start_ms) & (t < self.end_ms) & (ev["etype"] == 0)
        hit = np.flatnonzero(window & np.isin(ev["merchant"], self.usd))[: self.left]
        if not len(hit):
            return
        self.left -= len(hit)
        low, high = self.amount_usd
        ev["amount"][hit] = np.rint(rng.uniform(low, high, len(hit)) * 100).astype(np.int64)
        ev["status"][hit] = 0
        ev["decline"][hit] = -1
        ev["cust"][hit] = self.customer


class LargeTransactions(_UsdPayments):
    """Three single approved payments of USD 12,000 to 40,000 (no customer id)."""

    name = "large_transaction"
    count = 3
    amount_usd = (12_000.0, 40_000.0)


class DailyAggregate(_UsdPayments):
    """One customer pays five times USD 2,200 to 2,800 within an hour: over USD 10,000
    in one day, no single payment near the threshold."""

    name = "daily_aggregate"
    count = 5
    amount_usd = (2_200.0, 2_800.0)
    customer = 5_000_002


class Structuring(_UsdPayments):
    """One customer pays four times USD 8,500 to 9,900 within an hour: each just below
    USD 10,000 (the day's total crosses it too)."""

    name = "structuring"
    count = 4
    amount_usd = (8_500.0, 9_900.0)
    customer = 5_000_003


class Velocity(_UsdPayments):
    """One customer makes twelve small payments within 20 minutes."""

    name = "velocity"
    minutes = 20
    count = 12
    amount_usd = (5.0, 50.0)
    customer = 5_000_004


SCENARIOS: Final[dict[str, type[Scenario]]] = {
    cls.name: cls
    for cls in (
        Baseline,
        DeclineSpike,
        LatencyDegradation,
        LargeTransactions,
        DailyAggregate,
        Structuring,
        Velocity,
    )
}


def resolve_scenario(name: str) -> type[Scenario]:
    """The scenario class registered under `name`; a ValueError names the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        valid = ", ".join(SCENARIOS)
        raise ValueError(f"unknown scenario {name!r}; valid: {valid}") from None
