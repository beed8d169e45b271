"""`find_raw`, `raw_dataset`, `raw_filter` and `paymetrics query raw` on a local archive.

The archive is written once per session by the real pipeline (simulated events over
several hours across a UTC date change, with duplicates, late events, invalid
messages and card numbers to mask, in batches of 300). Every look-up is checked against
an oracle: all archive files read one by one with `pyarrow.parquet`, filtered and
sorted in plain Python.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from paymetrics.archive import (
    ARCHIVE_SCHEMA,
    ArchiveConfigError,
    ArchiveUnavailable,
    ParquetArchive,
    find_raw,
    raw_dataset,
    raw_filter,
)
from paymetrics.archive.cli import query_raw
from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.sources import open_source
from paymetrics.storage import open_store

UTC = dt.UTC
Row = dict[str, Any]
SIMULATION = SimulatorConfig(
    events=4000,
    seed=11,
    start=dt.datetime(2026, 1, 1, 22, 30, tzinfo=UTC),
    rate_per_second=0.25,
    rate_invalid=0.01,
    rate_duplicate=0.03,
    rate_late=0.01,
    rate_pan_leak=0.02,
)


def order_key(row: Row) -> tuple[Any, ...]:
    """find_raw's order: event time, then source, partition and position."""
    return (row["occurred_at"], row["source_id"], row["partition"], row["position"])


def _build(directory: Path) -> None:
    events = directory / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(SIMULATION, handle)
    store = open_store(f"sqlite:///{directory / 'paymetrics.db'}")
    try:
        store.prepare()
        pipeline = Pipeline(
            store, ParquetArchive(str(directory / "raw")), PipelineOptions(batch_max_events=300)
        )
        pipeline.run(open_source(f"file:{events}"))
    finally:
        store.close()


@pytest.fixture(scope="session")
def archive(build_once: Callable[[str, Callable[[Path], None]], Path]) -> Path:
    """The archive root (read only)."""
    return build_once("archive-query", _build) / "raw"


def archive_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


@pytest.fixture(scope="session")
def oracle(archive: Path) -> list[Row]:
    """Every archived row, each file read on its own, in find_raw's order."""
    rows: list[Row] = []
    for path in archive_files(archive):
        table = pq.ParquetFile(path).read()
        assert table.schema.equals(ARCHIVE_SCHEMA, check_metadata=False)
        rows.extend(table.to_pylist())
    return sorted(rows, key=order_key)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def found(archive: Path, **query: Any) -> list[Row]:
    rows: list[Row] = find_raw(str(archive), **query).to_pylist()
    return rows


# -- the archive under test is what the tests need --------------------------------------


def test_the_archive_spans_dates_hours_and_files(archive: Path, oracle: list[Row]) -> None:
    folders = Counter(p.parent.relative_to(archive).as_posix() for p in archive_files(archive))
    assert {f.split("/")[0] for f in folders} == {"date=2026-01-01", "date=2026-01-02"}
    assert len(folders) >= 8
    assert max(folders.values()) >= 3  # several batches per hour
    ids = Counter(r["event_id"] for r in oracle)
    assert max(ids.values()) >= 2  # duplicates: one row per delivery
    assert any(r["pan_exposure"] for r in oracle)


# -- look-ups against the oracle ----------------------------------------------------------


def test_by_event_id_returns_every_delivery(archive: Path, oracle: list[Row]) -> None:
    ids = Counter(r["event_id"] for r in oracle)
    duplicated = next(i for i, n in ids.most_common() if n >= 2)
    unique = next(i for i, n in ids.items() if n == 1)
    for event_id in (duplicated, unique):
        expected = [r for r in oracle if r["event_id"] == event_id]
        assert found(archive, event_id=event_id) == expected
    assert len(found(archive, event_id=duplicated)) == ids[duplicated]
    assert found(archive, event_id="no-such-event") == []


def test_by_transaction_id(archive: Path, oracle: list[Row]) -> None:
    transactions = Counter(r["transaction_id"] for r in oracle)
    busiest, count = transactions.most_common(1)[0]
    assert count >= 3  # authorization, capture, ... of one transaction
    assert found(archive, transaction_id=busiest) == [
        r for r in oracle if r["transaction_id"] == busiest
    ]


