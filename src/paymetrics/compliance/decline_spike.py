"""`decline_spike`: a merchant's approval rate in a closed 5-minute window is below the
mean approval rate of its trailing `baseline_windows` windows by more than `margin`
(absolute, 0.2 = 20 percentage points). Read from `payment_metrics_5m`, summed over
payment method and currency. A window is judged only with at least `min_authorizations`
authorizations, and only against at least half of `baseline_windows` trailing windows
that had authorizations (one quiet window is no baseline). The drop must also be at least
`MIN_STANDARD_ERRORS` binomial standard errors at the baseline rate: with 20 to 30
authorizations, a window 20 points below a 90 % baseline happens by chance a few times a
day across hundreds of merchants; a real incident is far beyond that."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from paymetrics.compliance.base import Alert, BatchView, ComplianceRule, ComplianceStore, at_us
from paymetrics.compliance.fx import Fx
from paymetrics.compliance.windows import WINDOW_US, closed_windows
from paymetrics.config.model import DeclineSpikeRule
from paymetrics.normalize import WINDOW_SECONDS

__all__ = ["MIN_STANDARD_ERRORS", "DeclineSpike"]

MIN_STANDARD_ERRORS = 5.0


class DeclineSpike(ComplianceRule):
    name = "decline_spike"
    settings_class = DeclineSpikeRule

    def __init__(self, settings: DeclineSpikeRule, fx: Fx) -> None:
        super().__init__(settings, fx)
        self.rule = settings
        self.min_baseline = max(1, settings.baseline_windows // 2)

    def evaluate(self, batch: BatchView, store: ComplianceStore) -> list[Alert]:
        span = closed_windows(batch)
        if span is None:
            return []
        start, end = span
        back = self.rule.baseline_windows
        rows = store.read_merchant_windows(start - back * WINDOW_US, end)
        rows = rows.filter(pc.greater(rows["authorizations"], 0))
        if not rows.num_rows:
            return []
        rows = rows.take(
            pc.sort_indices(rows, [("merchant_id", "ascending"), ("window_start", "ascending")])
        )
        merchant = np.asarray(
            pc.index_in(rows["merchant_id"], value_set=pc.unique(rows["merchant_id"]))
        ).astype(np.int64)
        window = np.asarray(rows["window_start"], dtype=np.int64) // WINDOW_US
        auths = np.asarray(rows["authorizations"], dtype=np.int64)
        approved = np.asarray(rows["approved"], dtype=np.int64)
        rate = approved / auths
        # One sorted key per (merchant, window): trailing windows are a searchsorted range.
        span_windows = int(window.max() - window.min()) + back + 2
        key = merchant * span_windows + (window - window.min() + back + 1)
        sum_rate = np.r_[0.0, np.cumsum(rate)]
        judged = np.flatnonzero(
            (window * WINDOW_US >= start) & (auths >= self.rule.min_authorizations)
        )
        if not len(judged):
            return []
        lo = np.searchsorted(key, key[judged] - back, side="left")
        hi = np.searchsorted(key, key[judged], side="left")
        n_base = hi - lo
        enough = n_base >= self.min_baseline
        with np.errstate(invalid="ignore", divide="ignore"):
            baseline = (sum_rate[hi] - sum_rate[lo]) / n_base
        n = auths[judged]
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.sqrt(np.clip(baseline * (1 - baseline), 1e-6, None) / n)
            drop = baseline - rate[judged]
        alert = enough & (drop > self.rule.margin) & (drop >= MIN_STANDARD_ERRORS * error)
        alerts = []
        for i in np.flatnonzero(alert):
            row = int(judged[i])
            alerts.append(
                Alert(
                    rule=self.name,
                    severity=self.severity,
                    subject_type="merchant",
                    subject_id=str(rows["merchant_id"][row].as_py()),
                    period_start=at_us(int(window[row]) * WINDOW_US),
                    period_seconds=WINDOW_SECONDS,
                    measured_value=float(rate[row]),
                    threshold=float(baseline[i] - self.rule.margin),
                    evidence={
                        "authorizations": int(auths[row]),
                        "approved": int(approved[row]),
                        "baseline_approval_rate": float(baseline[i]),
                        "baseline_windows": int(n_base[i]),
                    },
                )
            )
        return alerts
