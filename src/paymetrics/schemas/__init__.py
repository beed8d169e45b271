"""JSON Schemas of the event contract, shipped inside the package.

`payment-event-v1.json` is the JSON Schema (draft 2020-12) of payment event
contract v1. It is for producers and tools; the pipeline itself decodes with
`paymetrics.events.PaymentEvent`. `docs/event-contract.md` is the contract and
lists every rule a JSON Schema cannot express and where the two differ.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any, Final

__all__ = ["EVENT_SCHEMA_V1", "event_schema_v1"]

EVENT_SCHEMA_V1: Final = "payment-event-v1.json"
"""File name of the v1 schema inside this package."""


def event_schema_v1() -> dict[str, Any]:
    """The JSON Schema of payment event contract v1, as a new dict on every call."""
    text = files(__name__).joinpath(EVENT_SCHEMA_V1).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
