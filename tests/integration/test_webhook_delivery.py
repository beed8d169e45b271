"""Webhook delivery of compliance alerts against a real local HTTP server: alerts made by
a simulated run, POSTed by `paymetrics alerts deliver` (or `WebhookDelivery`), each
outcome recorded on the alert, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from tests.conftest import CliResult, query_rows, write_simulated
from tests.integration.test_compliance import run
from tests.services import free_port
from typer.testing import CliRunner

from paymetrics.cli import app
from paymetrics.compliance.webhook import Backoff, WebhookDelivery, alert_key
from paymetrics.simulator import SimulatorConfig
from paymetrics.storage.tables import compliance_alerts

TOKEN = "tok-Zq81-never-shown"
SIGNING_SECRET = "sig-Kx93-never-shown"
FAST = Backoff(base_seconds=0.001, max_seconds=0.01)
CONFIG = """\
compliance:
  webhook:
    attempts_per_pass: 2
    max_attempts: 5
    timeout_seconds: 5
    backoff_base_seconds: 0.001
    backoff_max_seconds: 0.01
    signing_secret: env:PM_TEST_WEBHOOK_SIGNING
"""
SECRET_ENV = {
    "PAYMETRICS__COMPLIANCE__WEBHOOK__BEARER_TOKEN": TOKEN,
    "PM_TEST_WEBHOOK_SIGNING": SIGNING_SECRET,
}


# -- a local receiver ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: records every request; answers with the next
    `(status, headers)` of `script`, then `default` once the script is used up."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    port: int = 0
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status, headers = (
                        receiver.script.pop(0) if receiver.script else (receiver.default, {})
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# -- alerts to deliver -------------------------------------------------------------


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three large transactions in 2,000 events: three alerts."""
    path = tmp_path_factory.mktemp("webhook") / "large.jsonl"
    write_simulated(path, SimulatorConfig(events=2000, seed=5, scenario="large_transaction"))
    return path


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def alerts_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, events_file: Path
) -> str:
    """A database holding the alerts of a run with compliance on (made once per module)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('webhook-db') / 'alerts.db'}"
    else:
        make: Callable[[str], str] = request.getfixturevalue("postgres_schema")
        url = make("webhook")
    run(url, events_file)
    return url


@pytest.fixture
def engine(alerts_db: str) -> Iterator[sa.Engine]:
    """The alerts database, every alert undelivered again (delivery columns only change)."""
    engine = sa.create_engine(alerts_db)
    with engine.begin() as conn:
        conn.execute(
            sa.update(compliance_alerts).values(
                delivery_status=None,
                delivery_attempts=None,
                last_delivery_error=None,
                delivered_at=None,
            )
        )
    yield engine
    engine.dispose()


@pytest.fixture
def db(alerts_db: str, engine: sa.Engine) -> str:
    """The URL of `engine`'s database (reset for this test)."""
    return alerts_db


def stored(engine: sa.Engine) -> list[dict[str, Any]]:
    """The alerts with paymetrics' column types (aware UTC datetimes), oldest first."""
    t = compliance_alerts
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.created_at, t.c.id)).mappings()
        return [dict(row) for row in rows]


def deliverer(url: str, **options: Any) -> WebhookDelivery:
    return WebhookDelivery(url, backoff=FAST, timeout_seconds=5, **options)


def everything_stored(db: str) -> str:
    return json.dumps(query_rows(db, "SELECT * FROM compliance_alerts"), default=str)


def assert_secrets_hidden(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert SIGNING_SECRET not in text


# -- the tests ---------------------------------------------------------------------


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """`paymetrics *args` in this process (a subprocess costs a second of imports); the
    command's logging set-up (a handler on a stream closed after it) is undone."""
    logger = logging.getLogger("paymetrics")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        return CliRunner().invoke(app, [str(a) for a in args], env=env)
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])


