"""The store: one transaction per batch holding events, dead letters, metrics and checkpoint.

The pipeline opens a `Transaction`, writes everything a batch produced, and
commits; the source is acknowledged only after that. A crash before the commit
leaves nothing behind, and the replayed batch finds its events already stored
(duplicates) only if an earlier commit stored them: the exactly-once effect.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from paymetrics.metrics.payment_5m import Partials

if TYPE_CHECKING:
    from paymetrics.compliance import Compliance

__all__ = [
    "AppliedConfig",
    "BatchCounts",
    "CheckpointConflict",
    "ConfigVersion",
    "DeadLetters",
    "PartitionState",
    "Store",
    "StoreUnavailable",
    "Transaction",
    "TransientStoreError",
    "is_transient",
]


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or created; the message names it and why."""


class CheckpointConflict(RuntimeError):
    """Another run moved this partition's checkpoint since we read it: we must not commit."""


class TransientStoreError(RuntimeError):
    """The batch's transaction failed for a reason that retrying can cure: a lost
    connection, a deadlock, a serialization failure, or a concurrent writer that stored
    the same event first. Nothing of the batch was committed (or, when the connection
    dropped during COMMIT, possibly all of it: the retry checks the checkpoint)."""


def is_transient(error: BaseException) -> bool:
    """Whether a failed batch may be retried as a whole."""
    import sqlalchemy as sa

    if isinstance(error, TransientStoreError):
        return True
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What the store knows about one source partition."""

    partition: str
    position: int
    byte_offset: int | None
    watermark_us: int | None
    messages: int = 0
    normalized: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True, slots=True)
class BatchCounts:
    messages: int
    normalized: int
    duplicates: int
    dead_lettered: int


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    version: int
    content_hash: str
    document: dict[str, Any]
    applied_at: dt.datetime
    last_applied_at: dt.datetime
    applied_by: str
    origin: str


@dataclass(frozen=True, slots=True)
class AppliedConfig:
    """The version a rules document got, and each metric rule's own version."""

    version: int
    new: bool
    metric_versions: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Rows for `failed_items`, column by column (payloads already masked)."""

    positions: list[int]
    reasons: list[str]
    messages: list[str]
    event_ids: list[str | None]
    payloads: list[str]

    def __len__(self) -> int:
        return len(self.positions)


class Transaction(abc.ABC):
    """Everything one batch writes, atomically."""

    @abc.abstractmethod
    def start_batch(
        self,
        source_id: str,
        partition: str,
        first: int,
        last: int,
        config_version: int | None = None,
    ) -> int:
        """Record the batch in `ingest_batches`; returns its `batch_id`."""

    @abc.abstractmethod
    def add_dead_letters(self, source_id: str, partition: str, rows: DeadLetters) -> None:
        """Insert dead letters; one already stored at the same source position is kept."""

    @abc.abstractmethod
    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        """Insert normalized events (unique `event_id`s); True for each row that was new."""

    @abc.abstractmethod
    def apply_payment_metrics(self, partials: Partials) -> None:
        """Add partial aggregates to `payment_metrics_5m` and its latency sketches."""

    @abc.abstractmethod
    def apply_dynamic_metrics(self, partials: pa.Table) -> None:
        """Add partials (`paymetrics.metrics.dynamic.PARTIAL_SCHEMA` plus `aggregate` and
        `config_version` columns) to `dynamic_metrics`, recomputing each row's value."""

    def add_histogram_buckets(self, buckets: pa.Table) -> None:
        """Add config-defined histogram bucket counts
        (`paymetrics.metrics.histograms.BUCKET_SCHEMA`) to `aggregate_histograms`."""
        raise NotImplementedError(f"{type(self).__name__} does not support histograms")

    def apply_compliance(
        self,
        compliance: Compliance,
        events: pa.Table,
        *,
        source_id: str,
        partition: str,
        previous_watermark_us: int | None,
        watermark_us: int | None,
        config_version: int | None = None,
    ) -> int:
        """Judge the batch's newly stored `events` with the compliance rules: update
        their counters and sketches, insert their alerts (each key once); returns how
        many alerts were new. A store without compliance support raises."""
        raise NotImplementedError(f"{type(self).__name__} does not support compliance rules")

    @abc.abstractmethod
    def finish_batch(
        self,
        batch_id: int,
        source_id: str,
        previous: PartitionState | None,
        state: PartitionState,
        counts: BatchCounts,
    ) -> None:
        """Store the batch's counts and move the partition's checkpoint from `previous` to `state`.

        A compare-and-swap: if the stored checkpoint is no longer `previous` (None: no
        row yet), another run got there first and `CheckpointConflict` is raised, so
        the transaction rolls back instead of counting the same messages twice.
        """


class Store(abc.ABC):
    """A database holding paymetrics' tables."""

    url_for_display: str

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create or upgrade the schema."""

    def prepare_compliance(self) -> None:  # noqa: B027 - optional, nothing to do by default
        """Build what the per-customer compliance rules read (idempotent)."""

    @abc.abstractmethod
    def load_state(self, source_id: str) -> dict[str, PartitionState]:
        """Checkpoints and counters of every partition of a source."""

    @abc.abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction that commits when the block ends without an exception."""

    @abc.abstractmethod
    def committed_batch(
        self, source_id: str, partition: str, first: int, last: int
    ) -> BatchCounts | None:
        """The counts of a stored batch with these positions, or None (for a retry that
        cannot tell whether its COMMIT went through)."""

    @abc.abstractmethod
    def record_config(
        self, document: dict[str, Any], applied_by: str, origin: str
    ) -> AppliedConfig:
        """Record a rules document as a config version (reusing the row of an identical one)."""

    @abc.abstractmethod
    def config_history(self) -> list[ConfigVersion]:
        """Every recorded config version, oldest first."""

    @abc.abstractmethod
    def table_counts(self) -> dict[str, int]:
        """Rows per table, plus `windows`: distinct window_start in payment_metrics_5m."""

    @abc.abstractmethod
    def close(self) -> None: ...
