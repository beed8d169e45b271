"""The Azure Function end to end: trigger batches as the host delivers them, real databases.

Events are `azure.functions.EventHubEvent`s built the way the Python worker builds them
(`host_events`). The function is called through the app's registered function (as the
worker calls it, configured from app settings) and through `handle_event_hub_batch` with a
`Runtime` of our own. Faults are injected by wrapping a real store (`FaultyStore`), never
by replacing it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
import sqlalchemy as sa
from tests.conftest import dump_tables
from tests.services import free_port
from tests.unit.test_azure_function_trigger import HostContext, host_events, load_function_app

from paymetrics.archive import find_raw
from paymetrics.azure_function import (
    BatchNotStored,
    BatchSummary,
    FunctionSettings,
    Runtime,
    close_runtime,
    handle_event_hub_batch,
)
from paymetrics.metrics.payment_5m import Partials
from paymetrics.pipeline import PipelineOptions
from paymetrics.simulator import SimulatorConfig
from paymetrics.storage import open_store
from paymetrics.storage.base import (
    AppliedConfig,
    BatchCounts,
    ConfigVersion,
    DeadLetters,
    PartitionState,
    Store,
    Transaction,
)

SOURCE_ID = "eventhubs:payments?consumer_group=$Default"

#: What differs between a `file:` run and the function by construction: the source id
#: and partition (a file path vs. an Event Hubs partition), a file's byte offsets, and
#: where the configuration came from (flags vs. app settings).
SOURCE_COLUMNS = {
    "ingest_batches": ["source_id", "partition"],
    "failed_items": ["source_id", "partition"],
    "source_checkpoints": ["source_id", "partition", "byte_offset"],
    "config_versions": ["origin"],
    "compliance_alerts": ["evidence"],  # pan_exposure evidence names the source
}


def simulated_lines(tmp_path: Path, write_simulated: Callable[..., int], events: int) -> Path:
    path = tmp_path / "events.jsonl"
    config = SimulatorConfig(
        events=events,
        seed=11,
        rate_invalid=0.02,
        rate_duplicate=0.03,
        rate_late=0.01,
        rate_pan_leak=0.005,
    )
    write_simulated(path, config)
    return path


def lines_of(path: Path) -> list[bytes]:
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert all(line.strip() for line in lines)  # positions = line numbers = sequence + 1
    return lines


def deliveries(lines: Sequence[bytes], size: int) -> Iterator[list[Any]]:
    for first in range(0, len(lines), size):
        yield host_events(lines[first : first + size], first_sequence=first)


@pytest.fixture
def app_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean process environment (app settings are set by the test) and no runtime."""
    for key in list(os.environ):
        if key.startswith("PAYMETRICS"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAYMETRICS_EVENTHUB_NAME", "payments")
    close_runtime()
    yield monkeypatch
    close_runtime()


def registered_function() -> Callable[..., None]:
    (function,) = load_function_app().app.get_functions()
    user_function: Callable[..., None] = function.get_user_function()
    return user_function


def make_runtime(
    url: str,
    *,
    fault: Callable[[str, int | None], Exception | None] | None = None,
    give_up_seconds: float = 0.5,
    dead_letter_after_retries: int = 5,
) -> Runtime:
    store: Store = open_store(url)
    store.prepare()
    if fault is not None:
        store = FaultyStore(store, fault)
    settings = FunctionSettings(
        "payments",
        retry_give_up_seconds=give_up_seconds,
        dead_letter_after_retries=dead_letter_after_retries,
    )
    return Runtime(store, None, PipelineOptions(retry_initial_seconds=0.05), settings)


# -- fault injection -----------------------------------------------------------------


class FaultyTransaction(Transaction):
    """A real transaction; `fault(step, first_position)` may return an error to raise."""

    def __init__(self, inner: Transaction, fault: Callable[[str, int | None], Any]) -> None:
        self.inner = inner
        self.fault = fault
        self.first: int | None = None

    def _check(self, step: str) -> None:
        error = self.fault(step, self.first)
        if error is not None:
            raise error

    def start_batch(
        self,
        source_id: str,
        partition: str,
        first: int,
        last: int,
        config_version: int | None = None,
    ) -> int:
        self.first = first
        self._check("start_batch")
        return self.inner.start_batch(source_id, partition, first, last, config_version)

    def add_dead_letters(self, source_id: str, partition: str, rows: DeadLetters) -> None:
        self._check("add_dead_letters")
        self.inner.add_dead_letters(source_id, partition, rows)

    def insert_events(self, events: pa.Table, batch_id: int) -> npt.NDArray[np.bool_]:
        self._check("insert_events")
        return self.inner.insert_events(events, batch_id)

    def apply_payment_metrics(self, partials: Partials) -> None:
        self.inner.apply_payment_metrics(partials)

    def apply_dynamic_metrics(self, partials: pa.Table) -> None:
        self.inner.apply_dynamic_metrics(partials)

    def finish_batch(
        self,
        batch_id: int,
        source_id: str,
        previous: PartitionState | None,
        state: PartitionState,
        counts: BatchCounts,
    ) -> None:
        self.inner.finish_batch(batch_id, source_id, previous, state, counts)
        self._check("commit")  # the last step: the transaction then rolls back


class FaultyStore(Store):
    """A real store whose transactions (and `load_state`) may fail where `fault` says."""

    def __init__(self, inner: Store, fault: Callable[[str, int | None], Any]) -> None:
        self.inner = inner
        self.fault = fault
        self.url_for_display = inner.url_for_display

    def prepare(self) -> None:
        self.inner.prepare()

    def load_state(self, source_id: str) -> dict[str, PartitionState]:
        error = self.fault("load_state", None)
        if error is not None:
            raise error
        return self.inner.load_state(source_id)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield FaultyTransaction(tx, self.fault)

    def committed_batch(
        self, source_id: str, partition: str, first: int, last: int
    ) -> BatchCounts | None:
        return self.inner.committed_batch(source_id, partition, first, last)

    def record_config(
        self, document: dict[str, Any], applied_by: str, origin: str
    ) -> AppliedConfig:
        return self.inner.record_config(document, applied_by, origin)

    def config_history(self) -> list[ConfigVersion]:
        return self.inner.config_history()

    def table_counts(self) -> dict[str, int]:
        return self.inner.table_counts()

    def close(self) -> None:
        self.inner.close()


def lost_connection() -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        "COMMIT", {}, ConnectionResetError("server closed the connection")
    )