def test_by_merchant_all_rows_and_limited(archive: Path, oracle: list[Row]) -> None:
    merchant = Counter(r["merchant_id"] for r in oracle).most_common(1)[0][0]
    expected = [r for r in oracle if r["merchant_id"] == merchant]
    assert len(expected) > 10
    assert found(archive, merchant_id=merchant, limit=None) == expected
    assert found(archive, merchant_id=merchant, limit=10) == expected[:10]


def test_time_range_across_midnight_is_start_inclusive_end_exclusive(
    archive: Path, oracle: list[Row]
) -> None:
    inside = [r for r in oracle if at("2026-01-01T23:00:00Z") <= r["occurred_at"]]
    start = inside[0]["occurred_at"]  # an instant that a row has exactly
    end = next(r["occurred_at"] for r in oracle if r["occurred_at"] >= at("2026-01-02T01:30Z"))
    expected = [r for r in oracle if start <= r["occurred_at"] < end]
    assert expected[0]["occurred_at"] == start
    assert all(r["occurred_at"] != end for r in expected)
    assert found(archive, start=start, end=end, limit=None) == expected
    # open-ended on either side
    assert found(archive, start=start, limit=None) == [
        r for r in oracle if r["occurred_at"] >= start
    ]
    assert found(archive, end=end, limit=None) == [r for r in oracle if r["occurred_at"] < end]
    # any offset names the same instant
    paris = dt.timezone(dt.timedelta(hours=1))
    assert found(archive, start=start.astimezone(paris), end=end, limit=None) == expected


def test_filters_combine(archive: Path, oracle: list[Row]) -> None:
    start, end = at("2026-01-02T00:00Z"), at("2026-01-02T03:00Z")
    window = [r for r in oracle if start <= r["occurred_at"] < end]
    merchant = Counter(r["merchant_id"] for r in window).most_common(1)[0][0]
    expected = [r for r in window if r["merchant_id"] == merchant]
    assert 0 < len(expected) < len(window)
    assert found(archive, merchant_id=merchant, start=start, end=end, limit=None) == expected
    one = expected[0]
    assert found(
        archive,
        event_id=one["event_id"],
        transaction_id=one["transaction_id"],
        merchant_id=merchant,
        start=start,
        end=end,
    ) == [r for r in expected if r["event_id"] == one["event_id"]]
    assert found(archive, event_id=one["event_id"], merchant_id="another") == []


def test_limit_takes_the_oldest_rows_first(archive: Path, oracle: list[Row]) -> None:
    assert found(archive) == oracle[:100]  # the default limit
    assert found(archive, limit=1) == oracle[:1]
    assert found(archive, limit=len(oracle) + 10) == oracle
    assert found(archive, limit=None) == oracle


def test_empty_results_keep_the_schema(archive: Path) -> None:
    table = find_raw(str(archive), start=at("2030-01-01T00:00Z"))
    assert table.num_rows == 0
    assert table.schema.equals(ARCHIVE_SCHEMA)
    same = at("2026-01-02T00:00Z")
    assert find_raw(str(archive), start=same, end=same).num_rows == 0


# -- partition pruning --------------------------------------------------------------------


def test_one_hour_reads_only_that_hours_files(archive: Path) -> None:
    start, end = at("2026-01-02T01:00Z"), at("2026-01-02T02:00Z")
    hour_files = {str(p) for p in archive_files(archive / "date=2026-01-02" / "hour=01")}
    assert len(hour_files) >= 2
    assert len(archive_files(archive)) > 3 * len(hour_files)
    # the listing: raw_dataset only lists the folders the range touches
    assert set(raw_dataset(str(archive), start=start, end=end).files) == hour_files
    # the scan: over the whole archive, the filter's partition terms leave that hour only
    whole = raw_dataset(str(archive))
    assert len(whole.files) == len(archive_files(archive))
    fragments = list(whole.get_fragments(filter=raw_filter(start=start, end=end)))
    assert {f.path for f in fragments} == hour_files
    # an instant range inside the hour prunes the same way
    inner = list(
        whole.get_fragments(
            filter=raw_filter(start=at("2026-01-02T01:10Z"), end=at("2026-01-02T01:20Z"))
        )
    )
    assert {f.path for f in inner} == hour_files


