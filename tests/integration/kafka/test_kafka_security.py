"""`paymetrics run --source kafka://…` over SASL_SSL, credentials from `source.options`.

The Event Hubs shape (docs/deploy.md §8): `security.protocol: SASL_SSL`, `sasl.mechanism:
PLAIN`, `sasl.username: $ConnectionString`, `sasl.password` a connection string given as
`env:NAME` in a YAML file passed with `--config`, and `ssl.ca.location` the broker's
self-signed certificate (made here for CN/SAN 127.0.0.1, localhost).

The broker is the suite's Tansu, plaintext on a loopback port, behind `SaslGateway`
(secure_broker.py), which terminates TLS and checks SASL/PLAIN as Event Hubs' front end
does, then relays to Tansu; Tansu advertises the gateway, so every connection of the
client (bootstrap, partition leader, group coordinator) goes through TLS and a login.
Tansu 0.6.0 itself can do neither: `--cert` and `--key` may not be given together, PLAIN
is not offered, and SCRAM users are never stored (details in secure_broker.py).

Proven: the run stores what a file run of the same events stores; the password is in
no output (also at DEBUG) nor in the database; `config show` hides it; a wrong password
and an untrusted certificate are refused at the broker's door, and such a run ends with
a clear `error:` line and exit 2 instead of reading nothing for ever.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import CliResult, cli_command, cli_env, dump_table, query_rows, run_cli
from tests.integration.kafka.conftest import (
    _broker_env,
    _stop,
    _unavailable,
    create_topic,
    tansu_or_skip,
)
from tests.integration.kafka.secure_broker import SaslGateway, make_certificate
from tests.integration.kafka.test_kafka_source import FAST, SAME
from tests.services import free_port
from tests.services import log_tail as _tail

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

USERNAME = "$ConnectionString"
PASSWORD_ENV = "PAYMETRICS_TEST_KAFKA_PASSWORD"
#: New ones per session: nothing else holds them, so finding one anywhere is a leak.
KEY, WRONG_KEY = (uuid.uuid4().hex + uuid.uuid4().hex for _ in range(2))
ENDPOINT = "Endpoint=sb://paymetrics-test.servicebus.windows.net/;SharedAccessKeyName=listen"
PASSWORD = f"{ENDPOINT};SharedAccessKey={KEY}="
WRONG_PASSWORD = f"{ENDPOINT};SharedAccessKey={WRONG_KEY}="
START_TIMEOUT_SECONDS = 30
#: A run that cannot log in must end by itself well within this (it gets --until-idle 3).
BOUNDED_SECONDS = 60


@dataclass(frozen=True)
class SecureBroker:
    """Tansu behind `gateway`: clients connect to 127.0.0.1:`port` with SASL_SSL."""

    port: int
    ca: Path
    gateway: SaslGateway
    log: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def options(self, **changes: str) -> dict[str, str]:
        """The librdkafka security settings, as `source.options` holds them."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": USERNAME,
            "sasl.password": PASSWORD,
            "ssl.ca.location": str(self.ca),
            **changes,
        }

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.options(), **extra}

    def create_topic(self, partitions: int) -> str:
        from confluent_kafka.admin import AdminClient

        return create_topic(AdminClient(self.config()), partitions=partitions)

    def publish(self, topic: str, lines: list[bytes]) -> None:
        """Keyed by merchant, as test_kafka_source.publish, over SASL_SSL."""
        from confluent_kafka import Producer

        producer = Producer(self.config(**{"linger.ms": 5}))
        for line in lines:
            try:
                key = str(json.loads(line).get("merchant_id", ""))
            except (ValueError, AttributeError):  # the simulator's invalid lines
                key = ""
            producer.produce(topic, value=line, key=key.encode())
        assert producer.flush(30) == 0


