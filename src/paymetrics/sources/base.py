"""What every source delivers: batches of raw messages with their positions.

A source reads one or more *partitions* (a file, a Kafka partition) in order.
Each batch comes from one partition. After the pipeline has stored a batch
durably, it calls `ack`; a broker source commits its offsets there. On start the
pipeline hands the source the checkpoints it stored, and the source resumes
right after them, so a crash replays at most the batch that was in flight.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = ["Checkpoint", "RawBatch", "Source"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume a partition: everything before `position` is stored.

    `position` is source-defined and monotonic (a line number, a Kafka offset).
    `byte_offset` lets a file source seek instead of re-reading.
    """

    partition: str
    position: int
    byte_offset: int | None = None


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Raw, non-blank messages from one partition, in source order.

    `positions[i]` identifies `messages[i]` inside the partition (for files: the
    1-based line number). `checkpoint` is where to resume once this batch is stored.
    """

    source_id: str
    partition: str
    messages: list[bytes]
    positions: list[int]
    checkpoint: Checkpoint
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.messages)


class Source(abc.ABC):
    """A finite or endless supply of `RawBatch`es.

    Implementations set `source_id` (a stable name for checkpoints: the same input
    must give the same id on every run) and write `batches`.
    """

    source_id: str
    #: True when partitions can move between workers (a consumer group): a checkpoint
    #: that moved under us then means "another worker stored it", not "a second run".
    rebalancing: bool = False
    #: Set by the pipeline; a source that waits for messages calls it between polls
    #: (on the thread that iterates `batches`), so the batch committed last is
    #: acknowledged during a lull instead of when the next one arrives.
    on_idle: Callable[[], None] = staticmethod(lambda: None)
    #: Longest a streaming source waits to fill a batch (`batching.batch_max_seconds`).
    batch_max_seconds: float = 1.0
    #: Set by the pipeline; a source that waits for messages stops when it is true.
    should_stop: Callable[[], bool] = staticmethod(lambda: False)

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:  # noqa: B027 - optional hook
        """Receive the stored checkpoints, keyed by partition, before the first batch."""

    @abc.abstractmethod
    def batches(self, max_events: int) -> Iterator[RawBatch]:
        """Yield batches of at most `max_events` messages until the source ends."""

    def ack(self, batch: RawBatch) -> None:  # noqa: B027 - optional hook
        """Called once `batch` is durably stored (brokers commit offsets here)."""

    def lag(self) -> Mapping[str, int]:
        """Messages waiting past the last acknowledged position, by partition (brokers;
        empty where unknown). Cheap: called after every batch."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
