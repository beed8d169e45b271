"""Validation rules by name, and the stage that applies them to a batch.

`RULES` maps each rule's name to its class: the built-ins and every rule registered
under the entry-point group `paymetrics.validators` (see docs/plugins.md; a broken or
conflicting plugin raises `paymetrics.plugins.PluginError` on import, naming it).
`resolve_rule` turns a name (or an instance) into a rule and lists the valid names
when it cannot. `DEFAULT_RULES` are the built-ins only: a plugin rule runs when the
configuration names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from paymetrics.decode import Rejects
from paymetrics.events import Reason
from paymetrics.plugins import load_plugins, unknown_name
from paymetrics.validate.base import Rule
from paymetrics.validate.iso import CountryRule, CurrencyRule
from paymetrics.validate.text import NoNulCharacterRule
from paymetrics.validate.timestamps import OccurredAtRangeRule

__all__ = ["DEFAULT_RULES", "RULES", "Rule", "resolve_rule", "resolve_rules", "validate"]

ENTRY_POINT_GROUP = "paymetrics.validators"
BUILTIN_RULES: tuple[type[Rule], ...] = (
    CurrencyRule,
    CountryRule,
    OccurredAtRangeRule,
    NoNulCharacterRule,
)
_REASON_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_rule(rule: type[Rule]) -> str | None:
    reason = getattr(rule, "reason", None)
    if isinstance(reason, Reason) or (
        isinstance(reason, str) and _REASON_CODE.fullmatch(reason) is not None
    ):
        return None
    return f"reason {reason!r} is neither a paymetrics Reason nor a lower_snake code (<= 64)"


RULES: dict[str, type[Rule]] = load_plugins(
    ENTRY_POINT_GROUP, Rule, BUILTIN_RULES, check=_check_rule
)
DEFAULT_RULES: tuple[str, ...] = tuple(r.name for r in BUILTIN_RULES)


def resolve_rule(rule: str | Rule, params: dict[str, Any] | None = None) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if rule not in RULES:
        raise unknown_name("validation rule", "rules", rule, RULES)
    return RULES[rule](params)


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