def poison() -> sa.exc.DataError:
    return sa.exc.DataError(
        "INSERT INTO normalized_transactions ...", {"secret": "payload"}, ValueError("out of range")
    )


# -- the same tables as `paymetrics run --source file:` --------------------------------


def test_the_app_on_sqlite_stores_what_a_file_run_stores(
    tmp_path: Path,
    app_settings: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
    write_simulated: Callable[..., int],
) -> None:
    path = simulated_lines(tmp_path, write_simulated, 3_000)
    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = run_cli(
        "run",
        "--source",
        f"file:{path}",
        "--db",
        cli_db,
        "--archive",
        str(tmp_path / "cli-raw"),
        "--batch-max-events",
        "500",
    )
    assert result.returncode == 0, result.describe()

    function_db = f"sqlite:///{tmp_path / 'function.db'}"
    app_settings.setenv("PAYMETRICS__STORAGE__DB_URL", function_db)
    app_settings.setenv("PAYMETRICS__STORAGE__ARCHIVE_URL", str(tmp_path / "function-raw"))
    function = registered_function()
    for events in deliveries(lines_of(path), 500):
        function(events, HostContext(retry_count=0, max_retry_count=-1))
    close_runtime()

    tables = dump_tables(function_db, exclude=SOURCE_COLUMNS)
    assert tables == dump_tables(cli_db, exclude=SOURCE_COLUMNS)
    assert len(tables["ingest_batches"]) == 6
    assert tables["failed_items"]  # the simulated defects are there, the same
    (checkpoint,) = dump_tables(function_db)["source_checkpoints"]
    assert checkpoint[:3] == (SOURCE_ID, "0", 3_000)

    def archived(url: str) -> pa.Table:
        return find_raw(url, limit=None).drop_columns(["source_id", "partition"])

    assert archived(str(tmp_path / "function-raw")).equals(archived(str(tmp_path / "cli-raw")))


