"""A partition that moves between workers mid-stream (a consumer-group rebalance).

Two pipelines share one database; the second starts with a stale view of the
partition (it read the checkpoints before the first stored a batch), as a worker does
when the partition is assigned to it while the previous owner is still committing.
The result must equal one worker processing the stream alone: no batch stored twice,
and lateness judged against the watermark the previous owner stored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.sources.base import Checkpoint, RawBatch, Source
from paymetrics.storage import open_store
from paymetrics.storage.base import CheckpointConflict

BASE = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


def message(n: int, at: dt.datetime) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{n}",
            "event_type": "authorization",
            "transaction_id": f"t{n}",
            "occurred_at": at.isoformat(),
            "merchant_id": f"m{n % 3}",
            "amount_minor": 100 + n,
            "currency": "EUR",
            "status": "approved" if n % 4 else "declined",
            "payment_method": "card",
            "latency_ms": float(n % 50),
        }
    ).encode()


def stream() -> list[bytes]:
    out = [message(n, BASE + dt.timedelta(minutes=n)) for n in range(1, 201)]
    # first of the second half: 10 days older than the newest of the first half
    out[100] = message(101, BASE - dt.timedelta(days=10))
    return out


class ListSource(Source):
    """Batches of one partition from a list; `before_first` runs when the first is read."""

    source_id = "test:rebalance"

    def __init__(
        self,
        messages: list[bytes],
        start: int,
        stop: int,
        *,
        rebalancing: bool = True,
        before_first: Callable[[], None] | None = None,
    ) -> None:
        self.messages, self.start, self.stop = messages, start, stop
        self.rebalancing = rebalancing
        self.before_first = before_first
        self.acked: list[int] = []

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        pass  # a broker source reads its offsets from the group; we replay on purpose

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        if self.before_first is not None:
            self.before_first()
        for first in range(self.start, self.stop, max_events):
            last = min(first + max_events, self.stop)
            positions = list(range(first + 1, last + 1))
            yield RawBatch(
                self.source_id,
                "0",
                self.messages[first:last],
                positions,
                Checkpoint("0", positions[-1]),
            )

    def ack(self, batch: RawBatch) -> None:
        self.acked.append(batch.checkpoint.position)


def run(url: str, source: Source, **options: Any) -> Any:
    store = open_store(url)
    try:
        store.prepare()
        return Pipeline(store, None, PipelineOptions(batch_max_events=50, **options)).run(source)
    finally:
        store.close()


@pytest.mark.parametrize("background", [True, False], ids=["background", "serial"])
@pytest.mark.parametrize("handover", [50, 100], ids=["redelivered", "clean-handover"])
def test_a_partition_taken_over_mid_stream_equals_one_worker(
    tmp_path: Path,
    dump_tables: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    background: bool,
    handover: int,
) -> None:
    caplog.set_level(logging.INFO, logger="paymetrics.pipeline")
    messages = stream()
    alone = f"sqlite:///{tmp_path / 'alone.db'}"
    run(alone, ListSource(messages, 0, 200), commit_in_background=background)

    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    # Worker B reads the (empty) checkpoints, then worker A stores messages 1-100 before
    # B's first batch is committed. B was handed the partition from offset `handover`:
    # at 50 (A had not committed its group offset yet) B redelivers 51-100; at 100 it
    # starts right after A, with a stale view of the partition's watermark.
    first_owner = ListSource(messages, 0, 100)
    second_owner = ListSource(
        messages, handover, 200, before_first=lambda: run(shared, first_owner)
    )
    stats = run(shared, second_owner, commit_in_background=background)

    assert first_owner.acked == [50, 100]
    assert second_owner.acked == list(range(handover + 50, 201, 50))
    assert stats.normalized == 99  # 101-200, less the one too late
    rejudged = "judging batch 101..150 again against the stored watermark" in caplog.text
    assert rejudged == (handover == 100)
    exclude = {"ingest_batches": ["batch_id"], "normalized_transactions": ["batch_id"]}
    assert dump_tables(shared, exclude=exclude) == dump_tables(alone, exclude=exclude)
    too_late = [r for r in dump_tables(shared)["failed_items"] if r[3] == "too_late"]
    assert len(too_late) == 1


def test_without_rebalancing_a_moved_checkpoint_still_stops_the_run(tmp_path: Path) -> None:
    messages = stream()
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    first = ListSource(messages, 0, 100, rebalancing=False)
    second = ListSource(
        messages, 0, 200, rebalancing=False, before_first=lambda: run(shared, first)
    )
    with pytest.raises(CheckpointConflict, match="advanced by another run"):
        run(shared, second)
