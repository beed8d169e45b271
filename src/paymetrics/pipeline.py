"""The pipeline: wires the stages for one batch at a time. It does no I/O of its own.

Per batch: mask → decode → normalize → validate → lateness → raw archive →
in-batch de-dup → one store transaction (dead letters, new events, metric partials,
checkpoint) → acknowledge the source. Every non-blank message ends up exactly
once as a stored event, a duplicate, or a dead letter; `BatchReport` counts them.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import gc
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.archive import ARCHIVE_SCHEMA, ArchiveError, ArchiveUnavailable, ParquetArchive
from paymetrics.dead_letter_topic import DeadLetterTopic, DeadLetterTopicUnavailable
from paymetrics.decode import Rejects, as_text, decode
from paymetrics.events import MAX_EVENT_BYTES, Reason
from paymetrics.mask import mask_batch
from paymetrics.metrics.dynamic import MetricRule, aggregate_rules
from paymetrics.metrics.extractors import Extractor, extract_all
from paymetrics.metrics.histograms import Histogram, histogram_buckets
from paymetrics.metrics.payment_5m import Partials, aggregate
from paymetrics.metrics.windows import US_PER_SECOND, from_epoch_us
from paymetrics.normalize import normalize
from paymetrics.sources.base import Checkpoint, RawBatch, Source
from paymetrics.storage.base import (
    BatchCounts,
    CheckpointConflict,
    DeadLetters,
    PartitionState,
    Store,
    StoreUnavailable,
    is_transient,
)
from paymetrics.validate import DEFAULT_RULES, Rule, resolve_rules, validate

if TYPE_CHECKING:
    from paymetrics.compliance import Compliance

__all__ = [
    "BatchReport",
    "Pipeline",
    "PipelineOptions",
    "RunStats",
    "first_occurrences",
    "tag_rule_partials",
]

log = logging.getLogger("paymetrics.pipeline")

DEFAULT_MAX_LATENESS_SECONDS = 7 * 86_400
STAGES = (
    "read",
    "mask",
    "decode",
    "normalize",
    "validate",
    "archive",
    "dead_letter_topic",
    "aggregate",
    "store",
)


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """What decides the numbers; swapped whole between batches (`Pipeline.reconfigure`)."""

    batch_max_events: int = 50_000
    max_lateness_seconds: float = DEFAULT_MAX_LATENESS_SECONDS
    rules: Sequence[str | Rule] = DEFAULT_RULES
    metric_rules: Sequence[MetricRule] = ()
    #: Plugin metric extractors; their rows go to `dynamic_metrics` with config_version 0.
    extractors: Sequence[Extractor] = ()
    #: Config-defined fixed-bucket histograms, added to `aggregate_histograms`.
    histograms: Sequence[Histogram] = ()
    #: Each metric rule's version (the config version its definition first appeared in).
    metric_versions: Mapping[str, int] = field(default_factory=dict)
    #: The config version in effect, recorded on every batch.
    config_version: int | None = None
    #: The enabled compliance rules (None: none enabled, nothing is evaluated).
    compliance: Compliance | None = None
    #: Commit each batch in a writer thread while the next one is prepared (decode,
    #: validate, archive): database time then overlaps with Python time. Commits stay
    #: one at a time and in order, and a batch is acknowledged only after its commit.
    commit_in_background: bool = True
    #: First wait after a failed batch; doubles up to `retry_max_interval_seconds`.
    retry_initial_seconds: float = 0.5
    retry_max_interval_seconds: float = 30.0
    #: An outage longer than this ends the run (exit 2) instead of waiting on.
    retry_give_up_seconds: float = 900.0

    def __post_init__(self) -> None:
        if self.batch_max_events < 1:
            raise ValueError(f"batch_max_events must be at least 1, got {self.batch_max_events}")
        if self.max_lateness_seconds < 0:
            raise ValueError(f"max_lateness_seconds must be >= 0, got {self.max_lateness_seconds}")


@dataclass(frozen=True, slots=True)
class BatchReport:
    partition: str
    counts: BatchCounts
    authorizations: int
    approved: int
    metric_rows: int
    #: Dead letters of this batch by reason code.
    reasons: Mapping[str, int] = field(default_factory=dict)
    #: The partition's event-time watermark after the batch (µs since the epoch).
    watermark_us: int | None = None
    #: Seconds from reading the batch to its commit (set by `run`).
    seconds: float = 0.0
    #: New compliance alerts raised by the batch.
    alerts: int = 0


@dataclass(slots=True)
class RunStats:
    messages: int = 0
    normalized: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    metric_rows_touched: int = 0
    authorizations: int = 0
    approved: int = 0
    elapsed_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, report: BatchReport) -> None:
        self.messages += report.counts.messages
        self.normalized += report.counts.normalized
        self.duplicates += report.counts.duplicates
        self.dead_lettered += report.counts.dead_lettered
        self.batches += 1
        self.metric_rows_touched += report.metric_rows
        self.authorizations += report.authorizations
        self.approved += report.approved

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.authorizations if self.authorizations else None

    @property
    def events_per_second(self) -> float:
        return self.messages / self.elapsed_seconds if self.elapsed_seconds else 0.0


def dead_letter_payload(message: bytes) -> str:
    """The dead letter's payload as text; a raw NUL byte is written `\x00` (no text
    column of PostgreSQL can hold it)."""
    if len(message) > MAX_EVENT_BYTES:
        message = message[:MAX_EVENT_BYTES]
    return message.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


def first_occurrences(ids: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    """True at the first row of each event_id (in batch order)."""
    n = len(ids)
    if pc.count_distinct(ids).as_py() == n:
        return np.ones(n, dtype=bool)
    rows = pa.table({"id": ids, "row": pa.array(np.arange(n))})
    first = rows.group_by("id", use_threads=False).aggregate([("row", "min")])["row_min"]
    out = np.zeros(n, dtype=bool)
    out[first.to_numpy()] = True
    return out


class Pipeline:
    """Runs sources into a store (and an archive), one transaction per batch."""

    def __init__(
        self,
        store: Store,
        archive: ParquetArchive | None,
        options: PipelineOptions | None = None,
        *,
        dead_letter_topic: DeadLetterTopic | None = None,
    ) -> None:
        self.store = store
        self.archive = archive
        self.dead_letter_topic = dead_letter_topic
        self.reconfigure(options or PipelineOptions())

    _should_stop: Callable[[], bool] = staticmethod(lambda: False)  # set by `run`
    _rebalancing = False  # set by `run`: the source's partitions may move between workers

    def reconfigure(self, options: PipelineOptions) -> None:
        """Use `options` from the next batch on. Call it between batches only."""
        missing = {r.name for r in options.metric_rules} - set(options.metric_versions)
        if missing and options.config_version is not None:
            raise ValueError(f"no version given for metric rules {sorted(missing)}")
        if options.compliance is not None and options.compliance.reads_customer_history:
            self.store.prepare_compliance()
        self._compiled = _Compiled(
            options=options,
            rules=tuple(resolve_rules(options.rules)),
            max_lateness_us=int(options.max_lateness_seconds * US_PER_SECOND),
        )

    @property
    def options(self) -> PipelineOptions:
        return self._compiled.options

    def run(
        self,
        source: Source,
        *,
        on_batch: Callable[[BatchReport], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        between_batches: Callable[[Pipeline], None] | None = None,
    ) -> RunStats:
        """Process `source` to its end (or until `should_stop()` between batches).

        `between_batches(self)` runs before each batch is read: the one place where
        configuration may change (hot reload), so no batch sees two configurations.
        """
        stats = RunStats()
        self._should_stop = should_stop
        self._rebalancing = source.rebalancing
        source.should_stop = should_stop  # a broker source polls; it must hear SIGTERM
        states = self.store.load_state(source.source_id)
        source.open({p: Checkpoint(p, s.position, s.byte_offset) for p, s in states.items()})
        # Lateness is judged at preparation, which may run one batch ahead of the commits.
        marks = {p: s.watermark_us for p, s in states.items()}
        started = time.perf_counter()
        batches = source.batches(self.options.batch_max_events)
        background = self.options.commit_in_background
        writer = ThreadPoolExecutor(1, "paymetrics-commit") if background else None
        pending: tuple[RawBatch, Future[tuple[BatchReport, PartitionState]], float] | None = None

        def finish(
            batch: RawBatch, done: Future[tuple[BatchReport, PartitionState]], read_at: float
        ) -> None:
            report, states[batch.partition] = done.result()
            source.ack(batch)  # only after its transaction committed
            stats.add(report)
            if on_batch is not None:
                on_batch(dataclasses.replace(report, seconds=time.perf_counter() - read_at))

        def settle() -> None:
            """Acknowledge the batch in flight once its commit is done: called before each
            read and by a broker source while it waits, so that the last batch before a
            lull is acknowledged (offsets, metrics) without waiting for the next one."""
            nonlocal pending
            if pending is not None and pending[1].done():
                done, pending = pending, None
                finish(*done)

        source.on_idle = settle
        gc_was_enabled = gc.isenabled()
        gc.disable()  # see _sweep
        try:
            while not should_stop():
                if between_batches is not None:
                    between_batches(self)
                settle()
                t0 = time.perf_counter()
                batch = next(batches, None)
                stats.stage_seconds["read"] += time.perf_counter() - t0
                if batch is None:
                    break
                prepared = self.prepare(batch, marks.get(batch.partition), stats.stage_seconds)
                marks[batch.partition] = prepared.watermark
                if writer is None:
                    report, states[batch.partition] = self._commit_with_retry(
                        prepared, states, stats.stage_seconds, should_stop
                    )
                    source.ack(batch)
                    stats.add(report)
                    if on_batch is not None:
                        on_batch(dataclasses.replace(report, seconds=time.perf_counter() - t0))
                else:
                    if pending is not None:
                        finish(*pending)
                    future = writer.submit(
                        self._commit_with_retry, prepared, states, stats.stage_seconds, should_stop
                    )
                    pending = (batch, future, t0)
                _sweep(gc_was_enabled)
            if pending is not None:
                finish(*pending)
                pending = None
        finally:
            if writer is not None:
                if pending is not None:  # an error elsewhere: let the commit in flight end
                    pending[1].exception()
                writer.shutdown(wait=True)
            if gc_was_enabled:
                gc.enable()
        stats.elapsed_seconds = time.perf_counter() - started
        return stats

    def _commit_with_retry(
        self,
        prepared: _Prepared,
        states: dict[str, PartitionState],
        timings: dict[str, float],
        should_stop: Callable[[], bool],
    ) -> tuple[BatchReport, PartitionState]:
        """`commit` the batch, retrying while the database is away.

        When a connection drops during COMMIT the outcome is unknown, so each retry
        first reads the checkpoint back: a batch already stored is not stored twice.
        """
        batch = prepared.batch
        rebalancing = self._rebalancing

        def attempt(number: int) -> tuple[BatchReport, PartitionState]:
            fresh = bool(number)
            for _ in range(5):  # a checkpoint race with another worker settles in a round or two
                if fresh:
                    states.update(self.store.load_state(batch.source_id))
                if fresh or rebalancing:  # a redelivery may trail what is known stored
                    done = self._already_stored(
                        batch, states, "by another worker" if rebalancing else None
                    )
                    if done is not None:
                        return done, states[batch.partition]
                try:
                    return self._commit_on(prepared, states.get(batch.partition), timings)
                except CheckpointConflict:
                    if not rebalancing:
                        raise
                    fresh = True
            raise CheckpointConflict(
                f"partition {batch.partition!r} of {batch.source_id!r} kept moving under this "
                "worker; it stopped without storing its batch"
            )

        return _retrying(attempt, "database", batch, prepared.compiled.options, should_stop)

    def _commit_on(
        self,
        prepared: _Prepared,
        previous: PartitionState | None,
        timings: dict[str, float],
    ) -> tuple[BatchReport, PartitionState]:
        """Commit on top of `previous`, judging lateness again if it was judged against
        another watermark (the partition moved between workers in between)."""
        stored = previous.watermark_us if previous else None
        batch = prepared.batch
        head = 0  # messages at its start that another worker stored already
        if self._rebalancing and previous is not None and batch.positions[0] <= previous.position:
            head = bisect.bisect_right(batch.positions, previous.position)
            if head == len(batch.positions):  # only blank messages past the checkpoint
                counts = BatchCounts(len(batch), 0, len(batch), 0)
                return BatchReport(
                    batch.partition, counts, 0, 0, 0, watermark_us=previous.watermark_us
                ), previous
            log.warning(
                "batch %s..%s of %s: up to %s was stored already by another worker; "
                "storing the rest",
                batch.positions[0],
                batch.positions[-1],
                batch.partition,
                previous.position,
            )
            batch = dataclasses.replace(
                batch, messages=batch.messages[head:], positions=batch.positions[head:]
            )
            prepared = self.prepare(batch, stored, timings)
        elif prepared.basis != stored:
            log.info(
                "partition %s: judging batch %s..%s again against the stored watermark",
                batch.partition,
                batch.positions[0],
                batch.positions[-1],
            )
            prepared = self.prepare(batch, stored, timings)
        report, state = self.commit(prepared, previous, timings)
        if head:  # for this worker, the redelivered head is duplicates (as in _already_stored)
            c = report.counts
            counts = BatchCounts(
                c.messages + head, c.normalized, c.duplicates + head, c.dead_lettered
            )
            report = dataclasses.replace(report, counts=counts)
        return report, state

    def _already_stored(
        self, batch: RawBatch, states: dict[str, PartitionState], by: str | None = None
    ) -> BatchReport | None:
        """A report for `batch` if it is stored already: an earlier attempt's COMMIT went
        through after all, or (`by` another worker) a worker that owned the partition."""
        stored = states.get(batch.partition)
        if stored is None or stored.position < batch.checkpoint.position:
            return None
        if by is None:  # our own commit: its counts are ours
            counts = self.store.committed_batch(
                batch.source_id, batch.partition, batch.positions[0], batch.positions[-1]
            ) or BatchCounts(len(batch), 0, 0, 0)
        else:  # for this worker, a redelivery of what another stored: all duplicates
            counts = BatchCounts(len(batch), 0, len(batch), 0)
        log.warning(
            "batch %s..%s of %s was stored already %s; not storing it again",
            batch.positions[0],
            batch.positions[-1],
            batch.partition,
            by or "(its COMMIT went through before the connection dropped)",
        )
        return BatchReport(batch.partition, counts, 0, 0, 0, watermark_us=stored.watermark_us)

    def process(
        self,
        batch: RawBatch,
        previous: PartitionState | None,
        timings: dict[str, float] | None = None,
    ) -> tuple[BatchReport, PartitionState]:
        """Process and store one batch; returns its report and the partition's new state.

        `previous` is the partition's stored state (None before its first batch).
        """
        prepared = self.prepare(batch, previous.watermark_us if previous else None, timings)
        return self.commit(prepared, previous, timings)

    def prepare(
        self,
        batch: RawBatch,
        watermark_us: int | None,
        timings: dict[str, float] | None = None,
    ) -> _Prepared:
        """Everything before the transaction: mask, decode, normalize, validate, lateness,
        archive. Needs no database, so it may run while the previous batch commits."""
        compiled = self._compiled  # one configuration for the whole batch
        clock = _Stopwatch(timings)
        masked, pan_counts = mask_batch(batch.messages)
        clock.lap("mask")
        rejects = Rejects()
        text, bad_utf8 = as_text(masked)
        decoded = decode(masked, [len(m) for m in batch.messages], bad_utf8, rejects)
        clock.lap("decode")
        positions = np.asarray(batch.positions, dtype=np.int64)
        table = normalize(decoded.events, decoded.index, positions, pan_counts)
        clock.lap("normalize")
        table = table.filter(pa.array(validate(table, compiled.rules, rejects)))
        table, watermark = _lateness(table, watermark_us, compiled.max_lateness_us, rejects)
        clock.lap("validate")
        if self.archive is not None:
            _retrying(
                lambda _: self._archive(batch, table, text),
                "archive",
                batch,
                compiled.options,
                self._should_stop,
            )
        clock.lap("archive")
        unique = table.filter(pa.array(first_occurrences(table["event_id"])))
        order = sorted(range(len(rejects)), key=rejects.index.__getitem__)
        dead = DeadLetters(
            positions=[batch.positions[rejects.index[k]] for k in order],
            reasons=[str(rejects.reason[k]) for k in order],
            messages=[rejects.message[k] for k in order],
            event_ids=[rejects.event_id[k] for k in order],
            payloads=[dead_letter_payload(masked[rejects.index[k]]) for k in order],
        )
        clock.lap("validate")  # in-batch de-duplication and the dead-letter rows
        topic = self.dead_letter_topic
        if topic is not None and len(dead):  # before the commit: at least once
            _retrying(
                lambda _: topic.publish(batch.source_id, batch.partition, dead),
                "dead-letter topic",
                batch,
                compiled.options,
                self._should_stop,
            )
        clock.lap("dead_letter_topic")
        aggregates = _Aggregates.of(unique, compiled.options)
        clock.lap("aggregate")
        return _Prepared(
            batch, compiled, unique, table.num_rows, dead, watermark, watermark_us, aggregates
        )

    def commit(
        self,
        prepared: _Prepared,
        previous: PartitionState | None,
        timings: dict[str, float] | None = None,
    ) -> tuple[BatchReport, PartitionState]:
        """The batch's one transaction; returns its report and the partition's new state."""
        batch = prepared.batch
        state = previous or PartitionState(batch.partition, 0, None, None)
        clock = _Stopwatch(timings)
        with self.store.transaction() as tx:
            options = prepared.compiled.options
            batch_id = tx.start_batch(
                batch.source_id,
                batch.partition,
                batch.positions[0],
                batch.positions[-1],
                options.config_version,
            )
            tx.add_dead_letters(batch.source_id, batch.partition, prepared.dead)
            new = tx.insert_events(prepared.unique, batch_id)
            if new.all():
                stored, aggregates = prepared.unique, prepared.aggregates
            else:  # some were stored before (a redelivery across batches)
                stored = prepared.unique.filter(pa.array(new))
                aggregates = _Aggregates.of(stored, options)
            partials = aggregates.partials
            tx.apply_payment_metrics(partials)
            if aggregates.dynamic is not None:
                tx.apply_dynamic_metrics(aggregates.dynamic)
            if aggregates.histograms is not None:
                tx.add_histogram_buckets(aggregates.histograms)
            alerts = 0
            if options.compliance is not None:
                alerts = tx.apply_compliance(
                    options.compliance,
                    stored,
                    source_id=batch.source_id,
                    partition=batch.partition,
                    previous_watermark_us=state.watermark_us,
                    watermark_us=prepared.watermark,
                    config_version=options.config_version,
                )
            normalized = int(new.sum())
            counts = BatchCounts(
                messages=len(batch),
                normalized=normalized,
                duplicates=prepared.valid_rows - normalized,
                dead_lettered=len(prepared.dead),
            )
            new_state = PartitionState(
                partition=batch.partition,
                position=batch.checkpoint.position,
                byte_offset=batch.checkpoint.byte_offset,
                watermark_us=prepared.watermark,
                messages=state.messages + counts.messages,
                normalized=state.normalized + counts.normalized,
                duplicates=state.duplicates + counts.duplicates,
                dead_lettered=state.dead_lettered + counts.dead_lettered,
            )
            tx.finish_batch(batch_id, batch.source_id, previous, new_state, counts)
        clock.lap("store")
        rows = partials.rows
        report = BatchReport(
            partition=batch.partition,
            counts=counts,
            authorizations=int(pc.sum(rows["authorizations"]).as_py() or 0),
            approved=int(pc.sum(rows["approved"]).as_py() or 0),
            metric_rows=rows.num_rows,
            reasons=Counter(prepared.dead.reasons),
            watermark_us=new_state.watermark_us,
            alerts=alerts,
        )
        return report, new_state

    def _archive(self, batch: RawBatch, table: pa.Table, text: pa.StringArray) -> None:
        try:
            self._write_archive(batch, table, text)
        except (ArchiveError, ValueError, TypeError, pa.ArrowInvalid):
            raise
        except Exception as error:  # an fsspec backend's own error type: may pass
            raise ArchiveUnavailable(_one_line(error)) from error

    def _write_archive(self, batch: RawBatch, table: pa.Table, text: pa.StringArray) -> None:
        assert self.archive is not None
        index = table["message_index"]
        payload = text.take(index)
        rows = pa.table(
            {
                "event_id": table["event_id"],
                "event_type": table["event_type"],
                "transaction_id": table["transaction_id"],
                "merchant_id": table["merchant_id"],
                "occurred_at": table["occurred_at"],
                "source_id": _repeat(batch.source_id, table.num_rows),
                "partition": _repeat(batch.partition, table.num_rows),
                "position": table["source_position"],
                "pan_exposure": table["pan_exposure"],
                "payload": payload,
            },
            schema=ARCHIVE_SCHEMA,
        )
        self.archive.write(
            rows,
            source_id=batch.source_id,
            partition=batch.partition,
            first_position=batch.positions[0],
            last_position=batch.positions[-1],
        )


def _lateness(
    table: pa.Table, watermark_us: int | None, max_lateness_us: int, rejects: Rejects
) -> tuple[pa.Table, int | None]:
    """Dead-letter events older than the newest one seen before them by over the limit."""
    if table.num_rows == 0:
        return table, watermark_us
    occurred = table["occurred_at"].cast(pa.int64()).to_numpy()
    floor = np.iinfo(np.int64).min if watermark_us is None else watermark_us
    newest_before = np.empty_like(occurred)
    newest_before[0] = floor
    np.maximum.accumulate(occurred[:-1], out=newest_before[1:])
    np.maximum(newest_before, floor, out=newest_before)
    late = (newest_before != np.iinfo(np.int64).min) & (occurred < newest_before - max_lateness_us)
    watermark = int(max(occurred.max(), floor))
    if not late.any():
        return table, watermark
    index = table["message_index"].to_numpy()
    ids = table["event_id"]
    limit = dt.timedelta(microseconds=max_lateness_us)
    for row in np.flatnonzero(late):
        at = from_epoch_us(int(occurred[row]))
        newest = from_epoch_us(int(newest_before[row]))
        rejects.add(
            int(index[row]),
            Reason.TOO_LATE,
            f"occurred_at: {at.isoformat()} is {newest - at} older than the newest event "
            f"already seen on this partition ({newest.isoformat()}); "
            f"the maximum lateness is {limit}",
            ids[int(row)].as_py(),
        )
    return table.filter(pa.array(~late)), watermark


def tag_rule_partials(partials: pa.Table, options: PipelineOptions) -> pa.Table:
    """Add each config rule's `aggregate` and `config_version` (the rule's version) to its
    partials (PARTIAL_SCHEMA rows): what `dynamic_metrics` stores besides the partials."""
    names = partials["metric_name"]
    aggregates = {r.name: r.aggregate for r in options.metric_rules}
    keys = pa.array(list(aggregates), pa.string())
    at = pc.index_in(names, value_set=keys)
    versions = pa.array([options.metric_versions.get(n, 0) for n in aggregates], pa.int64())
    partials = partials.append_column(
        "aggregate", pa.array(list(aggregates.values()), pa.string()).take(at)
    )
    return partials.append_column("config_version", versions.take(at))


def _dynamic_partials(stored: pa.Table, options: PipelineOptions) -> pa.Table:
    """Config-defined metric partials of the new events, tagged with each rule's version."""
    partials = tag_rule_partials(aggregate_rules(stored, options.metric_rules), options)
    if not options.extractors:
        return partials
    extracted = extract_all(stored, options.extractors)
    kinds = {e.name: e.aggregate for e in options.extractors}
    at = pc.index_in(extracted["metric_name"], value_set=pa.array(list(kinds), pa.string()))
    extracted = extracted.append_column(
        "aggregate", pa.array(list(kinds.values()), pa.string()).take(at)
    )
    extracted = extracted.append_column(
        "config_version", pa.repeat(pa.scalar(0, pa.int64()), extracted.num_rows)
    )
    return pa.concat_tables([partials, extracted])


