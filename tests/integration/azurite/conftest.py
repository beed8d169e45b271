"""Azurite (the Azure Storage emulator), installed and started by the test suite.

* `azurite`: a session fixture (one emulator per xdist worker) yielding an `Azurite`:
  the blob endpoint on 127.0.0.1, a connection string with the well-known
  `devstoreaccount1` key, and `storage_options()` for fsspec/adlfs.

The first session installs Azurite from npm into `AZURITE_HOME` (`<venv>/azurite/` when
pytest runs in a virtualenv, which `make clean` removes; else
`~/.cache/paymetrics/azurite`), under a file lock so that xdist workers install it once.
That install is the only network access: the emulator listens on 127.0.0.1 only, with
telemetry off, and every client points at it. An `azurite-blob` already on PATH is used
as it is. Without node/npm, or when the install fails, the tests skip with the reason,
unless `PAYMETRICS_REQUIRE_SERVICES=1`, where they fail with it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.services import accepts as _accepts
from tests.services import free_port
from tests.services import log_tail as _tail

REQUIRE_SERVICES_ENV = "PAYMETRICS_REQUIRE_SERVICES"
AZURITE_HOME_ENV = "PAYMETRICS_AZURITE_HOME"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
INSTALL_TIMEOUT_SECONDS = 600
START_TIMEOUT_SECONDS = 60


def azurite_home() -> Path:
    if os.environ.get(AZURITE_HOME_ENV):
        return Path(os.environ[AZURITE_HOME_ENV])
    if sys.prefix != sys.base_prefix:  # a virtualenv: untracked, removed by `make clean`
        return Path(sys.prefix) / "azurite"
    return Path.home() / ".cache" / "paymetrics" / "azurite"


def _azurite_spec() -> str:
    """azurite@3, or its last release that still runs on Node < 22 (3.36 needs 21, 3.37 22)."""
    try:
        version = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        major = int(version.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return "azurite@3"
    return "azurite@3" if major >= 22 else "azurite@3.35.0"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(
            f"{reason} ({REQUIRE_SERVICES_ENV}=1: required services must be available)",
            pytrace=False,
        )
    pytest.skip(reason)


def _install() -> Path | str:
    """The azurite-blob executable, or why there is none."""
    on_path = shutil.which("azurite-blob")
    if on_path:
        return Path(on_path)
    if not shutil.which("node") or not shutil.which("npm"):
        return "Azurite tests need Node.js and npm (node/npm not found on PATH)"
    home = azurite_home()
    home.mkdir(parents=True, exist_ok=True)
    spec = _azurite_spec()
    executable = home / "node_modules" / ".bin" / "azurite-blob"
    marker = home / ".installed"
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other xdist worker waits, then reuses it
        if marker.exists() and marker.read_text() == spec and executable.exists():
            return executable
        log = home / "npm-install.log"
        started = time.monotonic()
        try:
            with log.open("wb") as out:
                done = subprocess.run(
                    [
                        "npm",
                        "install",
                        "--prefix",
                        str(home),
                        "--no-audit",
                        "--no-fund",
                        "--no-save",
                        "--loglevel=error",
                        spec,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_SECONDS,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            return f"npm install {spec} took over {INSTALL_TIMEOUT_SECONDS} s (log: {log})"
        if done.returncode != 0 or not executable.exists():
            tail = _tail(log, 5)
            return f"npm install {spec} into {home} failed (exit {done.returncode}): {tail}"
        marker.write_text(spec)
        (home / "install-seconds.txt").write_text(f"{time.monotonic() - started:.1f}\n")
    return executable


@dataclass(frozen=True)
class Azurite:
    port: int
    account_name: str = ACCOUNT_NAME
    account_key: str = ACCOUNT_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def storage_options(self) -> dict[str, Any]:
        """fsspec/adlfs options for this emulator."""
        return {"connection_string": self.connection_string}

    def connection_string_with(self, *, port: int | None = None, key: str | None = None) -> str:
        """The connection string with another port (e.g. a closed one) or account key."""
        return Azurite(
            port or self.port, self.account_name, key or self.account_key
        ).connection_string

    @staticmethod
    def free_port() -> int:
        """A port on 127.0.0.1 where nothing listens (right now)."""
        return free_port()


def _start(executable: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    log = workdir / "azurite.log"
    for _attempt in range(3):  # another process may take the free port before Azurite
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    str(executable),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(port),
                    "--location",
                    str(workdir / "data"),
                    "--silent",
                    "--debug",
                    str(workdir / "debug.log"),
                    "--disableTelemetry",
                    "--skipApiVersionCheck",
                    "--loose",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port):
                return process, port
            time.sleep(0.1)
        if process.poll() is None:
            _stop(process)
            pytest.fail(
                f"Azurite did not accept connections on 127.0.0.1:{port} within "
                f"{START_TIMEOUT_SECONDS} s; log: {_tail(log, 20)}",
                pytrace=False,
            )
    pytest.fail(
        f"Azurite exited at start (exit {process.returncode}); log: {_tail(log, 20)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite blob service on 127.0.0.1 (one per xdist worker)."""
    executable = _install()
    if isinstance(executable, str):
        _unavailable(executable)
        raise AssertionError("unreachable")
    workdir = tmp_path_factory.mktemp("azurite")
    process, port = _start(executable, workdir)
    try:
        yield Azurite(port)
    finally:
        _stop(process)


@pytest.fixture
def azurite_container(azurite: Azurite) -> str:
    """A container name unique to the test (created by whoever writes first)."""
    return f"t-{uuid.uuid4().hex}"