def _ready(port: int, options: dict[str, str]) -> str | None:
    """None when metadata comes back through the gateway (TLS and a login), else why not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        shown = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", **options}).list_topics(
            timeout=5
        )
    except KafkaException as error:
        return str(error)
    return None if shown.brokers else "metadata lists no broker"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Tansu on a loopback port behind a TLS + SASL/PLAIN gateway (one per module)."""
    executable, _version = tansu_or_skip()
    workdir = tmp_path_factory.mktemp("tansu-secure")
    try:
        cert, key = make_certificate(workdir / "tls")
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        _unavailable(f"no self-signed certificate for the TLS broker: {error}")
        raise AssertionError("unreachable") from None
    gateway = SaslGateway(cert, key, {USERNAME: PASSWORD})
    gateway.start()
    log = workdir / "tansu.log"
    process: subprocess.Popen[bytes] | None = None
    probe = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": USERNAME,
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(cert),
    }
    try:
        for _attempt in range(3):  # another process may take the free port before tansu
            gateway.upstream_port = free_port()
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [
                        str(executable),
                        "broker",
                        "--listener-url",
                        f"tcp://127.0.0.1:{gateway.upstream_port}",
                        "--advertised-listener-url",
                        f"tcp://127.0.0.1:{gateway.port}",
                        "--storage-engine",
                        "memory://tansu/",
                        "--cluster-id",
                        f"paymetrics-secure-{uuid.uuid4().hex[:8]}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=workdir,
                    env=_broker_env(),
                )
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            problem: str | None = "did not answer"
            while time.monotonic() < deadline and process.poll() is None:
                problem = _ready(gateway.port, probe)
                if problem is None:
                    break
                time.sleep(0.1)
            if problem is None:
                break
            if process.poll() is None:
                pytest.fail(
                    f"tansu behind the TLS gateway (127.0.0.1:{gateway.port}) not ready within "
                    f"{START_TIMEOUT_SECONDS} s ({problem}); log: {_tail(log, 20)}",
                    pytrace=False,
                )
        else:
            pytest.fail(f"tansu exited at start; log: {_tail(log, 20)}", pytrace=False)
        yield SecureBroker(gateway.port, cert, gateway, log)
    finally:
        if process is not None and process.poll() is None:
            _stop(process)
        gateway.stop()


def write_config(path: Path, options: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"source": {"options": options}}, sort_keys=False))
    return path


def assert_hidden(result: CliResult) -> None:
    """Neither password, nor a piece of either key, in stdout or stderr."""
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        for secret in (PASSWORD, WRONG_PASSWORD, KEY[:16], KEY[-16:], WRONG_KEY[:16]):
            assert secret not in text, f"a secret is in the {name} of paymetrics {result.args}"


def assert_not_stored(db_file: Path) -> None:
    for path in db_file.parent.glob(f"{db_file.name}*"):  # the database, its -wal and -shm
        data = path.read_bytes()
        assert PASSWORD.encode() not in data, f"the password is in {path.name}"
        assert KEY[-16:].encode() not in data, f"the password is in {path.name}"


def kafka_args(broker: SecureBroker, topic: str, group: str, config: Path, db: str) -> list[str]:
    return [
        "run",
        "--config",
        str(config),
        "--source",
        f"kafka://{broker.bootstrap_servers}/{topic}?group={group}&{FAST}",
        "--until-idle",
        "3",
        "--db",
        db,
        "--no-archive",
        "--json",
    ]