T = TypeVar("T")


def _retrying(
    action: Callable[[int], T],
    what: str,
    batch: RawBatch,
    options: PipelineOptions,
    should_stop: Callable[[], bool],
) -> T:
    """`action(attempt)` until it succeeds, while its failures are transient.

    Capped exponential backoff with jitter; one log line when an outage starts and one
    when it ends; after `retry_give_up_seconds` a `StoreUnavailable` naming `what`.
    """
    outage_started: float | None = None
    attempt = 0
    while True:
        try:
            result = action(attempt)
        except Exception as error:
            if not (
                is_transient(error)
                or isinstance(error, ArchiveUnavailable | DeadLetterTopicUnavailable)
            ):
                raise
            cause = _one_line(error)
            now = time.monotonic()
            if outage_started is None:
                outage_started = now
                log.warning(
                    "%s unavailable (%s); retrying batch %s..%s of %s with backoff",
                    what,
                    cause,
                    batch.positions[0],
                    batch.positions[-1],
                    batch.partition,
                )
            waited = now - outage_started
            if waited >= options.retry_give_up_seconds:
                raise StoreUnavailable(
                    f"{what}: gave up after {waited:.0f} s of retries (retry_give_up_seconds="
                    f"{options.retry_give_up_seconds:g}); last error: {cause}; "
                    "nothing past the last checkpoint was acknowledged"
                ) from None
            cap = min(
                options.retry_max_interval_seconds, options.retry_initial_seconds * 2**attempt
            )
            pause = min(random.uniform(cap / 2, cap), options.retry_give_up_seconds - waited)
            deadline = time.monotonic() + max(pause, 0.0)
            while time.monotonic() < deadline:
                if should_stop():
                    raise StoreUnavailable(
                        f"{what}: stopped during an outage ({cause}); the batch in flight was "
                        "not stored and will be processed by the next run"
                    ) from None
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
            attempt += 1
            continue
        if outage_started is not None:
            log.warning(
                "%s available again after %.1f s and %d retries; batch %s..%s went through",
                what,
                time.monotonic() - outage_started,
                attempt,
                batch.positions[0],
                batch.positions[-1],
            )
        return result


