"""The checkpoint moves by compare-and-swap: a run holding stale state cannot commit."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.sources import open_source
from paymetrics.storage import open_store
from paymetrics.storage.base import CheckpointConflict

EVENT = (
    '{{"event_id":"e{n}","event_type":"authorization","transaction_id":"t{n}",'
    '"occurred_at":"2026-01-01T00:00:{n:02d}Z","merchant_id":"m1","amount_minor":100,'
    '"currency":"USD","status":"approved","payment_method":"card"}}'
)


def _write(path: Path, count: int) -> None:
    path.write_text("".join(EVENT.format(n=n) + "\n" for n in range(count)))


def _counts(url: str) -> tuple[int, int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT position, messages, normalized FROM source_checkpoints")
        ).one()
    engine.dispose()
    return tuple(row)  # type: ignore[return-value]


def test_a_second_run_with_stale_state_cannot_commit(tmp_path: Path, tmp_db_url: str) -> None:
    events = tmp_path / "events.jsonl"
    _write(events, 6)
    store = open_store(tmp_db_url)
    store.prepare()
    options = PipelineOptions(batch_max_events=3)
    first, second = Pipeline(store, None, options), Pipeline(store, None, options)
    source_a, source_b = open_source(f"file:{events}"), open_source(f"file:{events}")
    source_a.open({})
    source_b.open({})
    batch_a = next(source_a.batches(3))
    batch_b = next(source_b.batches(3))  # the same first batch, read by a second run

    first.process(batch_a, None)
    with pytest.raises(CheckpointConflict, match="advanced by another run"):
        second.process(batch_b, None)  # it believes the partition is new: stale

    assert _counts(tmp_db_url) == (3, 3, 3)  # counted once, not twice
    store.close()


def test_a_run_resuming_from_the_stored_state_commits(tmp_path: Path, tmp_db_url: str) -> None:
    events = tmp_path / "events.jsonl"
    _write(events, 6)
    store = open_store(tmp_db_url)
    store.prepare()
    pipeline = Pipeline(store, None, PipelineOptions(batch_max_events=3))
    source = open_source(f"file:{events}")
    stats = pipeline.run(source)
    assert (stats.messages, stats.normalized) == (6, 6)
    assert _counts(tmp_db_url) == (6, 6, 6)
    again = pipeline.run(open_source(f"file:{events}"))
    assert again.messages == 0
    store.close()
