"""The Azure Functions Event Hubs trigger: each trigger batch through the same pipeline.

`azure_function/function_app.py` only calls `handle_event_hub_batch`. A trigger batch comes
from one partition (its id is in the trigger metadata, `PartitionContext.PartitionId`); it
becomes one `RawBatch` with positions = sequence number + 1 and the checkpoint after its
last event, under the source id of the long-running Event Hubs worker
(`eventhubs:{hub}?consumer_group={group}`), so the two share the database checkpoints.

What happens to a batch, and what the host sees:

* Events at or below the stored checkpoint are dropped and counted as `redelivered` (the
  host checkpoints only after the function returns; after a crash it delivers them again).
* Invalid events become dead letters, as in every run; the batch succeeds.
* A transient database or archive error is retried for `retry_give_up_seconds` (10 s by
  default, not the worker's 15 minutes), then `BatchNotStored` is raised and the host's
  retry policy runs the batch again. Nothing of it was committed.
* Any other error also raises, until the batch has been retried `dead_letter_after_retries`
  times (or the host's own retry limit is reached, when it has one). Then every message of
  it is stored in `failed_items` with reason `batch_failed`, and the checkpoint moves in
  the same transaction: a poison batch cannot block its partition.
* If the database is down at that point, it raises instead: nothing can be stored. The
  Event Hubs extension checkpoints a batch once its retry policy is exhausted, failed or
  not, so `function_app.py` retries without limit (`max_retry_count=-1`): the partition
  waits for the database and nothing is skipped. Under a finite policy a transient failure
  on the last retry is logged as an error naming the sequence numbers the host skips.

Exceptions that reach the host carry one line naming the cause, never SQL parameters or
payloads; the log gets one line per batch with counts only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paymetrics.config.loader import ConfigError
from paymetrics.events import Reason
from paymetrics.sources.base import Checkpoint, RawBatch, Source
from paymetrics.storage.base import (
    BatchCounts,
    CheckpointConflict,
    DeadLetters,
    PartitionState,
    StoreUnavailable,
    is_transient,
)

if TYPE_CHECKING:
    import azure.functions as func

    from paymetrics.archive import ParquetArchive
    from paymetrics.pipeline import Pipeline, PipelineOptions
    from paymetrics.storage.base import Store

__all__ = [
    "BatchNotStored",
    "BatchSummary",
    "FunctionSettings",
    "Runtime",
    "close_runtime",
    "get_runtime",
    "handle_event_hub_batch",
]

log = logging.getLogger("paymetrics.azure_function")

NAME_SETTING = "PAYMETRICS_EVENTHUB_NAME"
GROUP_SETTING = "PAYMETRICS_EVENTHUB_CONSUMER_GROUP"
GIVE_UP_SETTING = "PAYMETRICS_FUNCTION_RETRY_GIVE_UP_SECONDS"
DEAD_LETTER_SETTING = "PAYMETRICS_FUNCTION_DEAD_LETTER_AFTER_RETRIES"
DEFAULT_GIVE_UP_SECONDS = 10.0
DEFAULT_DEAD_LETTER_AFTER_RETRIES = 5


class BatchNotStored(RuntimeError):
    """The batch was not stored and the host should run it again.

    `transient`: the database or archive was away (retrying will do); otherwise the batch
    itself failed, and it is dead-lettered whole once the retry limit is reached.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class FunctionSettings:
    """The function's own app settings; the pipeline's come from `paymetrics.config`."""

    event_hub_name: str
    consumer_group: str = "$Default"
    #: A database or archive outage longer than this fails the invocation (the host retries).
    retry_give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS
    #: Host retries after which a batch failing for a non-transient reason is dead-lettered.
    dead_letter_after_retries: int = DEFAULT_DEAD_LETTER_AFTER_RETRIES

    @property
    def source_id(self) -> str:
        """The same id as the Event Hubs worker source: they share checkpoints."""
        return f"eventhubs:{self.event_hub_name}?consumer_group={self.consumer_group}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> FunctionSettings:
        """The settings from the app settings; `ConfigError` lists every problem."""
        problems: list[str] = []
        name = environ.get(NAME_SETTING, "").strip()
        if not name:
            problems.append(f"{NAME_SETTING}: not set (the event hub's name)")
        give_up = _number(environ, GIVE_UP_SETTING, DEFAULT_GIVE_UP_SECONDS, problems)
        after = _number(environ, DEAD_LETTER_SETTING, DEFAULT_DEAD_LETTER_AFTER_RETRIES, problems)
        if give_up <= 0:
            problems.append(f"{GIVE_UP_SETTING}: must be > 0, got {give_up:g}")
        if after < 0 or after != int(after):
            problems.append(f"{DEAD_LETTER_SETTING}: must be a whole number >= 0, got {after:g}")
        if problems:
            raise ConfigError(problems, "the function's app settings")
        return cls(
            event_hub_name=name,
            consumer_group=environ.get(GROUP_SETTING, "").strip() or "$Default",
            retry_give_up_seconds=give_up,
            dead_letter_after_retries=int(after),
        )


