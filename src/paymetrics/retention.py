"""Retention: delete what is older than its configured age, and say what went.

Ages come from `retention.*` (days; null keeps forever) and are measured on each
record's own time: `occurred_at` for events, the hour partition for the raw archive,
`first_seen_at` for dead letters, `window_start` for metrics and their sketches.

Deleting stored events makes the de-duplication forget their `event_id`s. That is
safe only for events older than the lateness limit, which the pipeline would
dead-letter as `too_late` anyway on a partition that has seen newer events, so the
configuration refuses a `normalized_days` shorter than `max_lateness_seconds`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from paymetrics.config.model import Settings
from paymetrics.storage.tables import (
    aggregate_histograms,
    dynamic_metrics,
    failed_items,
    normalized_transactions,
    payment_metrics_5m,
)

__all__ = ["RetentionReport", "apply_retention"]

_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


@dataclass
class RetentionReport:
    now: dt.datetime
    dry_run: bool
    #: what → (cutoff, rows or files removed / that would be removed)
    removed: dict[str, tuple[dt.datetime, int]] = field(default_factory=dict)
    kept_forever: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        count = "would_remove" if self.dry_run else "removed"
        out: list[dict[str, Any]] = [
            {"what": what, "older_than": cutoff.isoformat(), count: n}
            for what, (cutoff, n) in self.removed.items()
        ]
        out += [
            {"what": what, "older_than": "(kept forever)", count: 0} for what in self.kept_forever
        ]
        return out


def _cutoff(now: dt.datetime, days: int | None) -> dt.datetime | None:
    return None if days is None else now - dt.timedelta(days=days)


def apply_retention(
    engine: sa.Engine,
    settings: Settings,
    *,
    now: dt.datetime,
    dry_run: bool = False,
    archive_fs: Any = None,
    archive_root: str | None = None,
) -> RetentionReport:
    """Delete (or with `dry_run`, count) everything older than its retention age."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    now = now.astimezone(dt.UTC)
    ages = settings.retention
    report = RetentionReport(now=now, dry_run=dry_run)
    plan = [
        ("normalized_transactions", normalized_transactions.c.occurred_at, ages.normalized_days),
        ("failed_items", failed_items.c.first_seen_at, ages.dead_letters_days),
        ("payment_metrics_5m", payment_metrics_5m.c.window_start, ages.metrics_days),
        ("aggregate_histograms", aggregate_histograms.c.window_start, ages.metrics_days),
        ("dynamic_metrics", dynamic_metrics.c.window_start, ages.metrics_days),
    ]
    with engine.begin() as conn:
        for name, column, days in plan:
            cutoff = _cutoff(now, days)
            if cutoff is None:
                report.kept_forever.append(name)
                continue
            table = column.table
            if dry_run:
                count = conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(column < cutoff)
                ).scalar_one()
            else:
                count = conn.execute(sa.delete(table).where(column < cutoff)).rowcount
            report.removed[name] = (cutoff, int(count))
    cutoff = _cutoff(now, ages.raw_archive_days)
    if archive_fs is None or archive_root is None:
        return report
    if cutoff is None:
        report.kept_forever.append("raw archive (hour partitions)")
        return report
    removed = 0
    for folder in sorted(archive_fs.glob(f"{archive_root.rstrip('/')}/date=*/hour=*")):
        match = _PARTITION.search(str(folder).rstrip("/"))
        if match is None:
            continue
        hour_start = dt.datetime.fromisoformat(f"{match[1]}T{match[2]}:00:00+00:00")
        if hour_start + dt.timedelta(hours=1) <= cutoff:  # the whole hour is older
            removed += 1
            if not dry_run:
                archive_fs.rm(folder, recursive=True)
    report.removed["raw archive (hour partitions)"] = (cutoff, removed)
    return report
