"""`paymetrics run --archive az://...` against Azurite: real processes, real blobs.

One run writes the archive to `az://raw/events` with the connection string in the
environment (the way a deployment passes it), another writes the same source to a local
path; the blobs, read back with adlfs, must be the local files: same partition paths,
same rows. Re-runs add no blob. The account key is never printed by any command,
including when the key is wrong or the endpoint is down, where the error is one line
that names the archive URL.
"""

from __future__ import annotations

import base64
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

Azurite = Any  # the `azurite` fixture's object (tests/integration/azurite/conftest.py)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("azurite")]

SOURCE = "simulator:?events=3000&seed=3&rate_invalid=0.01&rate_pan_leak=0.01"
ARCHIVE = "az://raw/events"
OPTIONS_ENV = "PAYMETRICS__STORAGE__ARCHIVE_OPTIONS__CONNECTION_STRING"
# A well-formed key that is not the account's (64 bytes, base64 like the real one).
WRONG_KEY = base64.b64encode(bytes(range(7, 71))).decode()


@dataclass
class Runs:
    """Every command the module ran, so that no output escapes the secret check."""

    azurite: Azurite
    work: Path
    results: list[Any] = field(default_factory=list)

    def run(self, run_cli_in: Callable[..., Any], *args: Any, **env: str) -> Any:
        result = run_cli_in(*args, cwd=self.work, env=env)
        self.results.append(result)
        return result

    def env(self, connection_string: str | None = None) -> dict[str, str]:
        return {OPTIONS_ENV: connection_string or self.azurite.connection_string}


@pytest.fixture(scope="session")  # once per worker, however xdist interleaves modules
def runs(
    azurite: Azurite,
    tmp_path_factory: pytest.TempPathFactory,
    run_cli_in: Callable[..., Any],
) -> Iterator[Runs]:
    """The same source run twice: archive on Azurite, and archive on a local path."""
    state = Runs(azurite, tmp_path_factory.mktemp("blob-archive"))
    to_blob = state.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{state.work / 'blob.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--quiet",
        **state.env(),
    )  # fmt: skip
    assert to_blob.returncode == 0, to_blob.describe()
    to_local = state.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{state.work / 'local.db'}",
        "--archive", state.work / "raw", "--batch-max-events", "500", "--quiet",
    )  # fmt: skip
    assert to_local.returncode == 0, to_local.describe()
    yield state
    # after every test of the module: no command printed the key (or a piece of it)
    for result in state.results:
        for secret in (azurite.account_key, WRONG_KEY):
            for text in (result.stdout, result.stderr):
                assert secret not in text, result.describe()
                assert secret[:16] not in text, result.describe()


def blob_fs(azurite: Azurite) -> Any:
    return fsspec.filesystem("az", connection_string=azurite.connection_string)


def blob_files(azurite: Azurite, root: str = "raw/events") -> dict[str, pa.Table]:
    """Relative path → rows of every blob under `root`, read back through adlfs."""
    fs = blob_fs(azurite)
    fs.invalidate_cache()
    out = {}
    for path in fs.find(root):
        with fs.open(path, "rb") as handle:
            out[path.removeprefix(root + "/")] = pq.read_table(io.BytesIO(handle.read()))
    return out