def test_range_edges_list_only_the_touched_hours(archive: Path) -> None:
    start, end = at("2026-01-01T23:59:59.999999Z"), at("2026-01-02T00:00:00.000001Z")
    touched = {
        str(p)
        for folder in ("date=2026-01-01/hour=23", "date=2026-01-02/hour=00")
        for p in archive_files(archive / folder)
    }
    assert set(raw_dataset(str(archive), start=start, end=end).files) == touched


# -- what comes back is the archive, masked ---------------------------------------------

_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_numbers(text: str) -> list[str]:
    runs = (re.sub(r"[ -]", "", m.group()) for m in _DIGIT_RUN.finditer(text))
    return [r for r in runs if 13 <= len(r) <= 19 and luhn(r)]


def test_payloads_come_back_masked_as_archived(archive: Path, oracle: list[Row]) -> None:
    rows = found(archive, limit=None)
    assert rows == oracle
    exposed = [r for r in rows if r["pan_exposure"]]
    assert exposed
    assert all(re.search(r"\d{6}\*{3,9}\d{4}", r["payload"]) for r in exposed)
    for row in rows:
        message = json.loads(row["payload"])
        for exempt in ("event_id", "transaction_id"):  # kept as sent, by the contract
            message.pop(exempt, None)
        assert card_numbers(json.dumps(message)) == [], row["payload"]


# -- arguments and errors -----------------------------------------------------------------


