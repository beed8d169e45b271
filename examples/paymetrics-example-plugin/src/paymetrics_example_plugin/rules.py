"""`merchant_allowlist`: dead-letter events of merchants that are not on a list."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from paymetrics.validate.base import Rule


class MerchantAllowlistParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    merchants: list[str] = Field(default_factory=list)
    """merchant_id values let through, exactly as sent."""
    prefixes: list[str] = Field(default_factory=list)
    """merchant_id prefixes let through (e.g. `mch_0` for a test range)."""


class MerchantAllowlistRule(Rule):
    """`merchant_id` must be listed in `merchants` or start with one of `prefixes`."""

    name = "merchant_allowlist"
    reason = "merchant_not_allowed"  # a code of the plugin's own, stored as given
    Params = MerchantAllowlistParams

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        params = self.params
        assert isinstance(params, MerchantAllowlistParams)
        merchant = table["merchant_id"]
        allowed = pc.is_in(merchant, value_set=pa.array(params.merchants, pa.string()))
        for prefix in params.prefixes:
            allowed = pc.or_(allowed, pc.starts_with(merchant, pattern=prefix))
        return np.asarray(pc.invert(allowed), dtype=bool)

    def describe(self, table: pa.Table, row: int) -> str:
        merchant = table["merchant_id"][row].as_py()
        return f"merchant_id: {merchant!r} is not on the merchant allowlist"
