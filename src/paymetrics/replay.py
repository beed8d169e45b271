"""`paymetrics replay`: recompute config-defined metrics (and compliance alerts) for a time
range from the raw archive, after a rule changed or to backfill a new rule.

The archive holds every valid, in-time event as delivered (duplicates once per delivery,
payloads already masked), so replaying it gives what the live pipeline would have
stored with today's rules: payloads are decoded and normalized again, de-duplicated by
`event_id` (first archived copy wins, as in the store), and aggregated with the same
vectorized code. Each metric's rows whose window starts in the range (widened outward to
the metric's window) are deleted, whatever their config version or window width, and the
recomputed rows are written with the rule's current version, in one transaction: a replay
run twice leaves the same rows, and a failed one leaves the old rows.

Alerts are only ever added (ON CONFLICT DO NOTHING on rule × subject × period): an alert
someone may already have acted on is a record, not a metric, and is never deleted.
Counter rules count the replayed events alone (in memory), so a period the range covers
only in part can miss an alert but never raise a false one; the range is widened to
whole periods for that reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from paymetrics.compliance import Alert
from paymetrics.compliance.base import HISTORY_SCHEMA
from paymetrics.decode import Rejects, decode
from paymetrics.metrics.dynamic import PARTIAL_SCHEMA, aggregate_rules, merge_partials
from paymetrics.metrics.windows import floor_to_window, from_epoch_us, to_epoch_us
from paymetrics.normalize import normalize
from paymetrics.pipeline import PipelineOptions, first_occurrences, tag_rule_partials
from paymetrics.storage.sql import SqlStore, SqlTransaction

__all__ = ["ReplayError", "ReplayReport", "replay"]

log = logging.getLogger("paymetrics.replay")

_DAY = dt.timedelta(days=1)
_SKETCH_ROWS = pa.schema(
    [
        ("window_start", pa.int64()),
        ("dimensions", pa.string()),
        ("bucket", pa.int64()),
        ("count", pa.int64()),
    ]
)
"""Sketch buckets as `ComplianceStore.read_sketch_buckets` returns them (µs windows)."""


class ReplayError(ValueError):
    """A replay that cannot run as asked (unknown metric, open windows, no archive)."""


@dataclass
class ReplayReport:
    """What a replay did."""

    start: dt.datetime
    end: dt.datetime
    """The range read: the asked range widened to whole windows (and days, with alerts)."""
    metrics: list[str]
    config_version: int | None
    archived_rows: int = 0
    events: int = 0
    """Distinct events replayed (archived rows minus redeliveries)."""
    undecodable: int = 0
    rows_deleted: int = 0
    rows_written: int = 0
    alerts_new: int | None = None
    """New alerts (None: alerts were not replayed)."""
    dry_run: bool = False
    seconds: float = 0.0
    ranges: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["ranges"] = {
            name: [lo.isoformat(), hi.isoformat()] for name, (lo, hi) in self.ranges.items()
        }
        return out


def _floor(instant: dt.datetime, seconds: int) -> dt.datetime:
    return from_epoch_us(int(floor_to_window(np.array([to_epoch_us(instant)]), seconds)[0]))


def _ceil(instant: dt.datetime, seconds: int) -> dt.datetime:
    floor = _floor(instant, seconds)
    return floor if floor == instant else floor + dt.timedelta(seconds=seconds)


def replay(
    store: SqlStore,
    options: PipelineOptions,
    *,
    archive_url: str,
    storage_options: Mapping[str, Any] | None = None,
    start: dt.datetime,
    end: dt.datetime,
    metrics: Sequence[str] = (),
    alerts: bool = False,
    open_windows: bool = False,
    dry_run: bool = False,
) -> ReplayReport:
    """Recompute `metrics` (default: every config rule) over [start, end) from the archive,
    and with `alerts` judge the replayed events with the compliance rules too."""
    began = time.perf_counter()
    if start.tzinfo is None or end.tzinfo is None:
        raise ReplayError("--from and --to must carry a UTC offset")
    if end <= start:
        raise ReplayError(f"--to {end.isoformat()} is not after --from {start.isoformat()}")
    rules = {r.name: r for r in options.metric_rules}
    unknown = [m for m in metrics if m not in rules]
    if unknown:
        valid = ", ".join(sorted(rules)) or "(none configured)"
        raise ReplayError(
            f"--metric: no metric rule named {', '.join(map(repr, unknown))} in the "
            f"configuration's metrics; valid names: {valid}"
        )
    selected = [rules[m] for m in (metrics or sorted(rules))]
    if not selected and not alerts:
        raise ReplayError("nothing to replay: the configuration has no metric rules")
    compliance = options.compliance if alerts else None
    if alerts and compliance is None:
        raise ReplayError("--alerts: compliance is not enabled in the configuration")
    ranges = {
        r.name: (_floor(start, r.window_seconds), _ceil(end, r.window_seconds)) for r in selected
    }
    read_start = min([lo for lo, _ in ranges.values()], default=start)
    read_end = max([hi for _, hi in ranges.values()], default=end)
    if compliance is not None:  # whole counter periods (and whole windows)
        for seconds in {getattr(r, "period_seconds", 300) for r in compliance.rules}:
            read_start = min(read_start, _floor(start, seconds))
            read_end = max(read_end, _ceil(end, seconds))
    if not open_windows:
        _refuse_open_windows(store, read_end, options.max_lateness_seconds)
    report = ReplayReport(
        start=read_start,
        end=read_end,
        metrics=[r.name for r in selected],
        config_version=options.config_version,
        dry_run=dry_run,
        ranges=ranges,
    )
    only = dataclasses.replace(options, metric_rules=tuple(selected))
    partials: list[pa.Table] = []
    seen: list[pa.Array] = []
    with store.transaction() as tx:
        assert isinstance(tx, SqlTransaction)
        sink = _ReplaySink(tx) if compliance is not None else None
        new_alerts = 0
        for lo, hi, rows in _archive_days(archive_url, storage_options, read_start, read_end):
            report.archived_rows += rows.num_rows
            events, undecodable = _events(rows, seen)
            report.undecodable += undecodable
            report.events += events.num_rows
            if selected and events.num_rows:
                partials.append(aggregate_rules(events, selected))
            if sink is not None and compliance is not None:
                new_alerts += compliance.evaluate(
                    events,
                    sink,
                    source_id="replay",
                    partition="replay",
                    previous_watermark_us=to_epoch_us(lo),
                    watermark_us=to_epoch_us(hi),
                    config_version=options.config_version,
                )
                sink.remember(events)
        if report.archived_rows == 0:
            raise ReplayError(
                f"the archive {archive_url} holds no events from {read_start.isoformat()} "
                f"to {read_end.isoformat()}; nothing was replaced (is it the right archive?)"
            )
        report.alerts_new = new_alerts if sink is not None else None
        if selected:
            merged = merge_partials(
                pa.concat_tables(partials) if partials else PARTIAL_SCHEMA.empty_table()
            )
            merged = _in_ranges(merged, ranges)
            report.rows_written = merged.num_rows
            report.rows_deleted = tx.replace_dynamic_metrics(
                [(name, lo, hi) for name, (lo, hi) in ranges.items()],
                tag_rule_partials(merged, only),
            )
        report.seconds = time.perf_counter() - began
        if dry_run:
            raise _DryRun(report)
    log.info(
        "replayed %s over %s..%s: %d events, %d rows replaced by %d%s",
        ", ".join(report.metrics) or "alerts",
        read_start.isoformat(),
        read_end.isoformat(),
        report.events,
        report.rows_deleted,
        report.rows_written,
        "" if report.alerts_new is None else f", {report.alerts_new} new alerts",
    )
    return report


class _DryRun(Exception):
    def __init__(self, report: ReplayReport) -> None:
        super().__init__("dry run")
        self.report = report


def run_replay(store: SqlStore, options: PipelineOptions, **kwargs: Any) -> ReplayReport:
    """`replay`, returning the report of a dry run (rolled back) like any other."""
    try:
        return replay(store, options, **kwargs)
    except _DryRun as dry:
        return dry.report


def _refuse_open_windows(store: SqlStore, end: dt.datetime, max_lateness_seconds: float) -> None:
    """Windows that may still receive events are being written by the workers: replaying
    them would race with their commits (and count an in-flight batch twice)."""
    newest = store.newest_watermark()
    if newest is None:
        return
    closed = newest - dt.timedelta(seconds=max_lateness_seconds)
    if end > closed:
        raise ReplayError(
            f"the range (widened to whole windows) ends at {end.isoformat()}, after "
            f"{closed.isoformat()} (the newest stored watermark {newest.isoformat()} minus "
            f"the maximum lateness): events for those windows may still arrive and be "
            "counted by a running worker. Replay an earlier range, or stop the workers "
            "and pass --open-windows"
        )


def _archive_days(
    url: str, options: Mapping[str, Any] | None, start: dt.datetime, end: dt.datetime
) -> Iterator[tuple[dt.datetime, dt.datetime, pa.Table]]:
    """The archive's rows one UTC day at a time, oldest first (bounded memory)."""
    from paymetrics.archive.query import find_raw

    lo = start
    while lo < end:
        hi = min(_floor(lo, 86_400) + _DAY, end)
        yield lo, hi, find_raw(url, start=lo, end=hi, limit=None, storage_options=options)
        lo = hi