def test_naive_datetimes_and_bad_limits_are_refused(archive: Path) -> None:
    naive = dt.datetime(2026, 1, 2, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        find_raw(str(archive), start=naive)
    with pytest.raises(ValueError, match="naive"):
        find_raw(str(archive), end=naive)
    with pytest.raises(ValueError, match="naive"):
        raw_filter(start=naive)
    with pytest.raises(ValueError, match="limit"):
        find_raw(str(archive), limit=0)


def test_a_missing_archive_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveConfigError, match="nothing there") as caught:
        find_raw(str(tmp_path / "nothing"))
    assert str(tmp_path / "nothing") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_files_outside_the_layout_are_ignored(archive: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(archive, copy)
    (copy / "README.txt").write_text("not a partition")
    (copy / "date=2026-01-02" / "notes").mkdir()
    hour = copy / "date=2026-01-02" / "hour=01"
    (hour / ".half-written.parquet.tmp").write_bytes(b"PAR1 not yet")
    (hour / "other.csv").write_text("a,b\n")
    assert (
        find_raw(str(copy), limit=None).to_pylist()
        == find_raw(str(archive), limit=None).to_pylist()
    )


# -- the command --------------------------------------------------------------------------


def _harness() -> typer.Typer:
    """`query raw` alone, as paymetrics.cli registers it."""
    app = typer.Typer()
    app.command("raw")(query_raw)

    @app.callback()
    def _group() -> None:  # a group, so the command is invoked by name
        pass

    return app


def test_query_raw_command_in_process(
    archive: Path, oracle: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PAYMETRICS_CONFIG", "PAYMETRICS_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    event_id = Counter(r["event_id"] for r in oracle).most_common(1)[0][0]
    runner = CliRunner()
    result = runner.invoke(
        _harness(),
        ["raw", "--archive", str(archive), "--event-id", event_id, "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    expected = [
        {**r, "occurred_at": r["occurred_at"].isoformat()}
        for r in oracle
        if r["event_id"] == event_id
    ]
    assert json.loads(result.stdout) == expected
    bad = runner.invoke(_harness(), ["raw", "--archive", str(archive), "--from", "2026-01-02T01"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_paymetrics_query_raw(
    archive: Path, oracle: list[Row], run_cli: Callable[..., Any]
) -> None:
    """The registered command (`query_app.command("raw")(query_raw)` in paymetrics.cli)."""
    start, end = "2026-01-02T01:00:00Z", "2026-01-02T02:00:00+00:00"
    expected = [r for r in oracle if at(start) <= r["occurred_at"] < at(end)]
    merchant = Counter(r["merchant_id"] for r in expected).most_common(1)[0][0]
    expected = [r for r in expected if r["merchant_id"] == merchant]
    as_json = run_cli(
        "query", "raw", "--archive", archive, "--merchant", merchant,
        "--from", start, "--to", end, "--format", "json",
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.describe()
    assert json.loads(as_json.stdout) == [
        {**r, "occurred_at": r["occurred_at"].isoformat()} for r in expected
    ]
    as_csv = run_cli(
        "query", "raw", "--archive", archive, "--merchant", merchant,
        "--from", start, "--to", end, "--format", "csv", "--limit", "1",
    )  # fmt: skip
    assert as_csv.returncode == 0, as_csv.describe()
    header, first = as_csv.stdout.splitlines()[:2]
    assert header.split(",") == ARCHIVE_SCHEMA.names
    assert first.startswith(f"{expected[0]['event_id']},")
    as_table = run_cli(
        "query", "raw", "--archive", archive, "--event-id", expected[0]["event_id"],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert as_table.returncode == 0, as_table.describe()
    assert expected[0]["event_id"] in as_table.stdout
    assert expected[0]["source_id"] not in as_table.stdout  # the table leaves it out
    # configured archive (no --archive), and the one-line error when it is not there
    configured = run_cli(
        "query", "raw", "--limit", "1", "--format", "json",
        env={"PAYMETRICS__STORAGE__ARCHIVE_URL": str(archive)},
    )  # fmt: skip
    assert configured.returncode == 0, configured.describe()
    assert json.loads(configured.stdout)[0]["event_id"] == oracle[0]["event_id"]
    missing = run_cli("query", "raw", "--archive", archive.parent / "elsewhere")
    assert missing.returncode == 2, missing.describe()
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, missing.describe()
    assert lines[0].startswith(f"error: raw archive {archive.parent / 'elsewhere'}: nothing")


# -- storage errors: one line, no secrets, the right kind ---------------------------------


def test_storage_errors_hide_secrets_and_tell_transient_from_permanent() -> None:
    from paymetrics.archive.storage import ArchiveError, display_url, storage_errors

    assert (
        display_url("s3://user:pw@bucket/raw?sig=abc")
        == "s3://user:**********@bucket/raw?**********"
    )
    options = {
        "connection_string": "AccountName=a;AccountKey=c2VjcmV0LWtleQ==;",
        "sas_token": "sv=1&sig=xyz",
    }

    exceptions = pytest.importorskip("azure.core.exceptions")

    def http(status: int, text: str) -> Exception:
        error = exceptions.HttpResponseError(message=text)
        error.status_code = status
        return error  # type: ignore[no-any-return]

    cases = [
        (http(403, "refused AccountKey=c2VjcmV0LWtleQ==\nRequestId: 1"), ArchiveConfigError),
        (http(404, "ContainerNotFound"), ArchiveConfigError),
        (http(503, "ServerBusy: sig=xyz"), ArchiveUnavailable),
        (http(429, "throttled"), ArchiveUnavailable),
        (exceptions.ServiceRequestError("cannot connect sv=1&sig=xyz"), ArchiveUnavailable),
        (ConnectionRefusedError("refused sv=1&sig=xyz"), ArchiveUnavailable),
        (PermissionError("denied"), ArchiveConfigError),
    ]
    for error, kind in cases:
        with (
            pytest.raises(ArchiveError) as caught,
            storage_errors("az://c/p", options, "cannot write"),
        ):
            raise error
        message = str(caught.value)
        assert type(caught.value) is kind, (error, message)
        assert message.startswith("raw archive az://c/p: cannot write: "), message
        assert "\n" not in message
        assert "c2VjcmV0LWtleQ==" not in message
        assert "xyz" not in message
    assert issubclass(ArchiveConfigError, ValueError)  # commands print it as one line
    with pytest.raises(KeyError), storage_errors("az://c/p", options):
        raise KeyError("a bug is not a storage error")
