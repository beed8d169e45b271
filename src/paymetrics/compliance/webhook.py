"""Webhook delivery of compliance alerts: HTTP POST of JSON, retried with backoff.

Why it works this way:

* The delivery state lives on the alert's own row (`delivery_status`,
  `delivery_attempts`, `last_delivery_error`, `delivered_at`), so any process can pick
  up where another stopped, and `paymetrics query alerts` shows it.
* Every attempt is first *claimed* (attempts + 1, guarded on the count read) in a
  short transaction of its own, then its outcome is written (guarded again). Two
  deliverers running at once never lose a count, and a crash during a POST still
  counts the attempt.
* Delivery is at least once: a lost response, or two deliverers racing, can POST an
  alert twice. Every request carries `Idempotency-Key: <alert_key>` so the receiver
  can drop the repeat.
* The bearer token and the signing secret go into headers only, never into a
  message, a log line or the database. Error messages name the URL without its
  query string (some services put a key there).
* A pass stops at the first alert that ends `failed`: when the endpoint is down,
  hammering it alert after alert only makes the pass longer.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import sqlalchemy as sa
from pydantic import SecretStr

from paymetrics import __version__
from paymetrics.config.model import ComplianceSettings, WebhookSettings
from paymetrics.storage.tables import compliance_alerts

__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "REJECTED",
    "SKIPPED",
    "Backoff",
    "DeliveryReport",
    "DeliveryResult",
    "HttpResponse",
    "Outcome",
    "WebhookDelivery",
    "alert_key",
    "alert_payload",
    "delivering_in_background",
    "display_url",
    "parse_retry_after",
    "reset_deliveries",
    "sign",
    "urllib_post",
]

log = logging.getLogger("paymetrics.compliance.webhook")

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
REJECTED: Final = "rejected"
SKIPPED: Final = "skipped"
"""Not ours to finish: another deliverer claimed the alert's next attempt first."""

RETRYABLE_HTTP: Final = frozenset({408, 425, 429})
"""Client errors that mean "later", not "never" (besides every 5xx)."""
MESSAGE_LIMIT: Final = 300
SIGNATURE_HEADER: Final = "X-Paymetrics-Signature"

Post = Callable[[str, bytes, Mapping[str, str], float], "HttpResponse"]


class HttpResponse(NamedTuple):
    """What an attempt needs from a response: no body, it is not read beyond a drain."""

    status: int
    reason: str
    retry_after: str | None = None


# -- the request -----------------------------------------------------------------


def alert_key(row: Mapping[str, Any]) -> str:
    """The alert's unique key as one string (`rule:subject_type:subject_id:period_start:
    period_seconds`): the same for every delivery of the same alert, in any database."""
    start: dt.datetime = row["period_start"]
    return (
        f"{row['rule']}:{row['subject_type']}:{row['subject_id']}:"
        f"{start.astimezone(dt.UTC).isoformat()}:{row['period_seconds']}"
    )


