"""ISO code rules: currency (ISO 4217) and country (ISO 3166-1 alpha-2), from pycountry."""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pycountry

from paymetrics.events import Reason
from paymetrics.validate.base import Rule

__all__ = ["CountryRule", "CurrencyRule", "country_codes", "currency_codes"]


@cache
def currency_codes() -> pa.Array:
    return pa.array(sorted(c.alpha_3 for c in pycountry.currencies), pa.string())


@cache
def country_codes() -> pa.Array:
    return pa.array(sorted(c.alpha_2 for c in pycountry.countries), pa.string())


class CurrencyRule(Rule):
    """`currency` must be an assigned ISO 4217 code (already upper-cased)."""

    name = "currency_iso4217"
    reason = Reason.UNKNOWN_CURRENCY

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        known = pc.is_in(table["currency"], value_set=currency_codes())
        return np.asarray(pc.invert(known), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        return f"currency: {table['currency'][row].as_py()!r} is not an ISO 4217 currency code"


class CountryRule(Rule):
    """`country`, when present, must be an assigned ISO 3166-1 alpha-2 code."""

    name = "country_iso3166"
    reason = Reason.UNKNOWN_COUNTRY

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        country = table["country"]
        bad = pc.and_(pc.is_valid(country), pc.invert(pc.is_in(country, value_set=country_codes())))
        return np.asarray(pc.fill_null(bad, False), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        return f"country: {table['country'][row].as_py()!r} is not an ISO 3166-1 alpha-2 code"