def _events(rows: pa.Table, seen: list[pa.Array]) -> tuple[pa.Table, int]:
    """Normalized events of archive rows not replayed before (first copy of each id);
    `seen` holds the ids of earlier days, one array per day."""
    if rows.num_rows == 0:
        return pa.table({}), 0
    rows = rows.filter(pa.array(first_occurrences(rows["event_id"])))
    if seen:
        replayed = pa.concat_arrays(seen)
        rows = rows.filter(pc.invert(pc.is_in(rows["event_id"], value_set=replayed)))
    seen.append(rows["event_id"].combine_chunks())
    messages: list[bytes] = rows["payload"].cast(pa.binary()).to_pylist()
    rejects = Rejects()
    decoded = decode(
        messages, [len(m) for m in messages], np.zeros(len(messages), dtype=bool), rejects
    )
    for k in range(len(rejects)):  # the contract changed since they were archived
        log.warning(
            "archived event at %s position %s no longer decodes: %s",
            rows["partition"][rejects.index[k]],
            rows["position"][rejects.index[k]],
            rejects.message[k],
        )
    table = normalize(
        decoded.events,
        decoded.index,
        np.asarray(rows["position"], dtype=np.int64),
        np.asarray(rows["pan_exposure"], dtype=np.int64),
    )
    return table, len(rejects)


