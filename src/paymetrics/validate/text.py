"""Rules on text values beyond the contract's types."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.events import Reason
from paymetrics.validate.base import Rule

__all__ = ["NoNulCharacterRule"]

#: The stored text columns of normalized_transactions.
TEXT_COLUMNS = (
    "event_id",
    "event_type",
    "transaction_id",
    "merchant_id",
    "currency",
    "status",
    "payment_method",
    "decline_code",
    "card_network",
    "country",
    "channel",
    "customer_id",
)


class NoNulCharacterRule(Rule):
    """No stored text field may contain U+0000 (JSON `\\u0000`).

    PostgreSQL text cannot hold it, and most tools that read the tables stop at it;
    rejecting it here keeps SQLite and PostgreSQL holding the same events.
    """

    name = "no_nul_characters"
    reason = Reason.INVALID_VALUE

    def _bad(self, table: pa.Table) -> list[tuple[str, npt.NDArray[np.bool_]]]:
        out = []
        for column in TEXT_COLUMNS:
            if column in table.column_names:
                found = pc.fill_null(pc.match_substring(table[column], "\x00"), False)
                out.append((column, np.asarray(found, dtype=bool)))
        return out

    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        bad = np.zeros(table.num_rows, dtype=bool)
        for _, found in self._bad(table):
            bad |= found
        return bad

    def describe(self, table: pa.Table, row: int) -> str:
        column = next(name for name, found in self._bad(table.slice(row, 1)) if found[0])
        return f"{column}: contains the character U+0000, which text columns cannot store"
