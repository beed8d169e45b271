"""A local S3 emulator (moto's server), started by the test suite, with real credentials.

* `moto_s3`: a session fixture (one server per xdist worker) yielding a `MotoS3`: the
  endpoint on 127.0.0.1 and a free port, an access key and secret that moto checks, and
  `storage_options()` for fsspec/s3fs (`key`, `secret`, top-level `endpoint_url`).
  `MotoS3.user(policy)` makes another IAM user with its own key, for credentials allowed
  less (read only, write only).

The server is `python -m moto.server` (from `moto[server]`, a dev dependency) in a
subprocess. Moto accepts any key until it is told to check: the fixture creates an IAM
user (policy: everything) and its access key, then switches authentication on
(`/moto-api/reset-auth` with 0), so a wrong key or secret is refused as AWS refuses it.
Nothing leaves 127.0.0.1; every client names the endpoint, and the AWS environment of
this process (and so of the `paymetrics` commands it starts) is emptied for the session:
no credentials or profile from the developer's machine, no instance metadata look-up.

Without moto (or flask, its server part) or s3fs, the tests skip with the reason, unless
`PAYMETRICS_REQUIRE_SERVICES=1`, where they fail with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
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
START_TIMEOUT_SECONDS = 60
REGION = "us-east-1"
EVERYTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# The developer's AWS setup must not reach the tests (nor the tests reach AWS through it).
_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(
            f"{reason} ({REQUIRE_SERVICES_ENV}=1: required services must be available)",
            pytrace=False,
        )
    pytest.skip(reason)


def _missing() -> str | None:
    """Why the emulator cannot run here, or None."""
    for module, install in (
        ("moto", "moto[server]"),
        ("flask", "moto[server]"),
        ("boto3", "moto[server]"),
        ("s3fs", "s3fs"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"S3 tests need {install} (pip install '{install}'): {module} is not installed"
    return None


@dataclass(frozen=True)
class MotoS3:
    port: int
    key: str
    secret: str

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, **changes: Any) -> dict[str, Any]:
        """s3fs options for this emulator (`changes` replace or add some)."""
        options = {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint_url}
        return {**options, **changes}

    def env(self, **changes: str) -> dict[str, str]:
        """The options as `paymetrics` reads them from the environment."""
        return {
            f"PAYMETRICS__STORAGE__ARCHIVE_OPTIONS__{name.upper()}": value
            for name, value in self.storage_options(**changes).items()
        }

    def client(self, service: str, key: str | None = None, secret: str | None = None) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=key or self.key,
            aws_secret_access_key=secret or self.secret,
        )

    def user(self, policy: dict[str, Any]) -> tuple[str, str]:
        """(key, secret) of a new IAM user allowed `policy` only."""
        return _user(self.client("iam"), f"u-{uuid.uuid4().hex[:12]}", policy)

    @staticmethod
    def free_port() -> int:
        """A port on 127.0.0.1 where nothing listens (right now)."""
        return free_port()


def _user(iam: Any, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="archive", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    log = workdir / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    for _attempt in range(3):  # another process may take the free port before moto
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port):
                return process, port
            time.sleep(0.1)
        if process.poll() is None:
            _stop(process)
            pytest.fail(
                f"moto did not accept connections on 127.0.0.1:{port} within "
                f"{START_TIMEOUT_SECONDS} s; log: {_tail(log, 20)}",
                pytrace=False,
            )
    pytest.fail(
        f"moto exited at start (exit {process.returncode}); log: {_tail(log, 20)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _enforce_authentication(port: int) -> None:
    """From the next request on, moto checks every signature and IAM policy."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http to 127.0.0.1)
        assert response.status == 200


@pytest.fixture(scope="session", autouse=True)
def _no_aws_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No AWS credentials, profile, endpoint or instance metadata from this machine."""
    nowhere = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as patch:
        for name in _AWS_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(nowhere))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        yield


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A running moto S3 (and IAM) server on 127.0.0.1, checking keys (one per worker)."""
    missing = _missing()
    if missing:
        _unavailable(missing)
        raise AssertionError("unreachable")
    workdir = tmp_path_factory.mktemp("moto")
    process, port = _start(workdir)
    try:
        # Before authentication is on, any key is accepted: make the one that will be.
        bootstrap = MotoS3(port, "bootstrap", "bootstrap").client("iam")
        key, secret = _user(bootstrap, "paymetrics-tests", EVERYTHING)
        _enforce_authentication(port)
        yield MotoS3(port, key, secret)
    finally:
        _stop(process)


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A bucket name unique to the test (created by whoever writes first)."""
    return f"t-{uuid.uuid4().hex}"