def _in_ranges(
    partials: pa.Table, ranges: Mapping[str, tuple[dt.datetime, dt.datetime]]
) -> pa.Table:
    """Rows of each metric whose window starts in that metric's own range."""
    names = list(ranges)
    at = pc.index_in(partials["metric_name"], value_set=pa.array(names, pa.string()))
    lows = pa.array([lo for lo, _ in ranges.values()], pa.timestamp("us", "UTC")).take(at)
    highs = pa.array([hi for _, hi in ranges.values()], pa.timestamp("us", "UTC")).take(at)
    start = partials["window_start"]
    keep = pc.and_(pc.greater_equal(start, lows), pc.less(start, highs))
    return partials.filter(keep)


class _ReplaySink:
    """The compliance store of a replay: authorizations and latency sketches of the
    replayed events kept in memory (the stored ones count what live ingestion saw), payment
    metrics read from the database, alerts inserted in the replay's transaction."""

    def __init__(self, tx: SqlTransaction) -> None:
        self.tx = tx
        self.history: pa.Table | None = None
        self.sketches: dict[str, list[pa.Table]] = {}

    def earlier_authorizations(self, customers: pa.Array, start_us: int, end_us: int) -> pa.Table:
        """From the replayed days before this one (`remember`); authorizations that
        occurred before `start_us` are dropped: the days come oldest first."""
        if self.history is None:
            return HISTORY_SCHEMA.empty_table()
        at = pc.cast(self.history["occurred_at"], pa.int64())
        self.history = kept = self.history.filter(pc.greater_equal(at, start_us))
        at = pc.cast(kept["occurred_at"], pa.int64())
        return kept.filter(
            pc.and_(pc.less(at, end_us), pc.is_in(kept["customer_id"], value_set=customers))
        )

    def remember(self, events: pa.Table) -> None:
        """Keep the replayed authorizations with a customer for the later days' reads."""
        keep = pc.and_(
            pc.equal(events["event_type"], "authorization"), pc.is_valid(events["customer_id"])
        )
        new = events.filter(keep).select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
        self.history = new if self.history is None else pa.concat_tables([self.history, new])

    def add_sketch_buckets(self, histogram: str, buckets: pa.Table) -> None:
        self.sketches.setdefault(histogram, []).append(buckets)

    def read_sketch_buckets(self, histogram: str, start_us: int, end_us: int) -> pa.Table:
        """The buckets added for [start_us, end_us), summed (window_start in µs, as the
        database read gives it)."""
        empty = _SKETCH_ROWS.empty_table()
        parts = self.sketches.get(histogram)
        if not parts:
            return empty
        table = pa.concat_tables(parts)
        at = table["window_start"]
        if pa.types.is_timestamp(at.type):
            at = pc.cast(pc.cast(at, pa.timestamp("us", "UTC")), pa.int64())
        table = table.set_column(
            table.column_names.index("window_start"), "window_start", at
        ).select(empty.column_names)
        found = table.filter(pc.and_(pc.greater_equal(at, start_us), pc.less(at, end_us)))
        summed = found.group_by(empty.column_names[:3], use_threads=False).aggregate(
            [("count", "sum")]
        )
        return summed.rename_columns(empty.column_names).cast(empty.schema)

    def read_merchant_windows(self, start_us: int, end_us: int) -> pa.Table:
        return self.tx.read_merchant_windows(start_us, end_us)

    def insert_alerts(self, alerts: Sequence[Alert], config_version: int | None) -> int:
        return self.tx.insert_alerts(alerts, config_version)
