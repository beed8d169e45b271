"""Amounts in the reporting currency: ISO 4217 minor units and the configured FX rates.

`amount_minor` of an event is in the minor unit of its own currency (cents, yen, fils).
Converted, it becomes minor units of the reporting currency:

    reporting_minor = amount_minor / 10**exponent(currency) * rate(currency)
                      * 10**exponent(reporting_currency)

rounded half to even to a whole minor unit. The reporting currency's own rate is 1. An
event in any other currency without a configured rate cannot be converted: it is
reported as not converted (NaN here, null in Arrow), and the rules skip it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Fx", "minor_unit_exponent"]

#: ISO 4217 currencies whose minor unit is not 2 digits (list one of 2024-06; the funds
#: codes CLF and UYW have 4). Precious metals and other "N.A." codes count as 0.
_EXPONENTS: Final[Mapping[str, int]] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(
        ["XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


@dataclass(frozen=True, slots=True)
class Fx:
    """Conversion of minor-unit amounts to minor units of `reporting_currency`."""

    reporting_currency: str = "USD"
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    """Units of the reporting currency per one major unit of each currency."""

    def factor(self, currency: str) -> float | None:
        """Reporting minor units per minor unit of `currency`; None without a rate."""
        currency = currency.upper()
        if currency == self.reporting_currency:
            return 1.0
        rate = self.rates.get(currency)
        if rate is None:
            return None
        shift = minor_unit_exponent(self.reporting_currency) - minor_unit_exponent(currency)
        return float(rate * Decimal(10) ** shift)

    def to_reporting_minor(self, amount: Decimal, currency: str) -> int | None:
        """A major-unit amount (a configured threshold) in reporting minor units."""
        currency = currency.upper()
        rate = Decimal(1) if currency == self.reporting_currency else self.rates.get(currency)
        if rate is None:
            return None
        minor = amount * rate * Decimal(10) ** minor_unit_exponent(self.reporting_currency)
        return int(minor.to_integral_value())

    def convert(
        self, amount_minor: pa.ChunkedArray | pa.Array, currency: pa.ChunkedArray | pa.Array
    ) -> npt.NDArray[np.float64]:
        """Each amount in reporting minor units (whole, half to even); NaN without a rate."""
        codes = pc.unique(currency).to_pylist()
        factors = np.array(
            [np.nan if (f := self.factor(c)) is None else f for c in codes], dtype=np.float64
        )
        at = np.asarray(pc.index_in(currency, value_set=pa.array(codes, pa.string())))
        amounts = np.asarray(amount_minor, dtype=np.float64)
        return np.rint(amounts * factors[at]) if len(at) else np.zeros(0)
