"""Which 5-minute windows a batch closes, for the rules that judge whole windows.

A window [s, s + 5 min) is judged once, in the batch whose partition watermark (the
newest `occurred_at` seen on the partition, see docs/architecture.md §4) first reaches
its end: windows with floor(previous watermark) <= s < floor(new watermark). Nothing
waits for the lateness allowance (7 days by default: far too late for an alert), so an
event that arrives after its window was judged updates the metrics but never re-judges
the window; the alert's unique key keeps a window from alerting twice anyway.
"""

from __future__ import annotations

from paymetrics.compliance.base import BatchView
from paymetrics.metrics.windows import US_PER_SECOND
from paymetrics.normalize import WINDOW_SECONDS

__all__ = ["WINDOW_US", "closed_windows"]

WINDOW_US = WINDOW_SECONDS * US_PER_SECOND


def _floor(us: int) -> int:
    return (us // WINDOW_US) * WINDOW_US


def closed_windows(batch: BatchView) -> tuple[int, int] | None:
    """[start, end) in µs of the window starts this batch closes, or None."""
    if batch.watermark_us is None:
        return None
    end = _floor(batch.watermark_us)
    if batch.previous_watermark_us is not None:
        start = _floor(batch.previous_watermark_us)
    elif batch.events.num_rows:  # the partition's first batch: from its first window
        start = _floor(int(batch.occurred_us.min()))
    else:
        return None
    return (start, end) if start < end else None