def _number(environ: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        problems.append(f"{name}: must be a number, got {raw!r}")
        return default


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What became of one trigger batch. `events` = `blank` + `redelivered` +
    `normalized` + `duplicates` + `dead_lettered`."""

    partition: str
    first_sequence: int | None
    last_sequence: int | None
    events: int
    #: Empty bodies: skipped and counted nowhere else (as the Event Hubs worker does).
    blank: int = 0
    #: At or below the stored checkpoint: stored by an earlier delivery, dropped.
    redelivered: int = 0
    normalized: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    #: The whole batch was dead-lettered with reason `batch_failed`.
    batch_failed: bool = False
    #: Sequence numbers between the stored checkpoint and this batch that never arrived
    #: (expired from the hub, or skipped by the host after a finite retry policy).
    skipped: int = 0
    seconds: float = 0.0

    def log_line(self) -> str:
        return (
            f"eventhubs batch partition={self.partition} "
            f"sequence={self.first_sequence}..{self.last_sequence} events={self.events} "
            f"blank={self.blank} redelivered={self.redelivered} normalized={self.normalized} "
            f"duplicates={self.duplicates} dead_lettered={self.dead_lettered} "
            f"batch_failed={str(self.batch_failed).lower()} skipped={self.skipped} "
            f"seconds={self.seconds:.3f}"
        )


# -- the process-wide runtime ---------------------------------------------------------


class Runtime:
    """What a worker process opens once and keeps: the store, the archive, the options.

    A `Pipeline` is made per invocation (`pipeline()`): `run` keeps per-run state on the
    instance, and the Python worker may run several partitions' batches on threads.
    """

    def __init__(
        self,
        store: Store,
        archive: ParquetArchive | None,
        options: PipelineOptions,
        settings: FunctionSettings,
    ) -> None:
        self.store = store
        self.archive = archive
        self.settings = settings
        # One batch per invocation: nothing to overlap a background commit with; and an
        # outage must fail the invocation soon, so the host's retry policy takes over.
        self.options = dataclasses.replace(
            options,
            commit_in_background=False,
            retry_give_up_seconds=settings.retry_give_up_seconds,
            retry_max_interval_seconds=min(
                options.retry_max_interval_seconds, settings.retry_give_up_seconds / 2
            ),
        )
        self.closed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        """Open everything from the app settings (`PAYMETRICS__SECTION__KEY`, or a file
        named by `PAYMETRICS_CONFIG`), creating or upgrading the schema as `run` does."""
        from paymetrics.archive import ParquetArchive
        from paymetrics.config import ConfigManager
        from paymetrics.storage import open_store

        environ = os.environ if environ is None else environ
        settings = FunctionSettings.from_environ(environ)
        manager = ConfigManager(
            environ=environ,
            applied_by=f"azure function, pid {os.getpid()} on {socket.gethostname()}",
        )
        try:
            config = manager.settings
            # The host collects records through the root logger: no handler of our own.
            logging.getLogger("paymetrics").setLevel(config.logging.level)
            store = open_store(
                config.storage.db_url.get_secret_value(),
                pool_size=config.storage.pool_size,
                pool_max_overflow=config.storage.pool_max_overflow,
                pool_timeout_seconds=config.storage.pool_timeout_seconds,
            )
            try:
                store.prepare()
                options = manager.attach(store, "azure function start")
                url = config.storage.archive_url
                archive = (
                    ParquetArchive(url, **config.storage.archive_storage_options()) if url else None
                )
            except BaseException:
                store.close()
                raise
        finally:
            manager.close()
        if store.url_for_display.startswith("sqlite"):
            log.warning("the database is SQLite: fine for `func start`, not for Azure")
        log.info("opened %s for %s", store.url_for_display, settings.source_id)
        return cls(store, archive, options, settings)

    def pipeline(self) -> Pipeline:
        from paymetrics.pipeline import Pipeline

        return Pipeline(self.store, self.archive, self.options)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store.close()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, opened on first use (and again after `close_runtime`)."""
    global _runtime
    with _runtime_lock:  # one opening per process, however many threads invoke at once
        if _runtime is None or _runtime.closed:
            _runtime = Runtime.from_environment()
        return _runtime


def close_runtime() -> None:
    """Close this process's runtime; the next invocation opens a new one."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None


# -- one trigger batch ---------------------------------------------------------------


def handle_event_hub_batch(
    events: Sequence[func.EventHubEvent],
    *,
    retry_count: int,
    max_retry_count: int,
    runtime: Runtime | None = None,
) -> BatchSummary:
    """Store one trigger batch exactly once; raises `BatchNotStored` for the host to retry.

    `retry_count` and `max_retry_count` come from `context.retry_context` (0 on the first
    attempt; -1: the host retries without limit).
    """
    started = time.perf_counter()
    try:
        runtime = runtime or get_runtime()
    except Exception as error:
        if isinstance(error, ConfigError):
            raise  # its message is written to be shown, and holds no secret
        raise BatchNotStored(
            f"cannot open the pipeline: {_one_line(error)}", transient=_transient(error)
        ) from None
    trigger = _Trigger.of(events, runtime.settings.source_id)
    if trigger.batch is None:
        summary = trigger.summary()
    else:
        source = _TriggerSource(trigger.batch)
        try:
            summary = _process(runtime, trigger, source)
        except Exception as error:
            summary = _failed(runtime, trigger, error, retry_count, max_retry_count)
    summary = dataclasses.replace(summary, seconds=time.perf_counter() - started)
    log.info("%s", summary.log_line())
    return summary


def _process(runtime: Runtime, trigger: _Trigger, source: _TriggerSource) -> BatchSummary:
    stats = runtime.pipeline().run(source)
    if source.redelivered:
        log.info(
            "partition %s: %d events up to sequence %d were stored already (redelivered); dropped",
            trigger.partition,
            source.redelivered,
            source.stored_position - 1 if source.stored_position is not None else -1,
        )
    return trigger.summary(
        redelivered=source.redelivered,
        normalized=stats.normalized,
        duplicates=stats.duplicates,
        dead_lettered=stats.dead_lettered,
        skipped=source.skipped,
    )


def _failed(
    runtime: Runtime,
    trigger: _Trigger,
    error: Exception,
    retry_count: int,
    max_retry_count: int,
) -> BatchSummary:
    """Raise for the host to retry, or (past the limit) dead-letter the batch whole."""
    cause = _one_line(error)
    where = f"partition {trigger.partition} sequence {trigger.first}..{trigger.last}"
    limit = runtime.settings.dead_letter_after_retries
    if max_retry_count >= 0:
        limit = min(limit, max_retry_count)
    host_gives_up = 0 <= max_retry_count <= retry_count
    if _transient(error):
        if host_gives_up:
            log.error(
                "%s not stored (%s) on the host's last retry: the host checkpoints past "
                "it, so these events are skipped; retry without limit (max_retry_count=-1)",
                where,
                cause,
            )
        else:
            log.warning("%s not stored (%s); the host retries it", where, cause)
        raise BatchNotStored(f"{where}: {cause}", transient=True) from None
    if retry_count < limit:
        log.warning(
            "%s failed (%s), attempt %d; dead-lettered whole after retry %d",
            where,
            cause,
            retry_count + 1,
            limit,
        )
        raise BatchNotStored(f"{where}: {cause}", transient=False) from None
    assert trigger.batch is not None
    message = (
        f"the batch ({where}) failed {retry_count + 1} times and was dead-lettered whole, "
        f"unprocessed; last error: {cause}"
    )
    try:
        unstored, stored = _dead_letter(runtime, trigger.batch, message)
    except Exception as second:
        log.error("%s could not be dead-lettered either (%s); the host retries it", where, cause)
        raise BatchNotStored(
            f"{where}: {cause}; dead-lettering it failed too: {_one_line(second)}",
            transient=_transient(second),
        ) from None
    log.error("%s dead-lettered whole (%d events): %s", where, unstored, cause)
    return trigger.summary(
        redelivered=len(trigger.batch) - unstored,
        dead_lettered=unstored,
        batch_failed=unstored > 0,
        skipped=_gap(stored, trigger.batch),
    )


def _dead_letter(runtime: Runtime, batch: RawBatch, message: str) -> tuple[int, int | None]:
    """Store the unstored part of `batch` as `batch_failed` dead letters and move the
    checkpoint past it, in one transaction; returns (events dead-lettered, stored position
    before)."""
    from paymetrics.mask import mask_batch
    from paymetrics.pipeline import dead_letter_payload

    store = runtime.store
    for _ in range(5):  # a checkpoint moved by another worker meanwhile: read it again
        previous = store.load_state(batch.source_id).get(batch.partition)
        stored = previous.position if previous else None
        part = _unstored(batch, stored)
        if part is None:
            return 0, stored
        masked, _ = mask_batch(part.messages)
        n = len(part)
        dead = DeadLetters(
            positions=list(part.positions),
            reasons=[str(Reason.BATCH_FAILED)] * n,
            messages=[message] * n,
            event_ids=[None] * n,
            payloads=[dead_letter_payload(m) for m in masked],
        )
        counts = BatchCounts(messages=n, normalized=0, duplicates=0, dead_lettered=n)
        before = previous or PartitionState(batch.partition, 0, None, None)
        state = PartitionState(
            partition=batch.partition,
            position=batch.checkpoint.position,
            byte_offset=None,
            watermark_us=before.watermark_us,
            messages=before.messages + n,
            normalized=before.normalized,
            duplicates=before.duplicates,
            dead_lettered=before.dead_lettered + n,
        )
        try:
            with store.transaction() as tx:
                batch_id = tx.start_batch(
                    batch.source_id,
                    batch.partition,
                    part.positions[0],
                    part.positions[-1],
                    runtime.options.config_version,
                )
                tx.add_dead_letters(batch.source_id, batch.partition, dead)
                tx.finish_batch(batch_id, batch.source_id, previous, state, counts)
        except CheckpointConflict:
            continue
        return n, stored
    raise CheckpointConflict(f"partition {batch.partition!r} kept moving under this worker")


@dataclass(frozen=True, slots=True)
class _Trigger:
    """A trigger batch: its partition, sequence range and counts, and its `RawBatch` of
    the non-blank events (None when every body is blank)."""

    partition: str
    first: int | None
    last: int | None
    events: int
    blank: int
    batch: RawBatch | None

    @classmethod
    def of(cls, events: Sequence[func.EventHubEvent], source_id: str) -> _Trigger:
        if not events:
            return cls("", None, None, 0, 0, None)
        partition = _partition_id(events[0])
        numbered = sorted((_sequence_number(e), e) for e in events)
        sequences = [s for s, _ in numbered]
        if len(set(sequences)) != len(sequences):
            raise ValueError(f"partition {partition}: a sequence number occurs twice in a batch")
        messages: list[bytes] = []
        positions: list[int] = []
        for sequence, event in numbered:
            body = event.get_body()
            if body:  # an empty body is a blank line, as in the Event Hubs worker source
                messages.append(body)
                positions.append(sequence + 1)
        first, last = sequences[0], sequences[-1]
        blank = len(events) - len(messages)
        if not messages:
            return cls(partition, first, last, len(events), blank, None)
        checkpoint = Checkpoint(partition, last + 1)
        batch = RawBatch(source_id, partition, messages, positions, checkpoint)
        return cls(partition, first, last, len(events), blank, batch)

    def summary(self, **counts: Any) -> BatchSummary:
        return BatchSummary(
            self.partition, self.first, self.last, self.events, self.blank, **counts
        )


def _partition_id(event: func.EventHubEvent) -> str:
    """`PartitionContext.PartitionId` of the trigger metadata: the host sends it with
    every invocation, and for cardinality many all events share the same metadata."""
    metadata = event.metadata or {}
    context = metadata.get("PartitionContext")
    if isinstance(context, Mapping):
        for key, value in context.items():
            if key.lower() == "partitionid" and value is not None and str(value) != "":
                return str(value)
    raise ValueError(
        "the trigger metadata has no PartitionContext.PartitionId: is this an Event Hubs "
        "trigger with cardinality many?"
    )


def _sequence_number(event: func.EventHubEvent) -> int:
    sequence = event.sequence_number
    if sequence is None:
        raise ValueError("an event of the trigger batch has no sequence number")
    return int(sequence)


class _TriggerSource(Source):
    """The one batch of an invocation, less what the stored checkpoint already covers."""

    rebalancing = True  # another instance (or `paymetrics run`) may store it meanwhile

    def __init__(self, batch: RawBatch) -> None:
        self.source_id = batch.source_id
        self.batch = batch
        self.stored_position: int | None = None
        self.redelivered = 0
        self.skipped = 0

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        stored = checkpoints.get(self.batch.partition)
        self.stored_position = stored.position if stored else None
        self.skipped = _gap(self.stored_position, self.batch)

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        part = _unstored(self.batch, self.stored_position)
        self.redelivered = len(self.batch) - (len(part) if part is not None else 0)
        if part is None:
            return
        for start in range(0, len(part), max_events):
            messages = part.messages[start : start + max_events]
            positions = part.positions[start : start + max_events]
            end = start + max_events >= len(part)
            checkpoint = part.checkpoint if end else Checkpoint(part.partition, positions[-1])
            yield RawBatch(part.source_id, part.partition, messages, positions, checkpoint)


def _unstored(batch: RawBatch, stored_position: int | None) -> RawBatch | None:
    """The events of `batch` after the stored checkpoint (`batch` itself if all are);
    None when every one is at or below it."""
    if stored_position is None or batch.positions[0] > stored_position:
        return batch
    keep = [i for i, p in enumerate(batch.positions) if p > stored_position]
    if not keep:
        return None
    return dataclasses.replace(
        batch,
        messages=[batch.messages[i] for i in keep],
        positions=[batch.positions[i] for i in keep],
    )


def _gap(stored_position: int | None, batch: RawBatch) -> int:
    """Positions between the stored checkpoint and the batch's first event, logged."""
    if stored_position is None or batch.positions[0] <= stored_position + 1:
        return 0
    missing = batch.positions[0] - stored_position - 1
    log.warning(
        "partition %s: %d events (sequence %d..%d) were never stored: expired from the hub, "
        "blank, or skipped by the host after its retries",
        batch.partition,
        missing,
        stored_position,
        batch.positions[0] - 2,
    )
    return missing


def _transient(error: BaseException) -> bool:
    """Whether retrying later can cure it: the database or archive away, or a checkpoint
    race with another worker (never a reason to dead-letter)."""
    from paymetrics.archive import ArchiveUnavailable

    return (
        is_transient(error)
        or isinstance(error, StoreUnavailable | ArchiveUnavailable | CheckpointConflict)
        or (isinstance(error, BatchNotStored) and error.transient)
    )


def _one_line(error: BaseException) -> str:
    """The first line of an error's own message: SQLAlchemy appends the SQL and its
    parameters (event data) on later lines, and those must not reach the logs."""
    orig = getattr(error, "orig", None)
    lines = str(orig if orig is not None else error).strip().splitlines()
    kind = type(error).__name__ + (f": {type(orig).__name__}" if orig is not None else "")
    return f"{kind}: {lines[0] if lines else ''}"[:300]