def test_a_topic_read_over_sasl_ssl_is_stored_like_the_same_events_from_a_file(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    simulated = SimulatorConfig(events=3_000, seed=29, rate_invalid=0.01, rate_duplicate=0.02)
    with events.open("wb") as handle:
        write_jsonl(simulated, handle)
    lines = events.read_bytes().splitlines()
    topic = secure_broker.create_topic(partitions=3)
    secure_broker.publish(topic, lines)
    config = write_config(
        tmp_path / "paymetrics.yaml",
        secure_broker.options(**{"sasl.password": f"env:{PASSWORD_ENV}"}),
    )
    assert PASSWORD not in config.read_text()

    logins = len(secure_broker.gateway.accepted)
    refused = len(secure_broker.gateway.rejected)
    from_file = f"sqlite:///{tmp_path / 'file.db'}"
    kafka_db = tmp_path / "kafka.db"
    from_kafka = f"sqlite:///{kafka_db}"
    with ThreadPoolExecutor(2) as pool:  # independent: the file run needs no broker
        file_run = pool.submit(
            run_cli,
            *["run", "--source", f"file:{events}", "--db", from_file, "--no-archive", "-q"],
            cwd=tmp_path,
        )
        kafka_run = pool.submit(
            run_cli,
            *kafka_args(secure_broker, topic, "pm-secure", config, from_kafka),
            cwd=tmp_path,
            # The password comes from the environment, through `env:` in the file. At
            # DEBUG (paymetrics logs nothing at DEBUG today: this guards the future).
            env={PASSWORD_ENV: PASSWORD, "PAYMETRICS__LOGGING__LEVEL": "DEBUG"},
            timeout=BOUNDED_SECONDS + 60,
        )
        result = file_run.result()
        assert result.returncode == 0, result.describe()
        result = kafka_run.result()
    assert result.returncode == 0, result.describe()
    assert_hidden(result)
    summary = json.loads(result.stdout)
    assert summary["events_in"] == len(lines)
    assert summary["normalized"] + summary["duplicates"] + summary["dead_lettered"] == len(lines)
    # It came through the door: logged in as $ConnectionString, never refused.
    assert secure_broker.gateway.accepted[logins:], "the run never logged in at the gateway"
    assert set(secure_broker.gateway.accepted[logins:]) == {USERNAME}
    assert len(secure_broker.gateway.rejected) == refused

    for table, exclude in SAME.items():
        assert dump_table(from_kafka, table, exclude=exclude) == dump_table(
            from_file, table, exclude=exclude
        ), table
    reasons = "SELECT reason, count(*) AS n FROM failed_items GROUP BY reason ORDER BY reason"
    assert query_rows(from_kafka, reasons) == query_rows(from_file, reasons)
    partitions = query_rows(from_kafka, "SELECT partition FROM source_checkpoints")
    assert sorted(r["partition"] for r in partitions) == ["0", "1", "2"]
    assert_not_stored(kafka_db)


def test_config_show_hides_the_kafka_password(secure_broker: SecureBroker, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "paymetrics.yaml",
        secure_broker.options(**{"sasl.password": f"env:{PASSWORD_ENV}"}),
    )
    result = run_cli(
        "config",
        "show",
        "--config",
        config,
        cwd=tmp_path,
        # Wide enough that no table cell is folded: a folded secret would slip past the check.
        env={PASSWORD_ENV: PASSWORD, "COLUMNS": "1000"},
    )
    assert result.returncode == 0, result.describe()
    assert_hidden(result)
    rows = {
        cells[0]: cells[1]
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.strip("│ ").split("│")])[0].startswith(
            "source.options."
        )
    }
    # Every option is a secret: all are hidden, the password among them.
    assert rows == {f"source.options.{name}": '"**********"' for name in secure_broker.options()}, (
        result.describe()
    )


@dataclass(frozen=True)
class RefusedRun:
    """A run the broker should not let in, and what the gateway saw meanwhile."""

    result: CliResult
    timed_out: bool
    seconds: float
    logins: list[str]
    refusals: list[str]


UNTRUSTING = "untrusting-client"
"""The user name of the run that trusts another certificate (it should never get to use it)."""