def test_postgres_stores_what_a_file_run_stores(
    tmp_path: Path,
    postgres_schema: Callable[[str], str],
    run_cli: Callable[..., Any],
    write_simulated: Callable[..., int],
) -> None:
    path = simulated_lines(tmp_path, write_simulated, 3_000)
    cli_db = postgres_schema("cli")
    result = run_cli(
        "run",
        "--source",
        f"file:{path}",
        "--db",
        cli_db,
        "--no-archive",
        "--batch-max-events",
        "500",
    )
    assert result.returncode == 0, result.describe()

    function_db = postgres_schema("function")
    environ = {
        "PAYMETRICS_EVENTHUB_NAME": "payments",
        "PAYMETRICS__STORAGE__DB_URL": function_db,
        "PAYMETRICS__STORAGE__ARCHIVE_URL": "null",
    }
    runtime = Runtime.from_environment(environ)
    try:
        summaries = [
            handle_event_hub_batch(events, retry_count=0, max_retry_count=-1, runtime=runtime)
            for events in deliveries(lines_of(path), 500)
        ]
    finally:
        runtime.close()
    assert dump_tables(function_db, exclude=SOURCE_COLUMNS) == dump_tables(
        cli_db, exclude=SOURCE_COLUMNS
    )
    assert sum(s.events for s in summaries) == 3_000
    assert all(
        s.events == s.normalized + s.duplicates + s.dead_lettered and not s.redelivered
        for s in summaries
    )


# -- redelivery ----------------------------------------------------------------------


def redelivery(url: str, reference: str, lines: list[bytes]) -> None:
    """Batches delivered again, whole or in part, change nothing: the tables end equal to
    those of each event delivered once."""
    runtime = make_runtime(url)
    try:

        def deliver(first: int, last: int) -> BatchSummary:
            events = host_events(lines[first:last], first_sequence=first)
            return handle_event_hub_batch(
                events, retry_count=0, max_retry_count=-1, runtime=runtime
            )

        for first in (0, 100, 200):
            assert deliver(first, first + 100).redelivered == 0
        stored = dump_tables(url)

        again = deliver(100, 200)  # the host crashed before its checkpoint
        assert (again.events, again.redelivered, again.normalized, again.dead_lettered) == (
            100,
            100,
            0,
            0,
        )
        assert dump_tables(url) == stored

        overlapping = deliver(250, 350)  # a checkpoint from before the last batch
        assert overlapping.redelivered == 50
        assert overlapping.normalized + overlapping.duplicates + overlapping.dead_lettered == 50
        assert overlapping.skipped == 0
    finally:
        runtime.close()

    once = make_runtime(reference)
    try:
        for first, last in [(0, 100), (100, 200), (200, 300), (300, 350)]:
            events = host_events(lines[first:last], first_sequence=first)
            handle_event_hub_batch(events, retry_count=0, max_retry_count=-1, runtime=once)
    finally:
        once.close()
    assert dump_tables(url) == dump_tables(reference)


def test_redelivered_batches_add_nothing_on_sqlite(
    tmp_path: Path, write_simulated: Callable[..., int]
) -> None:
    lines = lines_of(simulated_lines(tmp_path, write_simulated, 350))
    redelivery(f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}", lines)


def test_redelivered_batches_add_nothing_on_postgres(
    tmp_path: Path, postgres_schema: Callable[[str], str], write_simulated: Callable[..., int]
) -> None:
    lines = lines_of(simulated_lines(tmp_path, write_simulated, 350))
    redelivery(postgres_schema("redelivered"), postgres_schema("once"), lines)


# -- per-event problems --------------------------------------------------------------