def alert_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of one alert: its columns (evidence decoded), times in ISO 8601 UTC."""

    def instant(value: dt.datetime | None) -> str | None:
        return None if value is None else value.astimezone(dt.UTC).isoformat()

    return {
        "alert_key": alert_key(row),
        "id": row["id"],
        "rule": row["rule"],
        "severity": row["severity"],
        "subject_type": row["subject_type"],
        "subject_id": row["subject_id"],
        "period_start": instant(row["period_start"]),
        "period_seconds": row["period_seconds"],
        "measured_value": row["measured_value"],
        "threshold": row["threshold"],
        "currency": row["currency"],
        "evidence_event_ids": json.loads(row["evidence_event_ids"]),
        "evidence": json.loads(row["evidence"]),
        "created_at": instant(row["created_at"]),
        "config_version": row["config_version"],
    }


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes sent are the bytes signed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: SecretStr, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of body>`, the `X-Paymetrics-Signature` value."""
    digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def display_url(url: str) -> str:
    """`url` without user info, query or fragment: what errors and logs may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- backoff ---------------------------------------------------------------------


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) as seconds from `now`; None when
    absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - now).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: retries of many deliverers spread out
    instead of arriving together at a receiver that just came back."""

    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(
        self,
        retry: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before retry number `retry` (1: the first): uniform in
        [0, min(max, base × 2^(retry-1))]; a receiver's `Retry-After` instead, capped at max."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        cap = min(self.max_seconds, self.base_seconds * 2.0 ** min(max(retry - 1, 0), 62))
        return rand() * cap


# -- HTTP ------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would become a GET without the alert; report the 3xx instead."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def urllib_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse:
    """POST with the standard library; any HTTP status is returned, network failures raise
    (`OSError`, `urllib.error.URLError`, `http.client.HTTPException`)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - http(s) only, checked by WebhookSettings
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65_536)  # drain a little, so the connection closes cleanly
            return HttpResponse(response.status, response.reason, response.headers["Retry-After"])
    except urllib.error.HTTPError as error:
        try:
            return HttpResponse(error.code, str(error.reason), error.headers["Retry-After"])
        finally:
            error.close()


# -- delivery --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one alert ended in one pass."""

    alert_id: int
    alert_key: str
    status: str
    attempts: int
    error: str | None = None


@dataclass(slots=True)
class DeliveryReport:
    """What one `deliver_pending` pass did."""

    results: list[DeliveryResult] = field(default_factory=list)
    not_attempted: int = 0
    """Alerts left pending because the pass stopped (an alert failed, or a stop request)."""

    def counts(self) -> dict[str, int]:
        """Alerts per outcome, every outcome listed (0 included)."""
        seen = Counter(r.status for r in self.results)
        out = {s: seen.get(s, 0) for s in (DELIVERED, FAILED, REJECTED, SKIPPED)}
        out["not_attempted"] = self.not_attempted
        return out

    @property
    def failed(self) -> bool:
        return any(r.status == FAILED for r in self.results)


class Outcome(NamedTuple):
    """How one attempt was judged."""

    status: str  # DELIVERED, FAILED (retryable) or REJECTED
    error: str | None
    retry_after: str | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WebhookDelivery:
    """POSTs pending alerts to one endpoint and records each outcome on the alert."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 10.0,
        max_attempts: int = 10,
        attempts_per_pass: int = 3,
        backoff: Backoff = Backoff(),  # frozen: one shared default is fine
        bearer_token: SecretStr | None = None,
        signing_secret: SecretStr | None = None,
        post: Post = urllib_post,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], dt.datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"webhook URL {display_url(url)!r} is not an http(s) URL")
        self.url = url
        self.shown_url = display_url(url)
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.attempts_per_pass = attempts_per_pass
        self.backoff = backoff
        self._token = bearer_token
        self._signing_secret = signing_secret
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._should_stop = should_stop

    @classmethod
    def from_settings(cls, settings: WebhookSettings, **overrides: Any) -> WebhookDelivery:
        """A deliverer for `compliance.webhook`; `overrides` replace its keyword arguments."""
        if not settings.url:
            raise ValueError(
                "no webhook URL: set compliance.webhook.url (or give --url) to deliver alerts"
            )
        options: dict[str, Any] = {
            "timeout_seconds": settings.timeout_seconds,
            "max_attempts": settings.max_attempts,
            "attempts_per_pass": settings.attempts_per_pass,
            "backoff": Backoff(settings.backoff_base_seconds, settings.backoff_max_seconds),
            "bearer_token": settings.bearer_token,
            "signing_secret": settings.signing_secret,
        }
        return cls(settings.url, **{**options, **overrides})

    def __repr__(self) -> str:  # never the secrets
        return f"WebhookDelivery({self.shown_url!r})"

    # -- one request ---------------------------------------------------------------

    def request(self, row: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers that deliver alert `row`."""
        key = alert_key(row)
        body = encode_body(alert_payload(row))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"paymetrics/{__version__}",
            "Idempotency-Key": quote(key, safe=":+-._~@/="),  # headers are ASCII
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        if self._signing_secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._signing_secret, body)
        return body, headers

    def attempt(self, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """One POST, judged: 2xx delivered; 408, 425, 429, 5xx and network errors retryable;
        any other status rejected (retrying cannot change the receiver's mind)."""
        try:
            response = self._post(self.url, body, headers, self.timeout_seconds)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as error:
            return Outcome(FAILED, self._message(self._describe(error)))
        text = f"HTTP {response.status} {response.reason}".strip()
        if 200 <= response.status < 300:
            return Outcome(DELIVERED, None)
        if response.status in RETRYABLE_HTTP or 500 <= response.status < 600:
            return Outcome(FAILED, self._message(text), response.retry_after)
        if 300 <= response.status < 400:
            text += " (redirects are not followed; configure the final URL)"
        return Outcome(REJECTED, self._message(text))

    def _describe(self, error: BaseException) -> str:
        reason: Any = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            return f"timed out after {self.timeout_seconds:g} s"
        if isinstance(reason, BaseException):
            return f"{type(reason).__name__}: {reason}".rstrip(": ")
        return f"{type(error).__name__}: {reason}"

    def _message(self, detail: str) -> str:
        """`POST <url>: <detail>`, one line, short, with no secret in it."""
        text = f"POST {self.shown_url}: {' '.join(detail.split())}"
        for secret in (self._token, self._signing_secret):
            if secret is not None and len(secret.get_secret_value()) >= 4:
                text = text.replace(secret.get_secret_value(), "**********")
        return text[:MESSAGE_LIMIT]

    # -- a pass ------------------------------------------------------------------

    def pending(
        self, engine: sa.Engine, *, since: dt.datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Alerts still to deliver (never tried, or failed with attempts left), oldest first."""
        t = compliance_alerts
        stmt = sa.select(t).where(
            sa.or_(t.c.delivery_status.is_(None), t.c.delivery_status.in_([PENDING, FAILED])),
            sa.func.coalesce(t.c.delivery_attempts, 0) < self.max_attempts,
        )
        if since is not None:
            stmt = stmt.where(t.c.created_at >= since)
        stmt = stmt.order_by(t.c.created_at, t.c.id).limit(limit)
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def deliver_pending(
        self, engine: sa.Engine, *, since: dt.datetime | None = None, limit: int = 1000
    ) -> DeliveryReport:
        """Deliver up to `limit` pending alerts created at or after `since`, oldest first;
        the pass ends at the first alert that ends `failed` (the rest: `not_attempted`)."""
        rows = self.pending(engine, since=since, limit=limit)
        report = DeliveryReport()
        for index, row in enumerate(rows):
            if self._should_stop():
                report.not_attempted = len(rows) - index
                break
            result = self.deliver(engine, row)
            report.results.append(result)
            if result.status == FAILED:
                report.not_attempted = len(rows) - index - 1
                if report.not_attempted:
                    log.warning(
                        "stopping this pass at a failing endpoint; %d alert(s) wait "
                        "for the next one",
                        report.not_attempted,
                    )
                break
        return report

    def deliver(self, engine: sa.Engine, row: Mapping[str, Any]) -> DeliveryResult:
        """Attempts for one alert (up to `attempts_per_pass`, with backoff between them)."""
        alert_id: int = row["id"]
        key = alert_key(row)
        attempts: int = row["delivery_attempts"] or 0
        body, headers = self.request(row)
        error: str | None = row["last_delivery_error"]
        for retry in range(1, self.attempts_per_pass + 1):
            if attempts >= self.max_attempts:
                break
            if not self._claim(engine, alert_id, attempts):
                return DeliveryResult(alert_id, key, SKIPPED, attempts, error)
            attempts += 1
            outcome = self.attempt(body, headers)
            error = outcome.error
            self._record(engine, alert_id, attempts, outcome)
            if outcome.status != FAILED:
                return DeliveryResult(alert_id, key, outcome.status, attempts, error)
            log.warning(
                "alert %d attempt %d of %d failed: %s",
                alert_id,
                attempts,
                self.max_attempts,
                error,
            )
            if retry == self.attempts_per_pass or attempts >= self.max_attempts:
                break
            if self._should_stop():
                break
            wait = self.backoff.delay(
                retry,
                retry_after=parse_retry_after(outcome.retry_after, self._clock()),
                rand=self._rand,
            )
            self._sleep(wait)
        return DeliveryResult(alert_id, key, FAILED, attempts, error)

    def _claim(self, engine: sa.Engine, alert_id: int, attempts: int) -> bool:
        """Count the next attempt, unless another deliverer counted one since we read."""
        t = compliance_alerts
        stmt = (
            sa.update(t)
            .where(
                t.c.id == alert_id,
                sa.func.coalesce(t.c.delivery_attempts, 0) == attempts,
                sa.or_(t.c.delivery_status.is_(None), t.c.delivery_status.in_([PENDING, FAILED])),
            )
            .values(delivery_attempts=attempts + 1, delivery_status=PENDING)
        )
        with engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def _record(self, engine: sa.Engine, alert_id: int, attempts: int, outcome: Outcome) -> None:
        """The attempt's outcome. A success always lands (it happened); a failure only while
        no other deliverer has started a later attempt or delivered the alert."""
        t = compliance_alerts
        not_delivered = sa.func.coalesce(t.c.delivery_status, PENDING) != DELIVERED
        if outcome.status == DELIVERED:
            stmt = (
                sa.update(t)
                .where(t.c.id == alert_id, not_delivered)
                .values(
                    delivery_status=DELIVERED,
                    delivered_at=self._clock(),
                    last_delivery_error=None,
                )
            )
        else:
            stmt = (
                sa.update(t)
                .where(t.c.id == alert_id, t.c.delivery_attempts == attempts, not_delivered)
                .values(delivery_status=outcome.status, last_delivery_error=outcome.error)
            )
        with engine.begin() as conn:
            conn.execute(stmt)


# -- in a running pipeline -------------------------------------------------------


def reset_deliveries(
    engine: sa.Engine,
    *,
    ids: Sequence[int] = (),
    statuses: Sequence[str] = (),
    rule: str | None = None,
) -> list[int]:
    """Make alerts that ended `failed` or `rejected` deliverable again (status NULL,
    attempts 0; the last error is kept until the next attempt), selected by id and/or
    status and rule; returns their ids. A delivered or waiting alert is never touched."""
    unknown = sorted(set(statuses) - {FAILED, REJECTED})
    if unknown:
        raise ValueError(
            f"cannot retry alerts with status {', '.join(unknown)}: only failed or rejected"
        )
    if not ids and not statuses:
        raise ValueError("choose the alerts to retry: give ids or statuses")
    t = compliance_alerts
    stmt = sa.update(t).where(t.c.delivery_status.in_(list(statuses) or [FAILED, REJECTED]))
    if ids:
        stmt = stmt.where(t.c.id.in_(list(ids)))
    if rule is not None:
        stmt = stmt.where(t.c.rule == rule)
    stmt = stmt.values(delivery_status=None, delivery_attempts=0).returning(t.c.id)
    with engine.begin() as conn:
        return sorted(conn.execute(stmt).scalars())


@contextmanager
def delivering_in_background(
    compliance: ComplianceSettings,
    engine: sa.Engine | None,
    *,
    final_pass_seconds: float = 30.0,
    **overrides: Any,
) -> Iterator[WebhookDelivery | None]:
    """While the block runs (`paymetrics run`), deliver every `webhook.interval_seconds` in
    a daemon thread. When it ends normally, one last pass delivers the last batches' alerts,
    waited for `final_pass_seconds` at most, so a slow receiver cannot hold the process;
    when it raises, delivery stops at once. Compliance off, no `webhook.url` or no SQL
    engine: nothing happens. The settings are read once, at the start."""
    settings = compliance.webhook
    if engine is None or not (compliance.enabled and settings.url):
        yield None
        return
    finished = threading.Event()  # the block ended: one last pass, then exit
    abort = threading.Event()  # stop between attempts, and cut backoff waits short
    delivery = WebhookDelivery.from_settings(
        settings, should_stop=abort.is_set, sleep=abort.wait, **overrides
    )

    def one_pass() -> None:
        try:
            delivery.deliver_pending(engine)
        except Exception as error:  # a busy or lost database must not end delivery
            log.warning("delivery pass failed (%s); next pass will retry", _line(error))

    def loop() -> None:
        while True:
            one_pass()
            if finished.wait(settings.interval_seconds):
                one_pass()
                return

    worker = threading.Thread(target=loop, name="paymetrics-webhook", daemon=True)
    worker.start()
    ended_normally = False
    try:
        yield delivery
        ended_normally = True
    finally:
        if not ended_normally:
            abort.set()
        finished.set()
        worker.join(final_pass_seconds if ended_normally else 1.0)
        abort.set()  # a pass still running stops at its next attempt
        if ended_normally and worker.is_alive():
            log.warning(
                "the final delivery pass took longer than %g s; what is left waits "
                "for `paymetrics alerts deliver` or the next run",
                final_pass_seconds,
            )


def _line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    lines = str(orig if orig is not None else error).strip().splitlines()
    return f"{type(orig or error).__name__}: {lines[0] if lines else ''}"[:MESSAGE_LIMIT]
