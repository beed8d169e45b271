"""`find_raw` and `raw_dataset` on `az://` and `abfs://` against Azurite.

The same simulated file goes through the real pipeline twice, once archiving to a blob
container and once to a local folder; every look-up on the blobs must return what the
same look-up returns locally, and a one-hour range must list only that hour's blobs.
Credentials: a connection string with the account key, and one with a SAS token.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from paymetrics.archive import (
    ArchiveConfigError,
    ArchiveUnavailable,
    ParquetArchive,
    find_raw,
    raw_dataset,
)
from paymetrics.pipeline import Pipeline, PipelineOptions
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.sources import open_source
from paymetrics.storage import open_store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("azurite")]

UTC = dt.UTC
SIMULATION = SimulatorConfig(
    events=1500,
    seed=5,
    start=dt.datetime(2026, 3, 1, 22, 15, tzinfo=UTC),
    rate_per_second=0.2,
    rate_duplicate=0.03,
    rate_pan_leak=0.02,
)


@dataclass(frozen=True)
class Archives:
    blob: str  # az://<container>/raw
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
def archives(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Archives:
    work = tmp_path_factory.mktemp("blob-query")
    events = work / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(SIMULATION, handle)
    options = azurite.storage_options()
    blob = "az://query/raw"
    _archive(events, work / "blob.db", ParquetArchive(blob, **options))
    _archive(events, work / "local.db", ParquetArchive(str(work / "raw")))
    return Archives(blob, str(work / "raw"), options)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def rows(url: str, options: dict[str, Any] | None = None, **query: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = find_raw(url, storage_options=options, **query).to_pylist()
    return result


def test_find_raw_on_blobs_equals_local(archives: Archives) -> None:
    everything = rows(archives.local, limit=None)
    assert len(everything) > 1400
    assert rows(archives.blob, archives.options, limit=None) == everything
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
        assert rows(archives.blob, archives.options, **query) == local, query


def test_one_hour_lists_only_that_hours_blobs(archives: Archives) -> None:
    fs = fsspec.filesystem("az", **archives.options)
    folder = "query/raw/date=2026-03-01/hour=23"
    hour_blobs = set(fs.find(folder))
    assert len(hour_blobs) >= 2
    assert len(fs.find("query/raw")) > 2 * len(hour_blobs)
    dataset = raw_dataset(
        archives.blob,
        start=at("2026-03-01T23:00Z"),
        end=at("2026-03-02T00:00Z"),
        storage_options=archives.options,
    )
    assert set(dataset.files) == hour_blobs


def sas_connection_string(azurite: Any, **permissions: bool) -> str:
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(
        azurite.account_name,
        azurite.account_key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(**permissions),
        expiry=dt.datetime.now(UTC) + dt.timedelta(hours=1),
    )
    return f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"


def test_abfs_url_with_a_read_only_sas(archives: Archives, azurite: Any) -> None:
    read_only = {"connection_string": sas_connection_string(azurite, read=True, list=True)}
    assert rows("abfs://query/raw", read_only, limit=None) == rows(archives.local, limit=None)
    # writing with it is refused: a configuration error (not retried), the SAS hidden
    signature = read_only["connection_string"].split("sig=", 1)[1].split("&", 1)[0]
    archive = ParquetArchive("abfs://query/elsewhere", **read_only)
    table = find_raw(archives.local, limit=3)
    with pytest.raises(ArchiveConfigError) as refused:
        archive.write(table, source_id="s", partition="p", first_position=1, last_position=3)
    message = str(refused.value)
    assert message.startswith("raw archive abfs://query/elsewhere: "), message
    assert "\n" not in message
    assert signature not in message
    assert azurite.account_key not in message


def test_a_missing_container_or_prefix_is_a_clear_error(archives: Archives) -> None:
    for url in ("az://no-such-container/raw", "az://query/no-such-prefix"):
        with pytest.raises(ArchiveConfigError, match="nothing there") as missing:
            find_raw(url, storage_options=archives.options)
        assert str(missing.value).startswith(f"raw archive {url}: ")


def test_an_endpoint_down_fails_fast_without_the_key(azurite: Any) -> None:
    options = {"connection_string": azurite.connection_string_with(port=azurite.free_port())}
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable) as down:
        find_raw("az://query/raw", storage_options=options)
    assert time.monotonic() - started < 10
    message = str(down.value)
    assert message.startswith("raw archive az://query/raw: cannot reach container 'query'")
    assert azurite.account_key not in message
    assert "\n" not in message


def test_no_credentials_names_the_options_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ArchiveConfigError, match="connection_string, or account_name"):
        ParquetArchive("az://raw/events")