def test_each_alert_is_delivered_once_with_its_json_key_and_signature(
    db: str, engine: sa.Engine, tmp_path: Path
) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(CONFIG)
    alerts = stored(engine)
    assert len(alerts) == 3
    assert {a["delivery_status"] for a in alerts} == {None}
    with Receiver() as receiver:
        args = ("alerts", "deliver", "-c", config, "--url", receiver.url, "--db", db)
        first = invoke(*args, "--format", "json", env=SECRET_ENV)
        assert first.exit_code == 0, first.output
        report = json.loads(first.stdout)
        assert report["counts"] == {
            "delivered": 3,
            "failed": 0,
            "rejected": 0,
            "skipped": 0,
            "not_attempted": 0,
        }
        again = invoke(*args, env=SECRET_ENV)
        assert again.exit_code == 0, again.output
        assert "delivered" in again.stdout
    assert len(receiver.requests) == 3  # the second pass sent nothing

    for alert, request in zip(alerts, receiver.requests, strict=True):  # oldest first
        body = request.json()
        assert request.path == "/hooks/alerts"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"].startswith("paymetrics/")
        assert request.headers["Idempotency-Key"] == body["alert_key"] == alert_key(alert)
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        expected = hmac.new(SIGNING_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Paymetrics-Signature"] == f"sha256={expected}"
        assert body["id"] == alert["id"]
        assert body["rule"] == "large_transaction"
        assert body["subject_id"] == alert["subject_id"]
        assert dt.datetime.fromisoformat(body["period_start"]) == alert["period_start"]
        assert body["period_start"].endswith("+00:00")
        assert body["evidence_event_ids"] == json.loads(alert["evidence_event_ids"])
        assert body["evidence"] == json.loads(alert["evidence"])
        assert body["threshold"] == alert["threshold"]

    after = stored(engine)
    assert {(a["delivery_status"], a["delivery_attempts"]) for a in after} == {("delivered", 1)}
    assert all(a["delivered_at"] is not None and a["last_delivery_error"] is None for a in after)
    listed = invoke("query", "alerts", "--status", "delivered", "--db", db, "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [(r["delivery_status"], r["delivery_attempts"]) for r in json.loads(listed.stdout)] == [
        ("delivered", 1)
    ] * 3
    assert_secrets_hidden(
        first.stdout, first.stderr, again.stdout, again.stderr, everything_stored(db)
    )


def test_a_503_is_retried_with_backoff_then_delivered(engine: sa.Engine) -> None:
    waits: list[float] = []
    with Receiver(script=[(503, {"Retry-After": "0"})]) as receiver:
        report = deliverer(receiver.url, sleep=waits.append).deliver_pending(engine)
    assert report.counts()["delivered"] == 3
    assert not report.failed
    assert len(receiver.requests) == 4
    assert waits == [0.0]  # Retry-After: 0 wins over the jittered backoff
    first, *rest = stored(engine)
    assert (first["delivery_status"], first["delivery_attempts"]) == ("delivered", 2)
    assert first["last_delivery_error"] is None
    assert {(a["delivery_status"], a["delivery_attempts"]) for a in rest} == {("delivered", 1)}
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert keys[0] == keys[1]  # the retry is the same delivery


def test_a_400_is_rejected_and_never_retried(engine: sa.Engine) -> None:
    with Receiver(default=400) as receiver:
        report = deliverer(receiver.url).deliver_pending(engine)
        later = deliverer(receiver.url).deliver_pending(engine)
    assert report.counts()["rejected"] == 3
    assert not report.failed  # a rejection is the receiver's answer, not an outage
    assert later.results == []
    assert len(receiver.requests) == 3
    for alert in stored(engine):
        assert (alert["delivery_status"], alert["delivery_attempts"]) == ("rejected", 1)
        assert alert["last_delivery_error"] == f"POST {receiver.url}: HTTP 400 Bad Request"


def test_an_unreachable_endpoint_fails_with_exit_1_then_a_later_pass_delivers(
    db: str, engine: sa.Engine, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    config = tmp_path / "paymetrics.yaml"
    config.write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/alerts"
    down = run_cli(
        "alerts", "deliver", "-c", config, "--url", f"{url}?key=query-secret", "--db", db,
        env=SECRET_ENV,
    )  # fmt: skip
    assert down.returncode == 1, down.describe()
    assert f"POST {url}: ConnectionRefusedError" in down.stderr
    assert "query-secret" not in down.stdout + down.stderr
    first, *rest = stored(engine)
    assert (first["delivery_status"], first["delivery_attempts"]) == ("failed", 2)
    assert first["last_delivery_error"].startswith(f"POST {url}: ConnectionRefusedError")
    # the pass stopped at the failing endpoint instead of trying every alert
    assert {(a["delivery_status"], a["delivery_attempts"]) for a in rest} == {(None, None)}
    assert_secrets_hidden(down.stdout, down.stderr, everything_stored(db))

    with Receiver(port=port) as receiver:
        report = deliverer(url, max_attempts=5).deliver_pending(engine)
    assert report.counts()["delivered"] == 3
    assert len(receiver.requests) == 3
    first, *rest = stored(engine)
    assert (first["delivery_status"], first["delivery_attempts"]) == ("delivered", 3)
    assert {(a["delivery_status"], a["delivery_attempts"]) for a in rest} == {("delivered", 1)}


def test_attempts_run_out_across_passes(engine: sa.Engine) -> None:
    """503 forever: two attempts per pass, five in all; then the alert is left alone."""
    with Receiver(default=503) as receiver:
        delivery = deliverer(receiver.url, attempts_per_pass=2, max_attempts=5)
        passes = [delivery.deliver_pending(engine, limit=1) for _ in range(4)]
    assert [r.counts()["failed"] for r in passes] == [1, 1, 1, 1]
    attempts = [a["delivery_attempts"] or 0 for a in stored(engine)]
    assert attempts[0] == 5  # 2 + 2 + 1, then no more
    assert sum(attempts) == len(receiver.requests) == 7
    assert passes[-1].results[0].alert_id != passes[0].results[0].alert_id


def test_deliverers_racing_never_lose_a_count(engine: sa.Engine) -> None:
    """Two deliverers read the same pending alerts: each attempt is claimed by one."""
    with Receiver() as receiver:
        one, two = deliverer(receiver.url), deliverer(receiver.url)
        rows = one.pending(engine)
        results: list[Sequence[Any]] = [
            [one.deliver(engine, row) for row in rows],
            [two.deliver(engine, row) for row in rows],  # read before `one` delivered
        ]
    assert [r.status for r in results[0]] == ["delivered"] * 3
    assert [r.status for r in results[1]] == ["skipped"] * 3
    assert len(receiver.requests) == 3
    assert {(a["delivery_status"], a["delivery_attempts"]) for a in stored(engine)} == {
        ("delivered", 1)
    }


def test_a_run_with_a_webhook_delivers_its_alerts_before_it_exits(
    events_file: Path, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    """`paymetrics run` delivers in the background; its last pass sends the last alerts."""
    db = f"sqlite:///{tmp_path / 'run.db'}"
    config = tmp_path / "paymetrics.yaml"
    with Receiver() as receiver:
        config.write_text(
            "compliance:\n  enabled: true\n  webhook:\n"
            f"    url: {receiver.url}\n    interval_seconds: 3600\n"
        )
        ran = run_cli(
            "run", "-c", config, "--source", f"file:{events_file}", "--db", db, "--no-archive",
            "-q", env=SECRET_ENV,
        )  # fmt: skip
        assert ran.returncode == 0, ran.describe()
    assert len(receiver.requests) == 3
    assert {r.headers["Authorization"] for r in receiver.requests} == {f"Bearer {TOKEN}"}
    states = query_rows(db, "SELECT delivery_status, delivery_attempts FROM compliance_alerts")
    assert states == [{"delivery_status": "delivered", "delivery_attempts": 1}] * 3
    assert_secrets_hidden(ran.stdout, ran.stderr)


def test_retry_makes_failed_and_rejected_alerts_deliverable_again(
    db: str, engine: sa.Engine
) -> None:
    """`alerts retry`: the chosen failed or rejected alerts get a fresh count of attempts
    and the next pass delivers them; a delivered alert is never reset."""
    with Receiver(default=400) as receiver:
        deliverer(receiver.url).deliver_pending(engine, limit=1)  # the oldest: rejected
    with Receiver(default=503) as receiver:
        deliverer(receiver.url, attempts_per_pass=1, max_attempts=1).deliver_pending(
            engine, limit=1
        )  # the next: failed, attempts used up
    with Receiver() as receiver:  # the last: delivered (the failed one has no attempts left)
        deliverer(receiver.url, max_attempts=1).deliver_pending(engine)
    rejected, failed, delivered = stored(engine)
    assert [a["delivery_status"] for a in (rejected, failed, delivered)] == [
        "rejected",
        "failed",
        "delivered",
    ]

    refused = invoke("alerts", "retry", "--db", db)
    assert refused.exit_code != 0
    assert "--id N or --status failed|rejected" in refused.output
    result = invoke("alerts", "retry", "--status", "failed", "--db", db)
    assert result.exit_code == 0, result.output
    assert f"1 alert will be delivered again: {failed['id']}" in result.output
    result = invoke("alerts", "retry", "--id", str(rejected["id"]), "--id", str(delivered["id"]),
                    "--db", db)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"1 alert will be delivered again: {rejected['id']}" in result.output

    after = {a["id"]: a for a in stored(engine)}
    for alert in (rejected, failed):
        assert (after[alert["id"]]["delivery_status"], after[alert["id"]]["delivery_attempts"]) == (
            None,
            0,
        )
        assert after[alert["id"]]["last_delivery_error"]  # kept until the next attempt
    assert after[delivered["id"]]["delivery_status"] == "delivered"
    with Receiver() as receiver:
        report = deliverer(receiver.url).deliver_pending(engine)
    assert report.counts()["delivered"] == 2
    assert len(receiver.requests) == 2