def local_files(root: Path) -> dict[str, pa.Table]:
    return {
        p.relative_to(root).as_posix(): pq.ParquetFile(p).read()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_blob_archive_equals_the_local_archive(runs: Runs) -> None:
    blobs = blob_files(runs.azurite)
    files = local_files(runs.work / "raw")
    assert sorted(blobs) == sorted(files)
    assert len(files) >= 6  # 3000 events in batches of 500
    assert all(name.startswith("date=") and "/hour=" in name for name in blobs)
    assert not [name for name in blobs if name.rsplit("/", 1)[-1].startswith(".")]
    for name, table in files.items():
        assert blobs[name].schema.equals(ARCHIVE_SCHEMA, check_metadata=False), name
        assert blobs[name].equals(table), name
    archived = sum(t.num_rows for t in files.values())
    assert archived > 2900  # every valid message: 1 % invalid are dead letters
    assert any(any(t["pan_exposure"].to_pylist()) for t in files.values())


def test_rerunning_adds_no_blob(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    before = blob_files(runs.azurite)
    again = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 'blob.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--json",
        **runs.env(),
    )  # fmt: skip
    assert again.returncode == 0, again.describe()
    assert '"events_in": 0' in again.stdout  # the checkpoint: nothing left to read
    assert blob_files(runs.azurite).keys() == before.keys()
    # a fresh database re-reads everything: the same names are rewritten, not added
    fresh = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 'fresh.db'}",
        "--archive", ARCHIVE, "--batch-max-events", "500", "--quiet",
        **runs.env(),
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.describe()
    after = blob_files(runs.azurite)
    assert after.keys() == before.keys()
    assert all(after[name].equals(before[name]) for name in before)


def test_a_missing_container_is_created(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    fs = blob_fs(runs.azurite)
    assert not fs.exists("brand-new")
    result = runs.run(
        run_cli_in,
        "run", "--source", "simulator:?events=50&seed=1",
        "--db", f"sqlite:///{runs.work / 'new.db'}",
        "--archive", "abfs://brand-new/deep/prefix", "--quiet",
        **runs.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    fs.invalidate_cache()
    names = fs.find("brand-new")
    assert names
    assert all(n.startswith("brand-new/deep/prefix/date=") for n in names)


def test_the_key_is_not_in_the_summary_or_config(
    runs: Runs, run_cli_in: Callable[..., Any]
) -> None:
    for fmt in ("table", "json"):
        shown = runs.run(run_cli_in, "config", "show", "--format", fmt, **runs.env())
        assert shown.returncode == 0, shown.describe()
    options = json.loads(shown.stdout)["storage"]["archive_options"]
    assert list(options) == ["connection_string"]
    # the summaries printed by the module's runs name the archive, not the account
    assert ARCHIVE in runs.results[0].stdout


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\S+ (DEBUG|INFO|WARNING) ")


def one_error_line(stderr: str) -> str:
    """The one line that is not a log record (the run logs its config version first)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


def run_failing(runs: Runs, run_cli_in: Callable[..., Any], connection: str) -> tuple[Any, float]:
    started = time.monotonic()
    result = runs.run(
        run_cli_in,
        "run", "--source", SOURCE, "--db", f"sqlite:///{runs.work / 'failing.db'}",
        "--archive", "az://failing/events", "--quiet",
        **runs.env(connection),
        # an outage is retried with backoff (storage.retry_*): give up quickly here
        PAYMETRICS__STORAGE__RETRY_INITIAL_SECONDS="0.2",
        PAYMETRICS__STORAGE__RETRY_GIVE_UP_SECONDS="2",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.describe()
    for secret in (runs.azurite.account_key, WRONG_KEY):
        assert secret not in result.stdout + result.stderr, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return result, elapsed


def test_a_wrong_key_fails_at_once_in_one_line(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    connection = runs.azurite.connection_string_with(key=WRONG_KEY)
    result, elapsed = run_failing(runs, run_cli_in, connection)
    line = one_error_line(result.stderr)
    # a refused key is not retried: ArchiveConfigError is a ValueError, printed as is
    assert line.startswith("error: raw archive az://failing/events: "), line
    assert "authenticate" in line, line
    assert "retrying" not in result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s"


def test_an_endpoint_down_ends_in_one_line(runs: Runs, run_cli_in: Callable[..., Any]) -> None:
    down = runs.azurite.free_port()  # nothing listens there
    result, elapsed = run_failing(runs, run_cli_in, runs.azurite.connection_string_with(port=down))
    line = one_error_line(result.stderr)
    assert line.startswith("error: "), line
    assert "raw archive az://failing/events: cannot reach container 'failing'" in line, line
    assert f"127.0.0.1:{down}" in line, line
    # one attempt per container check (no SDK retries there), then the pipeline's
    # backoff up to storage.retry_give_up_seconds
    assert elapsed < 30, f"took {elapsed:.0f} s"
