"""`find_raw`, `raw_dataset` and `ParquetArchive` on `s3://` against moto's S3.

The same simulated file goes through the real pipeline twice, once archiving to a bucket
and once to a local folder; every look-up on S3 must return what the same look-up
returns locally, and a one-hour range must list only that hour's objects. Credentials:
the fixture's key (allowed everything), and IAM users allowed only reading or only
writing, with the endpoint given both ways s3fs takes it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pytest

from paymetrics.archive import (
    ARCHIVE_SCHEMA,
    ArchiveConfigError,
    ArchiveUnavailable,
    ParquetArchive,
    find_raw,
    raw_dataset,
)
from paymetrics.archive.storage import HIDDEN, redact
from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.sources import open_source
from paymetrics.storage import open_store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("s3")]

UTC = dt.UTC
SIMULATION = SimulatorConfig(
    events=1500,
    seed=5,
    start=dt.datetime(2026, 3, 1, 22, 15, tzinfo=UTC),
    rate_per_second=0.2,
    rate_duplicate=0.03,
    rate_pan_leak=0.02,
)
BUCKET = "query"
READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
    ],
}
WRITE_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    ],
}


@dataclass(frozen=True)
class Archives:
    s3: str  # s3://query/raw
    local: str
    options: dict[str, Any]


def _archive(events: Path, db: Path, archive: ParquetArchive) -> None:
    store = open_store(f"sqlite:///{db}")
    try:
        store.prepare()
        Pipeline(store, archive, PipelineOptions(batch_max_events=250)).run(
            open_source(f"file:{events}")
        )
    finally:
        store.close()


@pytest.fixture(scope="session")  # once per worker, however xdist interleaves modules
def archives(moto_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Archives:
    work = tmp_path_factory.mktemp("s3-query")
    events = work / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(SIMULATION, handle)
    options = moto_s3.storage_options()
    url = f"s3://{BUCKET}/raw"
    _archive(events, work / "s3.db", ParquetArchive(url, **options))
    _archive(events, work / "local.db", ParquetArchive(str(work / "raw")))
    return Archives(url, str(work / "raw"), options)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def rows(url: str, options: dict[str, Any] | None = None, **query: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = find_raw(url, storage_options=options, **query).to_pylist()
    return result


def test_find_raw_on_s3_equals_local(archives: Archives) -> None:
    everything = rows(archives.local, limit=None)
    assert len(everything) > 1400
    assert rows(archives.s3, archives.options, limit=None) == everything
    ids = Counter(r["event_id"] for r in everything)
    duplicated = next(i for i, n in ids.most_common() if n >= 2)
    merchant = Counter(r["merchant_id"] for r in everything).most_common(1)[0][0]
    transaction = everything[len(everything) // 2]["transaction_id"]
    hour = {"start": at("2026-03-01T23:00Z"), "end": at("2026-03-02T00:00Z")}
    for query in (
        {"event_id": duplicated},
        {"transaction_id": transaction},
        {"merchant_id": merchant, "limit": None},
        {**hour, "limit": None},
        {"merchant_id": merchant, **hour},
        {"limit": 7},
    ):
        local = rows(archives.local, **query)
        assert local, query
        assert rows(archives.s3, archives.options, **query) == local, query


def test_one_hour_lists_only_that_hours_objects(archives: Archives) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **archives.options)
    folder = f"{BUCKET}/raw/date=2026-03-01/hour=23"
    hour_objects = set(fs.find(folder))
    assert len(hour_objects) >= 2
    assert len(fs.find(f"{BUCKET}/raw")) > 2 * len(hour_objects)
    dataset = raw_dataset(
        archives.s3,
        start=at("2026-03-01T23:00Z"),
        end=at("2026-03-02T00:00Z"),
        storage_options=archives.options,
    )
    assert set(dataset.files) == hour_objects


def test_the_endpoint_in_client_kwargs_works_too(archives: Archives, moto_s3: Any) -> None:
    options = {
        "key": moto_s3.key,
        "secret": moto_s3.secret,
        "client_kwargs": {"endpoint_url": moto_s3.endpoint_url},
    }
    assert rows(archives.s3, options, limit=20) == rows(archives.local, limit=20)


def test_read_only_credentials_read_but_cannot_write(archives: Archives, moto_s3: Any) -> None:
    key, secret = moto_s3.user(READ_ONLY)
    read_only = moto_s3.storage_options(key=key, secret=secret)
    assert rows(archives.s3, read_only, limit=None) == rows(archives.local, limit=None)
    # writing with them is refused: a configuration error (not retried), the secret hidden
    archive = ParquetArchive(f"s3://{BUCKET}/elsewhere", **read_only)
    table = find_raw(archives.local, limit=3)
    with pytest.raises(ArchiveConfigError) as refused:
        archive.write(table, source_id="s", partition="p", first_position=1, last_position=3)
    message = str(refused.value)
    assert message.startswith(f"raw archive s3://{BUCKET}/elsewhere: cannot write: "), message
    assert "AccessDenied" in message, message
    assert "\n" not in message
    for hidden in (secret, key, moto_s3.secret):
        assert hidden not in message


def test_write_only_credentials_write_but_cannot_list(archives: Archives, moto_s3: Any) -> None:
    key, secret = moto_s3.user(WRITE_ONLY)
    write_only = moto_s3.storage_options(key=key, secret=secret)
    url = f"s3://{BUCKET}/write-only"
    table = find_raw(archives.local, limit=3)
    # the bucket check may not list: the writes go ahead, and are allowed
    paths = ParquetArchive(url, **write_only).write(
        table, source_id="s", partition="p", first_position=1, last_position=3
    )
    assert paths
    assert rows(url, archives.options, limit=None) == table.to_pylist()
    with pytest.raises(ArchiveConfigError, match="AccessDenied") as refused:
        find_raw(url, storage_options=write_only)
    assert secret not in str(refused.value)


def test_a_missing_bucket_or_prefix_is_a_clear_error(archives: Archives) -> None:
    for url in ("s3://no-such-bucket/raw", f"s3://{BUCKET}/no-such-prefix"):
        with pytest.raises(ArchiveConfigError, match="nothing there") as missing:
            find_raw(url, storage_options=archives.options)
        assert str(missing.value).startswith(f"raw archive {url}: ")


def test_a_wrong_secret_is_a_config_error_without_it(archives: Archives) -> None:
    wrong = "x" * 40
    options = {**archives.options, "secret": wrong}
    with pytest.raises(ArchiveConfigError, match="SignatureDoesNotMatch") as refused:
        find_raw(archives.s3, storage_options=options)
    with pytest.raises(ArchiveConfigError, match="SignatureDoesNotMatch") as refused_write:
        ParquetArchive(archives.s3, **options).write(
            find_raw(archives.local, limit=1),
            source_id="s",
            partition="p",
            first_position=1,
            last_position=1,
        )
    for error in (refused.value, refused_write.value):
        assert str(error).startswith(f"raw archive {archives.s3}: "), error
        assert "\n" not in str(error)
        assert wrong not in str(error)
        assert archives.options["key"] not in str(error)


def test_an_endpoint_down_is_unavailable_without_the_secret(moto_s3: Any) -> None:
    endpoint = f"http://127.0.0.1:{moto_s3.free_port()}"
    options = moto_s3.storage_options(endpoint_url=endpoint)
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable) as down:
        ParquetArchive("s3://query/raw", **options).write(
            _one_row(), source_id="s", partition="p", first_position=1, last_position=1
        )
    assert time.monotonic() - started < 5  # one attempt: no botocore or s3fs retries
    # reading keeps botocore's retries unless the options turn them down (Python API)
    fast = {**options, "config_kwargs": {"retries": {"total_max_attempts": 1}}}
    with pytest.raises(ArchiveUnavailable) as down_read:
        find_raw("s3://query/raw", storage_options=fast)
    for error in (down.value, down_read.value):
        message = str(error)
        assert message.startswith("raw archive s3://query/raw: cannot "), message
        assert endpoint in message, message  # where it is: public
        assert moto_s3.secret not in message
        assert moto_s3.key not in message
        assert "\n" not in message
    assert "cannot reach bucket 'query'" in str(down.value)


def test_no_credentials_is_a_config_error(moto_s3: Any) -> None:
    with pytest.raises(ArchiveConfigError, match="Unable to locate credentials"):
        ParquetArchive("s3://query/raw", endpoint_url=moto_s3.endpoint_url).write(
            _one_row(), source_id="s", partition="p", first_position=1, last_position=1
        )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # s3fs takes the region only in client_kwargs (or from AWS_DEFAULT_REGION)
        ({"region_name": "eu-west-1"}, r"invalid S3 options: .*region_name"),
        (
            {"profile": "no-such-profile"},
            r"cannot access bucket .query.: The config profile .* could not be found",
        ),
    ],
    ids=["top-level-region", "unknown-profile"],
)
def test_unusable_options_are_config_errors(
    moto_s3: Any, changes: dict[str, str], match: str
) -> None:
    options = moto_s3.storage_options(**changes)
    with pytest.raises(ArchiveConfigError, match=match) as refused:
        ParquetArchive("s3://query/raw", **options).write(
            _one_row(), source_id="s", partition="p", first_position=1, last_position=1
        )
    assert str(refused.value).startswith("raw archive s3://query/raw: ")
    assert moto_s3.secret not in str(refused.value)


def test_redaction_hides_nested_secrets_but_not_the_endpoint() -> None:
    options = {
        "endpoint_url": "https://user:pa55word@s3.example.test",
        "client_kwargs": {"aws_secret_access_key": "s3cr3t-in-client-kwargs"},
        "key": "AKIAEXAMPLEEXAMPLE00",
    }
    text = (
        "https://user:pa55word@s3.example.test refused s3cr3t-in-client-kwargs "
        "for AKIAEXAMPLEEXAMPLE00"
    )
    assert redact(text, options) == (
        f"https://user:{HIDDEN}@s3.example.test refused {HIDDEN} for {HIDDEN}"
    )


def _one_row() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "event_id": "e",
                "event_type": "authorization",
                "transaction_id": "t",
                "merchant_id": "m",
                "occurred_at": dt.datetime(2026, 3, 1, 22, tzinfo=UTC),
                "source_id": "s",
                "partition": "p",
                "position": 1,
                "pan_exposure": False,
                "payload": "{}",
            }
        ],
        schema=ARCHIVE_SCHEMA,
    )
