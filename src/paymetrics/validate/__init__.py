"""Validation rules by name, and the stage that applies them to a batch.

`RULES` maps each built-in rule's name to its class; `resolve_rule` turns a
name (or an instance) into a rule and lists the valid names when it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from paymetrics.decode import Rejects
from paymetrics.validate.base import Rule
from paymetrics.validate.iso import CountryRule, CurrencyRule
from paymetrics.validate.text import NoNulCharacterRule
from paymetrics.validate.timestamps import OccurredAtRangeRule

__all__ = ["DEFAULT_RULES", "RULES", "Rule", "resolve_rule", "resolve_rules", "validate"]

RULES: dict[str, type[Rule]] = {
    rule.name: rule for rule in (CurrencyRule, CountryRule, OccurredAtRangeRule, NoNulCharacterRule)
}
DEFAULT_RULES: tuple[str, ...] = tuple(RULES)


def resolve_rule(rule: str | Rule, params: dict[str, Any] | None = None) -> Rule:
    if isinstance(rule, Rule):
        return rule
    try:
        return RULES[rule](params)
    except KeyError:
        valid = ", ".join(sorted(RULES))
        raise ValueError(f"unknown validation rule {rule!r}; valid rules: {valid}") from None


def resolve_rules(rules: Iterable[str | Rule]) -> list[Rule]:
    return [resolve_rule(rule) for rule in rules]


def validate(table: pa.Table, rules: Sequence[Rule], rejects: Rejects) -> npt.NDArray[np.bool_]:
    """Apply every rule; rejected rows go to `rejects` (first failing rule wins).

    Returns the mask of rows that passed every rule.
    """
    ok = np.ones(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return ok
    message_index = table["message_index"].to_numpy()
    event_ids = table["event_id"]
    for rule in rules:
        bad = rule.invalid(table) & ok
        for row in np.flatnonzero(bad):
            rejects.add(
                int(message_index[row]),
                rule.reason,
                rule.describe(table, int(row)),
                event_ids[int(row)].as_py(),
            )
        ok &= ~bad
    return ok
