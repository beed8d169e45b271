"""Webhook delivery without a network: the request an alert becomes, how each answer is
judged, the backoff schedule, and that neither secret nor URL query leaks into a message."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import urllib.error
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from paymetrics.compliance.webhook import (
    DELIVERED,
    FAILED,
    REJECTED,
    Backoff,
    HttpResponse,
    WebhookDelivery,
    alert_key,
    delivering_in_background,
    display_url,
    parse_retry_after,
)
from paymetrics.config.model import ComplianceSettings, Settings, WebhookSettings
from paymetrics.storage.tables import compliance_alerts, metadata

URL = "https://hooks.example/paymetrics/alerts"
TOKEN = "tok-4f9a-secret"
SIGNING = "sig-77b1-secret"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ROW: dict[str, Any] = {
    "id": 7,
    "rule": "velocity",
    "severity": "medium",
    "subject_type": "customer",
    "subject_id": "cus_00042",
    "period_start": dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC),
    "period_seconds": 43_200,
    "measured_value": 12.0,
    "threshold": 5.0,
    "currency": None,
    "evidence_event_ids": json.dumps(["evt_1", "evt_2"]),
    "evidence": json.dumps({"authorizations": 12}),
    "created_at": dt.datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=dt.UTC),
    "config_version": 3,
    "delivery_status": None,
    "delivery_attempts": None,
    "last_delivery_error": None,
    "delivered_at": None,
}


class Script:
    """A fake `post`: answers (or raises) from a list, recording what was sent."""

    def __init__(self, *answers: HttpResponse | BaseException) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResponse:
        self.sent.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else HttpResponse(200, "OK")
        if isinstance(answer, BaseException):
            raise answer
        return answer


def delivery(post: Script, **options: Any) -> WebhookDelivery:
    defaults: dict[str, Any] = {
        "bearer_token": SecretStr(TOKEN),
        "signing_secret": SecretStr(SIGNING),
        "timeout_seconds": 2,
        "backoff": Backoff(0.5, 30.0),
        "sleep": lambda _s: None,
        "clock": lambda: NOW,
        "rand": lambda: 1.0,
    }
    return WebhookDelivery(URL, post=post, **{**defaults, **options})


# -- the request -------------------------------------------------------------------


def test_body_and_headers_of_an_alert() -> None:
    body, headers = delivery(Script()).request(ROW)
    payload = json.loads(body)
    key = "velocity:customer:cus_00042:2026-03-01T12:00:00+00:00:43200"
    assert alert_key(ROW) == key
    assert payload == {
        "alert_key": key,
        "id": 7,
        "rule": "velocity",
        "severity": "medium",
        "subject_type": "customer",
        "subject_id": "cus_00042",
        "period_start": "2026-03-01T12:00:00+00:00",
        "period_seconds": 43_200,
        "measured_value": 12.0,
        "threshold": 5.0,
        "currency": None,
        "evidence_event_ids": ["evt_1", "evt_2"],
        "evidence": {"authorizations": 12},
        "created_at": "2026-03-01T12:30:05.250000+00:00",
        "config_version": 3,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == key
    assert headers["User-Agent"].startswith("paymetrics/")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    # what a receiver does: HMAC-SHA256 of the raw body with the shared secret
    expected = hmac.new(SIGNING.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Paymetrics-Signature"], f"sha256={expected}")
    assert delivery(Script()).request(ROW)[0] == body  # stable bytes, stable signature


def test_no_token_and_no_secret_means_no_such_headers() -> None:
    plain = WebhookDelivery(URL, post=Script())
    _, headers = plain.request(ROW)
    assert "Authorization" not in headers
    assert "X-Paymetrics-Signature" not in headers


def test_a_key_outside_ascii_is_percent_encoded_in_the_header() -> None:
    row = {**ROW, "subject_id": "kunde-ä"}
    body, headers = delivery(Script()).request(row)
    assert json.loads(body)["alert_key"] == alert_key(row)
    assert headers["Idempotency-Key"] == alert_key(row).replace("ä", "%C3%A4")
    headers["Idempotency-Key"].encode("ascii")


# -- judging an attempt --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (HttpResponse(200, "OK"), DELIVERED, None),
        (HttpResponse(204, "No Content"), DELIVERED, None),
        (HttpResponse(503, "Service Unavailable"), FAILED, "HTTP 503 Service Unavailable"),
        (HttpResponse(500, "Internal Server Error"), FAILED, "HTTP 500 Internal Server Error"),
        (HttpResponse(429, "Too Many Requests"), FAILED, "HTTP 429 Too Many Requests"),
        (HttpResponse(408, "Request Timeout"), FAILED, "HTTP 408 Request Timeout"),
        (HttpResponse(425, "Too Early"), FAILED, "HTTP 425 Too Early"),
        (HttpResponse(400, "Bad Request"), REJECTED, "HTTP 400 Bad Request"),
        (HttpResponse(401, "Unauthorized"), REJECTED, "HTTP 401 Unauthorized"),
        (HttpResponse(404, "Not Found"), REJECTED, "HTTP 404 Not Found"),
        (HttpResponse(301, "Moved Permanently"), REJECTED, "HTTP 301 Moved Permanently (redir"),
        (
            urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
            FAILED,
            "ConnectionRefusedError: [Errno 111] Connection refused",
        ),
        (urllib.error.URLError(TimeoutError("timed out")), FAILED, "timed out after 2 s"),
        (TimeoutError("timed out"), FAILED, "timed out after 2 s"),
        (ConnectionResetError(104, "Connection reset by peer"), FAILED, "ConnectionResetError"),
    ],
)
def test_each_answer_is_judged(
    answer: HttpResponse | BaseException, status: str, message: str | None
) -> None:
    outcome = delivery(Script(answer)).attempt(b"{}", {})
    assert outcome.status == status
    if message is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None
        assert outcome.error.startswith(f"POST {URL}: {message}")


def test_messages_hold_neither_secrets_nor_the_url_query() -> None:
    url = "https://user:pw@hooks.example:8443/in?api_key=qk-123#frag"
    assert display_url(url) == "https://hooks.example:8443/in"
    assert display_url("http://[::1]:9000/x?a=b") == "http://[::1]:9000/x"
    leaky = OSError(f"proxy refused Bearer {TOKEN} and {SIGNING}")
    outcome = WebhookDelivery(
        url, bearer_token=SecretStr(TOKEN), signing_secret=SecretStr(SIGNING), post=Script(leaky)
    ).attempt(b"{}", {})
    assert outcome.error == (
        "POST https://hooks.example:8443/in: OSError: proxy refused Bearer "
        "********** and **********"
    )
    assert TOKEN not in outcome.error
    assert "qk-123" not in outcome.error
    assert "pw" not in outcome.error
    shown = repr(delivery(Script()))
    assert TOKEN not in shown
    assert SIGNING not in shown


# -- backoff -------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff(base_seconds=0.5, max_seconds=30.0)
    assert [backoff.delay(n, rand=lambda: 1.0) for n in range(1, 9)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff.delay(3, rand=lambda: 0.0) == 0.0
    assert backoff.delay(3, rand=lambda: 0.25) == 0.5
    assert backoff.delay(10_000, rand=lambda: 1.0) == 30.0  # no overflow


def test_retry_after_replaces_the_backoff_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=0.5, max_seconds=30.0)
    assert backoff.delay(1, retry_after=5.0, rand=lambda: 1.0) == 5.0
    assert backoff.delay(1, retry_after=3600.0) == 30.0
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(" 120 ", NOW) == 120.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:45 GMT", NOW) == 45.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", NOW) == 0.0  # in the past
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


# -- passes against a database -------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    metadata.create_all(engine, tables=[compliance_alerts])
    with engine.begin() as conn:
        conn.execute(
            sa.insert(compliance_alerts),
            [
                {
                    **{k: v for k, v in ROW.items() if k != "id"},
                    "subject_id": f"cus_{n}",
                    "created_at": ROW["created_at"] + dt.timedelta(seconds=n),
                }
                for n in range(3)
            ],
        )
    yield engine
    engine.dispose()


def states(engine: sa.Engine) -> list[tuple[Any, ...]]:
    t = compliance_alerts
    stmt = sa.select(
        t.c.subject_id, t.c.delivery_status, t.c.delivery_attempts, t.c.last_delivery_error
    ).order_by(t.c.id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)]


def test_a_pass_retries_with_backoff_then_leaves_the_rest_for_the_next(
    engine: sa.Engine,
) -> None:
    waits: list[float] = []
    down = HttpResponse(503, "Service Unavailable", "1")
    post = Script(down, HttpResponse(429, "Too Many Requests"), down)
    deliverer = delivery(post, attempts_per_pass=3, max_attempts=4, sleep=waits.append)
    report = deliverer.deliver_pending(engine)
    assert waits == [1.0, 1.0]  # Retry-After: 1, then no header: 0.5 × 2 × rand 1.0
    assert report.failed
    assert report.counts() == {
        "delivered": 0,
        "failed": 1,
        "rejected": 0,
        "skipped": 0,
        "not_attempted": 2,
    }
    error = f"POST {URL}: HTTP 503 Service Unavailable"
    assert states(engine) == [
        ("cus_0", "failed", 3, error),
        *[(f"cus_{n}", None, None, None) for n in (1, 2)],
    ]

    again = deliverer.deliver_pending(engine)  # one attempt left for cus_0
    assert [(r.alert_key.split(":")[2], r.status, r.attempts) for r in again.results] == [
        ("cus_0", DELIVERED, 4),
        ("cus_1", DELIVERED, 1),
        ("cus_2", DELIVERED, 1),
    ]
    assert len(post.sent) == 6
    assert {s[2]["Idempotency-Key"] for s in post.sent[:4]} == {post.sent[0][2]["Idempotency-Key"]}


def test_since_and_limit_choose_the_oldest_alerts(engine: sa.Engine) -> None:
    post = Script()
    deliverer = delivery(post)
    since = ROW["created_at"] + dt.timedelta(seconds=1)
    report = deliverer.deliver_pending(engine, since=since, limit=1)
    assert [r.alert_key.split(":")[2] for r in report.results] == ["cus_1"]
    assert [s[1] for s in states(engine)] == [None, "delivered", None]


def test_a_stop_request_ends_the_pass_between_alerts(engine: sa.Engine) -> None:
    post = Script()

    def stop_after_one() -> bool:
        return len(post.sent) >= 1

    report = delivery(post, should_stop=stop_after_one).deliver_pending(engine)
    assert [r.status for r in report.results] == [DELIVERED]
    assert report.not_attempted == 2


# -- settings ------------------------------------------------------------------------


def test_settings_check_the_url_and_hide_the_secrets() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        WebhookSettings(url="ftp://hooks.example/x")
    with pytest.raises(ValidationError, match="credentials in the URL"):
        WebhookSettings(url="https://me:pw@hooks.example/x")
    with pytest.raises(ValidationError, match="at least backoff_base_seconds"):
        WebhookSettings(backoff_base_seconds=5, backoff_max_seconds=1)
    with pytest.raises(ValueError, match=r"set compliance\.webhook\.url \(or give --url\)"):
        WebhookDelivery.from_settings(WebhookSettings())
    settings = Settings.model_validate(
        {
            "compliance": {
                "webhook": {"url": URL, "bearer_token": TOKEN, "max_attempts": 4},
            }
        }
    )
    webhook = settings.compliance.webhook
    assert TOKEN not in repr(webhook)
    assert TOKEN not in settings.model_dump_json()
    built = WebhookDelivery.from_settings(webhook, attempts_per_pass=1)
    assert (built.url, built.max_attempts, built.attempts_per_pass) == (URL, 4, 1)
    assert built.request(ROW)[1]["Authorization"] == f"Bearer {TOKEN}"


# -- in a running pipeline -----------------------------------------------------------


def test_background_delivery_runs_only_when_configured_and_ends_with_a_last_pass(
    engine: sa.Engine,
) -> None:
    off = ComplianceSettings(enabled=False, webhook=WebhookSettings(url=URL))
    with delivering_in_background(off, engine) as nothing:
        assert nothing is None
    no_url = ComplianceSettings(enabled=True)
    with delivering_in_background(no_url, engine) as nothing:
        assert nothing is None
    on = ComplianceSettings(enabled=True, webhook=WebhookSettings(url=URL, interval_seconds=3600))
    post = Script()
    with delivering_in_background(on, engine, post=post) as running:
        assert running is not None
    assert [s[1] for s in states(engine)] == [DELIVERED] * 3
    assert len(post.sent) == 3


def test_background_delivery_stops_at_once_when_the_run_fails(engine: sa.Engine) -> None:
    on = ComplianceSettings(enabled=True, webhook=WebhookSettings(url=URL, interval_seconds=3600))
    gate = threading.Event()

    def slow_post(
        url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResponse:
        gate.wait(5)
        return HttpResponse(503, "Service Unavailable")

    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="batch failed"),
        delivering_in_background(on, engine, post=slow_post),
    ):
        raise RuntimeError("batch failed")
    gate.set()
    assert time.monotonic() - started < 3