def _one_line(error: BaseException) -> str:
    """The first line of an error's own message (SQLAlchemy appends SQL and links)."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip().splitlines()
    return f"{type(orig or error).__name__}: {text[0] if text else ''}"[:300]


@dataclass(frozen=True, slots=True)
class _Compiled:
    options: PipelineOptions
    rules: tuple[Rule, ...]
    max_lateness_us: int


def _sweep(enabled: bool) -> None:
    """Sweep the young generations after a batch (the collector is off inside `run`).

    A batch allocates hundreds of thousands of short-lived containers and no reference
    cycles; with automatic collection CPython would run hundreds of passes over them per
    batch (measured: building the SQLite rows took 2.7 µs per event with it, 0.6–0.9 µs
    without). Turning it off for the whole run, not per batch, keeps the preparing and
    the committing thread from switching it on under each other.
    """
    if enabled:
        gc.collect(1)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch ready for its transaction."""

    batch: RawBatch
    compiled: _Compiled
    unique: pa.Table
    valid_rows: int
    dead: DeadLetters
    watermark: int | None
    #: The partition watermark lateness was judged against.
    basis: int | None
    #: The aggregates of `unique`, computed before the transaction: they are the batch's
    #: when the store reports every row of `unique` new (almost always: redeliveries
    #: within the batch are already gone), and are recomputed otherwise.
    aggregates: _Aggregates


@dataclass(frozen=True, slots=True)
class _Aggregates:
    """What a batch's new events add: 5-minute metrics, rule partials, histograms."""

    partials: Partials
    dynamic: pa.Table | None
    histograms: pa.Table | None

    @classmethod
    def of(cls, events: pa.Table, options: PipelineOptions) -> _Aggregates:
        return cls(
            partials=aggregate(events),
            dynamic=_dynamic_partials(events, options)
            if options.metric_rules or options.extractors
            else None,
            histograms=histogram_buckets(events, options.histograms)
            if options.histograms
            else None,
        )


def _repeat(value: str, n: int) -> pa.Array:
    """A constant string column without n Python references (dictionary-decoded)."""
    indices = pa.array(np.zeros(n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value])).dictionary_decode()


class _Stopwatch:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now
