"""`paymetrics run --archive s3://...` against moto's S3: real processes, real objects.

One run writes the archive to `s3://raw/events` with the key, secret and endpoint in the
environment (the way a deployment passes them), another writes the same source to a
local path; the objects, read back with s3fs, must be the local files: same partition
paths, same rows. Re-runs add no object. Neither the secret nor the key id is ever
printed by any command, including when the key or secret is wrong or the endpoint is
down, where the error is one line that names the archive URL.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paymetrics.archive import ARCHIVE_SCHEMA

MotoS3 = Any  # the `moto_s3` fixture's object (tests/integration/s3/conftest.py)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("s3")]

SOURCE = "simulator:?events=3000&seed=3&rate_invalid=0.01&rate_pan_leak=0.01"
ARCHIVE = "s3://raw/events"
# Well-formed (an AWS key id is 20 characters, a secret 40) but not moto's.
WRONG_KEY = "AKIAWRONGWRONGWRONG7"
WRONG_SECRET = "wRoNgSeCrEt/0123456789abcdefghijklmnopqr"


@dataclass
class Runs:
    """Every command the module ran, so that no output escapes the secret check."""

    moto: MotoS3
    work: Path
    results: list[Any] = field(default_factory=list)

    def run(self, run_cli_in: Callable[..., Any], *args: Any, **env: str) -> Any:
        result = run_cli_in(*args, cwd=self.work, env=env)
        self.results.append(result)
        return result

    def env(self, **changes: str) -> dict[str, str]:
        env: dict[str, str] = self.moto.env(**changes)
        return env


def s3_fs(moto: MotoS3) -> Any:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **moto.storage_options())
    return fs


def s3_files(moto: MotoS3, root: str = "raw/events") -> dict[str, pa.Table]:
    """Relative path → rows of every object under `root`, read back through s3fs."""
    fs = s3_fs(moto)
    return {
        path.removeprefix(root + "/"): pq.read_table(io.BytesIO(fs.cat_file(path)))
        for path in fs.find(root)
    }


def local_files(root: Path) -> dict[str, pa.Table]:
    return {
        p.relative_to(root).as_posix(): pq.ParquetFile(p).read()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")  # once per worker, however xdist interleaves modules
def runs(
    moto_s3: MotoS3,
    tmp_path_factory: pytest.TempPathFactory,
    run_cli_in: Callable[..., Any],
) -> Iterator[Runs]:
    """The same source run twice: archive on S3 (a bucket that does not exist yet), and
    archive on a local path."""
    state = Runs(moto_s3, tmp_path_factory.mktemp("s3-archive"))
    assert not s3_fs(moto_s3).exists("raw")
    to_s3 = state.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{state.work / 's3.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--quiet",
        **state.env(),
    )  # fmt: skip
    assert to_s3.returncode == 0, to_s3.describe()
    to_local = state.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{state.work / 'local.db'}",
        "--archive", state.work / "raw", "--batch-max-events", "500", "--quiet",
    )  # fmt: skip
    assert to_local.returncode == 0, to_local.describe()
    yield state
    # after every test of the module: no command printed the secret or key id (or a piece)
    for result in state.results:
        for secret in (moto_s3.secret, moto_s3.key, WRONG_SECRET, WRONG_KEY):
            for text in (result.stdout, result.stderr):
                assert secret not in text, result.describe()
                assert secret[:12] not in text, result.describe()


def test_s3_archive_equals_the_local_archive(runs: Runs) -> None:
    objects = s3_files(runs.moto)
    files = local_files(runs.work / "raw")
    assert sorted(objects) == sorted(files)
    assert len(files) >= 6  # 3000 events in batches of 500
    assert all(name.startswith("date=") and "/hour=" in name for name in objects)
    assert not [name for name in objects if name.rsplit("/", 1)[-1].startswith(".")]
    for name, table in files.items():
        assert objects[name].schema.equals(ARCHIVE_SCHEMA, check_metadata=False), name
        assert objects[name].equals(table), name
    archived = sum(t.num_rows for t in files.values())
    assert archived > 2900  # every valid message: 1 % invalid are dead letters
    assert any(any(t["pan_exposure"].to_pylist()) for t in files.values())


def test_rerunning_adds_no_object(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    before = s3_files(runs.moto)
    again = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 's3.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--json",
        **runs.env(),
    )  # fmt: skip
    assert again.returncode == 0, again.describe()
    assert '"events_in": 0' in again.stdout  # the checkpoint: nothing left to read
    assert s3_files(runs.moto).keys() == before.keys()
    # a fresh database re-reads everything: the same names are rewritten, not added
    fresh = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 'fresh.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--quiet",
        **runs.env(),
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.describe()
    after = s3_files(runs.moto)
    assert after.keys() == before.keys()
    assert all(after[name].equals(before[name]) for name in before)


def test_a_missing_bucket_is_created_for_s3a_too(
    runs: Runs, run_cli_in: Callable[..., Any]
) -> None:
    fs = s3_fs(runs.moto)
    assert not fs.exists("brand-new")
    result = runs.run(
        run_cli_in,
        "run", "--source", "simulator:?events=50&seed=1",
        "--db", f"sqlite:///{runs.work / 'new.db'}",
        "--archive", "s3a://brand-new/deep/prefix", "--quiet",
        **runs.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    fs.invalidate_cache()
    names = fs.find("brand-new")
    assert names
    assert all(n.startswith("brand-new/deep/prefix/date=") for n in names)


def test_query_raw_reads_the_s3_archive(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    local = runs.run(
        run_cli_in, "query", "raw", "--archive", runs.work / "raw", "--format", "json",
        "--limit", "50",
    )  # fmt: skip
    assert local.returncode == 0, local.describe()
    on_s3 = runs.run(
        run_cli_in, "query", "raw", "--archive", ARCHIVE, "--format", "json", "--limit", "50",
        **runs.env(),
    )  # fmt: skip
    assert on_s3.returncode == 0, on_s3.describe()
    assert len(json.loads(on_s3.stdout)) == 50
    assert json.loads(on_s3.stdout) == json.loads(local.stdout)


def test_the_secret_is_not_in_the_summary_or_config(
    runs: Runs, run_cli_in: Callable[..., Any]
) -> None:
    for fmt in ("table", "json"):
        shown = runs.run(run_cli_in, "config", "show", "--format", fmt, **runs.env())
        assert shown.returncode == 0, shown.describe()
    options = json.loads(shown.stdout)["storage"]["archive_options"]
    assert sorted(options) == ["endpoint_url", "key", "secret"]
    # the summaries printed by the module's runs name the archive, not the credentials
    assert ARCHIVE in runs.results[0].stdout


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\S+ (DEBUG|INFO|WARNING) ")


def one_error_line(stderr: str) -> str:
    """The one line that is not a log record (the run logs its config version first)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


