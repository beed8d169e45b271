"""A validation rule: one named check over a whole batch of normalized events.

Type, enum, length and range checks happen while decoding (the contract's
`PaymentEvent`); rules here are the checks that need more than the type system:
lookups (ISO codes) and cross-field logic. A rule returns the rows it rejects,
so a batch costs one vectorized pass per rule, not one Python call per event.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from paymetrics.events import Reason

__all__ = ["NoParams", "Rule"]


class NoParams(BaseModel):
    """A rule's parameters, validated by the configuration (a rule with none takes none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Rule(abc.ABC):
    """Implementers set `name`, `reason` and write `invalid` and `describe`.

    `reason` is the dead-letter reason code: a built-in `Reason`, or (for a plugin)
    its own lower_snake code of at most 64 characters, stored as given.

    A rule with parameters sets `Params` to its own pydantic model; the
    configuration validates `validation.rules.<name>.params` against it.
    """

    name: ClassVar[str]
    reason: ClassVar[Reason | str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | dict[str, Any] | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.Params.model_validate(params or {})
        self.params = params

    @abc.abstractmethod
    def invalid(self, table: pa.Table) -> npt.NDArray[np.bool_]:
        """True for each row this rule rejects."""

    @abc.abstractmethod
    def describe(self, table: pa.Table, row: int) -> str:
        """The dead-letter message for a rejected row: names the field and the value."""