def test_invalid_events_are_dead_lettered_and_the_batch_succeeds(
    tmp_path: Path, app_settings: pytest.MonkeyPatch, write_simulated: Callable[..., int]
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    app_settings.setenv("PAYMETRICS__STORAGE__DB_URL", url)
    app_settings.setenv("PAYMETRICS__STORAGE__ARCHIVE_URL", "null")
    good = lines_of(simulated_lines(tmp_path, write_simulated, 20))
    bodies = [*good[:10], b"not json", b"\xff\xfe{}", b"{}", b"", b"   ", *good[10:], b""]
    registered_function()(host_events(bodies, first_sequence=1_000), HostContext())

    reasons = [(r[2], r[3]) for r in dump_tables(url)["failed_items"]]
    assert reasons == [
        (1_011, "invalid_json"),
        (1_012, "invalid_encoding"),
        (1_013, "missing_field"),
        (1_015, "invalid_json"),  # whitespace is a message; only an empty body is blank
    ]
    (checkpoint,) = dump_tables(url)["source_checkpoints"]
    assert checkpoint[2:4] == (1_000 + len(bodies), None)  # past the trailing blank event
    messages, normalized, duplicates, dead_lettered = checkpoint[5:]
    assert (messages, normalized + duplicates, dead_lettered) == (len(bodies) - 2, 20, 4)


# -- transient errors: raise, and the host retries -----------------------------------


def test_a_transient_commit_error_raises_and_stores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, write_simulated: Callable[..., int]
) -> None:
    caplog.set_level(logging.INFO, logger="paymetrics")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    lines = lines_of(simulated_lines(tmp_path, write_simulated, 100))
    down = [True]
    runtime = make_runtime(
        url, fault=lambda step, _: lost_connection() if down[0] and step == "commit" else None
    )
    events = host_events(lines)
    try:
        for retry_count, max_retry_count in [(0, -1), (50, -1), (3, 3)]:
            started = time.monotonic()
            with pytest.raises(BatchNotStored, match="server closed the connection") as info:
                handle_event_hub_batch(
                    events,
                    retry_count=retry_count,
                    max_retry_count=max_retry_count,
                    runtime=runtime,
                )
            assert info.value.transient
            assert time.monotonic() - started < 5  # retry_give_up_seconds, not 15 minutes
            tables = dump_tables(url)
            assert not tables["normalized_transactions"]
            assert not tables["failed_items"]  # never dead-lettered for an outage
            assert not tables["source_checkpoints"]
        assert "on the host's last retry: the host checkpoints past it" in caplog.text

        down[0] = False  # the database is back: the host's next retry goes through
        summary = handle_event_hub_batch(events, retry_count=4, max_retry_count=-1, runtime=runtime)
    finally:
        runtime.close()
    assert summary.normalized + summary.duplicates + summary.dead_lettered == 100
    assert dump_tables(url)["source_checkpoints"][0][2] == 100


