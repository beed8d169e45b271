"""The payment event contract v1: the one shape every source delivers.

`PaymentEvent` is the strict decoding target (msgspec enforces types, enums,
lengths and ranges in C); rules that need lookups (ISO codes) live in
`paymetrics.validate`. `Reason` lists every machine-readable dead-letter code.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "CHANNELS",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "PAYMENT_METHODS",
    "STATUSES",
    "PaymentEvent",
    "Reason",
]

MAX_EVENT_BYTES: Final = 1024 * 1024
"""An event larger than 1 MiB (UTF-8 bytes) is invalid."""

EventType = Literal["authorization", "capture", "refund", "chargeback"]
Status = Literal["approved", "declined", "error"]
PaymentMethod = Literal["card", "wallet", "bank_transfer", "bnpl"]
Channel = Literal["ecommerce", "pos", "moto"]

EVENT_TYPES: Final = ("authorization", "capture", "refund", "chargeback")
STATUSES: Final = ("approved", "declined", "error")
PAYMENT_METHODS: Final = ("card", "wallet", "bank_transfer", "bnpl")
CHANNELS: Final = ("ecommerce", "pos", "moto")

Id128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class PaymentEvent(msgspec.Struct, gc=False, frozen=True):
    """One payment event, as decoded. Unknown fields are ignored here and kept in the archive."""

    event_id: Id128
    event_type: EventType
    transaction_id: Id128
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    merchant_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    amount_minor: Annotated[int, msgspec.Meta(ge=0, le=10**15)]
    currency: str
    status: Status
    payment_method: PaymentMethod
    # Bounded: both become keys (metric dimensions, alert subjects), and a key column
    # cannot hold an unbounded value (PostgreSQL refused a 1,500-character code).
    decline_code: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    card_network: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    country: str | None = None
    channel: Channel | None = None
    customer_id: Id128 | None = None
    metadata: dict[str, Any] | None = None
    schema_version: Literal["1"] | None = None


class Reason(StrEnum):
    """Machine-readable reason codes stored with every dead letter."""

    INVALID_ENCODING = "invalid_encoding"
    """Not valid UTF-8."""
    TOO_LARGE = "too_large"
    """More than 1 MiB."""
    INVALID_JSON = "invalid_json"
    """Not parseable as JSON."""
    NOT_AN_OBJECT = "not_an_object"
    """Valid JSON, but not an object."""
    MISSING_FIELD = "missing_field"
    """A required field is absent or null."""
    INVALID_TYPE = "invalid_type"
    """A field has the wrong JSON type (a string or float amount, say)."""
    INVALID_VALUE = "invalid_value"
    """A field has the right type but a value outside the contract (enum, length, range)."""
    INVALID_TIMESTAMP = "invalid_timestamp"
    """`occurred_at` is not an RFC 3339 date-time, or names an impossible date."""
    MISSING_TIMEZONE = "missing_timezone"
    """`occurred_at` has no UTC offset."""
    UNKNOWN_CURRENCY = "unknown_currency"
    """`currency` is not an assigned ISO 4217 alphabetic code."""
    UNKNOWN_COUNTRY = "unknown_country"
    """`country` is not an assigned ISO 3166-1 alpha-2 code."""
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    """`schema_version` is present and not "1"."""
    TOO_LATE = "too_late"
    """Older than the newest event seen on its partition by more than the maximum lateness."""
    BATCH_FAILED = "batch_failed"
    """Not judged on its own: its whole batch kept failing past the retry limit (the Azure
    Function), so the batch was dead-lettered unprocessed to let the partition go on. The
    message names the error; the payload can be replayed once it is fixed."""