def run_failing(runs: Runs, run_cli_in: Callable[..., Any], **changes: str) -> tuple[Any, float]:
    started = time.monotonic()
    result = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 'failing.db'}",
        "--archive", "s3://failing/events", "--quiet",
        **runs.env(**changes),
        # an outage is retried with backoff (storage.retry_*): give up quickly here
        PAYMETRICS__STORAGE__RETRY_INITIAL_SECONDS="0.2",
        PAYMETRICS__STORAGE__RETRY_GIVE_UP_SECONDS="2",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.describe()
    for secret in (runs.moto.secret, runs.moto.key, WRONG_SECRET, WRONG_KEY):
        assert secret not in result.stdout + result.stderr, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return result, elapsed


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"secret": WRONG_SECRET}, "SignatureDoesNotMatch"),
        ({"key": WRONG_KEY}, "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_refused_credentials_fail_at_once_in_one_line(
    runs: Runs, run_cli_in: Callable[..., Any], changes: dict[str, str], code: str
) -> None:
    result, elapsed = run_failing(runs, run_cli_in, **changes)
    line = one_error_line(result.stderr)
    # refused credentials are not retried: ArchiveConfigError is a ValueError, printed as is
    assert line.startswith("error: raw archive s3://failing/events: cannot access bucket "), line
    assert code in line, line
    assert "retrying" not in result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert not s3_fs(runs.moto).exists("failing")


def test_an_endpoint_down_ends_in_one_line(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    down = runs.moto.free_port()  # nothing listens there
    result, elapsed = run_failing(runs, run_cli_in, endpoint_url=f"http://127.0.0.1:{down}")
    line = one_error_line(result.stderr)
    assert line.startswith("error: "), line
    assert "raw archive s3://failing/events: cannot reach bucket 'failing'" in line, line
    assert f"127.0.0.1:{down}" in line, line  # the endpoint is named, the key is not
    assert "gave up after" in line, line
    # retried (ArchiveUnavailable): one log line when the outage starts
    assert "unavailable" in result.stderr
    assert "retrying batch" in result.stderr
    # one attempt per bucket check (no botocore or s3fs retries there), then the
    # pipeline's backoff up to storage.retry_give_up_seconds
    assert elapsed < 30, f"took {elapsed:.0f} s"