def test_an_unreachable_postgres_raises_even_on_the_last_retry(
    tmp_path: Path, app_settings: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://paymetrics:s3cret@127.0.0.1:{free_port()}/paymetrics"
    app_settings.setenv("PAYMETRICS__STORAGE__DB_URL", url)
    function = registered_function()
    for retry_count, max_retry_count in [(0, -1), (5, 5)]:
        with pytest.raises(BatchNotStored) as info:
            function(host_events([b"{}"]), HostContext(retry_count, max_retry_count))
        assert info.value.transient
        assert "s3cret" not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__


# -- a poison batch: retried, then dead-lettered whole -------------------------------


def poisoned(url: str, lines: list[bytes]) -> None:
    """Batch 100..199 fails for a reason of its own: it is retried, then stored whole as
    `batch_failed` dead letters with the checkpoint past it, and the partition goes on."""
    runtime = make_runtime(
        url,
        fault=lambda step, first: poison() if step == "insert_events" and first == 101 else None,
    )
    pan = b'{"event_id": "evt_pan", "note": "card 4111 1111 1111 1111"}'
    batches = [lines[:100], [*lines[100:199], pan], lines[200:300]]

    def deliver(n: int, retry_count: int, max_retry_count: int = -1) -> BatchSummary:
        events = host_events(batches[n], first_sequence=100 * n)
        return handle_event_hub_batch(
            events, retry_count=retry_count, max_retry_count=max_retry_count, runtime=runtime
        )

    try:
        assert deliver(0, 0).normalized > 0
        before = dump_tables(url)
        for retry_count in range(5):  # dead_letter_after_retries = 5
            with pytest.raises(BatchNotStored, match="DataError: ValueError: out of range") as info:
                deliver(1, retry_count)
            assert not info.value.transient
            assert "payload" not in str(info.value)  # SQL parameters never leave
            assert dump_tables(url) == before

        summary = deliver(1, 5)
        assert summary.batch_failed
        assert (summary.events, summary.dead_lettered, summary.normalized) == (100, 100, 0)

        after = deliver(2, 0)  # the partition goes on
        assert not after.batch_failed
        assert after.normalized > 0
        assert deliver(1, 0).redelivered == 100  # and the poison batch is not read again
    finally:
        runtime.close()

    tables = dump_tables(url)
    failed = [r for r in tables["failed_items"] if r[3] == "batch_failed"]
    assert [r[2] for r in failed] == list(range(101, 201))
    assert {r[4] for r in failed} == {
        "the batch (partition 0 sequence 100..199) failed 6 times and was dead-lettered whole, "
        "unprocessed; last error: DataError: ValueError: out of range"
    }
    assert failed[-1][6] == '{"event_id":"evt_pan","note":"card 411111******1111"}'  # masked
    assert failed[0][6] == lines[100].decode()
    batch = [r for r in tables["ingest_batches"] if r[3] == 101]
    assert [(r[4], r[5], r[6], r[7], r[8]) for r in batch] == [(200, 100, 0, 0, 100)]
    (checkpoint,) = tables["source_checkpoints"]
    assert checkpoint[2] == 300


def test_a_poison_batch_is_dead_lettered_whole_on_sqlite(
    tmp_path: Path, write_simulated: Callable[..., int]
) -> None:
    poisoned(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        lines_of(simulated_lines(tmp_path, write_simulated, 300)),
    )


def test_a_poison_batch_is_dead_lettered_whole_on_postgres(
    tmp_path: Path, postgres_schema: Callable[[str], str], write_simulated: Callable[..., int]
) -> None:
    poisoned(postgres_schema("poison"), lines_of(simulated_lines(tmp_path, write_simulated, 300)))


def test_the_hosts_own_retry_limit_ends_a_poison_batch_sooner(
    tmp_path: Path, app_settings: pytest.MonkeyPatch, write_simulated: Callable[..., int]
) -> None:
    """Through the app: with a finite host policy its last retry dead-letters the batch."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    app_settings.setenv("PAYMETRICS__STORAGE__DB_URL", url)
    app_settings.setenv("PAYMETRICS__STORAGE__ARCHIVE_URL", "null")
    function = registered_function()
    function(host_events([b"{}"], first_sequence=0), HostContext())  # opens the runtime

    from paymetrics import azure_function

    runtime = azure_function.get_runtime()
    runtime.store = FaultyStore(
        runtime.store, lambda step, _: poison() if step == "insert_events" else None
    )
    events = host_events(lines_of(simulated_lines(tmp_path, write_simulated, 3)), first_sequence=1)
    with pytest.raises(BatchNotStored):
        function(events, HostContext(retry_count=1, max_retry_count=2))
    function(events, HostContext(retry_count=2, max_retry_count=2))
    failed = [r[3] for r in dump_tables(url)["failed_items"]]
    assert failed == ["missing_field", "batch_failed", "batch_failed", "batch_failed"]


def test_a_poison_batch_with_the_database_down_raises_and_stores_nothing(
    tmp_path: Path, write_simulated: Callable[..., int]
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    lines = lines_of(simulated_lines(tmp_path, write_simulated, 50))
    calls = {"load_state": 0}

    def fault(step: str, _: int | None) -> Exception | None:
        if step == "load_state":
            calls["load_state"] += 1
            return lost_connection() if calls["load_state"] > 1 else None
        return poison() if step == "insert_events" else None

    runtime = make_runtime(url, fault=fault)
    try:
        with pytest.raises(BatchNotStored, match="dead-lettering it failed too") as info:
            handle_event_hub_batch(
                host_events(lines), retry_count=9, max_retry_count=-1, runtime=runtime
            )
    finally:
        runtime.close()
    assert info.value.transient
    tables = dump_tables(url)
    assert not tables["failed_items"]
    assert not tables["source_checkpoints"]