@pytest.fixture(scope="module")
def refused_runs(
    secure_broker: SecureBroker, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RefusedRun]:
    """At once: a run whose `env:` password is wrong, with librdkafka's security and
    configuration debug log on; and a run that trusts another certificate than the
    broker's (with the right password, under its own user name)."""
    tmp_path = tmp_path_factory.mktemp("refused")
    topic = secure_broker.create_topic(partitions=1)
    secure_broker.publish(topic, [b'{"never": "read"}'])
    other_ca, _key = make_certificate(tmp_path / "other", "other")
    runs = {
        "wrong_password": (
            {"debug": "security,conf,broker"},
            WRONG_PASSWORD,
        ),
        "untrusted": (
            {"ssl.ca.location": str(other_ca), "sasl.username": UNTRUSTING},
            PASSWORD,
        ),
    }
    logins = len(secure_broker.gateway.accepted)
    refusals = len(secure_broker.gateway.rejected)
    started = time.monotonic()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, (changes, password) in runs.items():
        options = {"sasl.password": f"env:{PASSWORD_ENV}", **changes}
        config = write_config(tmp_path / f"{name}.yaml", secure_broker.options(**options))
        args = kafka_args(
            secure_broker, topic, f"pm-{name}", config, f"sqlite:///{tmp_path / name}.db"
        )
        processes[name] = subprocess.Popen(
            cli_command(*args),
            cwd=tmp_path,
            # librdkafka logs through paymetrics' logging: DEBUG lets its debug lines out
            env=cli_env({PASSWORD_ENV: password, "PAYMETRICS__LOGGING__LEVEL": "DEBUG"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    outcomes: dict[str, tuple[CliResult, bool, float]] = {}
    for name, process in processes.items():
        timed_out = False
        try:
            stdout, stderr = process.communicate(
                timeout=max(BOUNDED_SECONDS - (time.monotonic() - started), 1)
            )
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            stdout, stderr = process.communicate(timeout=30)
        args = tuple(str(a) for a in process.args[3:])  # type: ignore[index]
        result = CliResult(args, process.returncode, stdout, stderr)
        outcomes[name] = (result, timed_out, time.monotonic() - started)
    logged_in = secure_broker.gateway.accepted[logins:]
    refused = secure_broker.gateway.rejected[refusals:]
    return {
        name: RefusedRun(
            result,
            timed_out,
            seconds,
            [u for u in logged_in if (u == UNTRUSTING) == (name == "untrusted")],
            [u for u in refused if (u == UNTRUSTING) == (name == "untrusted")],
        )
        for name, (result, timed_out, seconds) in outcomes.items()
    }


def paymetrics_error(result: CliResult) -> str:
    """The `error: …` line of paymetrics (not librdkafka's `%3|…|FAIL|…` log lines)."""
    return "\n".join(line for line in result.stderr.splitlines() if line.startswith("error:"))


def test_a_wrong_password_is_refused_at_the_broker_and_shown_nowhere(
    refused_runs: dict[str, RefusedRun],
) -> None:
    run = refused_runs["wrong_password"]
    assert not run.timed_out, f"still running after {BOUNDED_SECONDS} s: {run.result.describe()}"
    assert run.refusals, "the wrong password never reached the gateway"
    assert set(run.refusals) == {USERNAME}
    assert run.logins == []
    # librdkafka's debug log was on (its configuration dump names the property)…
    assert "sasl.password" in run.result.stderr, run.result.describe()
    # … and neither the wrong password nor the right one shows, anywhere.
    assert_hidden(run.result)


def test_a_wrong_password_fails_the_run(refused_runs: dict[str, RefusedRun]) -> None:
    run = refused_runs["wrong_password"]
    assert not run.timed_out, run.result.describe()
    assert run.result.returncode != 0, run.result.describe()
    assert "authentication" in paymetrics_error(run.result).lower(), run.result.describe()


def test_an_untrusted_broker_certificate_is_refused_before_any_login(
    refused_runs: dict[str, RefusedRun],
) -> None:
    run = refused_runs["untrusted"]
    assert not run.timed_out, f"still running after {BOUNDED_SECONDS} s: {run.result.describe()}"
    assert run.logins == [], "the client logged in to a broker it should not trust"
    assert run.refusals == []
    assert "certificate verify failed" in run.result.stderr, run.result.describe()
    assert_hidden(run.result)


def test_an_untrusted_broker_certificate_fails_the_run(
    refused_runs: dict[str, RefusedRun],
) -> None:
    run = refused_runs["untrusted"]
    assert not run.timed_out, run.result.describe()
    assert run.result.returncode != 0, run.result.describe()
    assert "certificate" in paymetrics_error(run.result).lower(), run.result.describe()
