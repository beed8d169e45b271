"""Append-only Parquet archive on any fsspec URL, partitioned by event date and hour.

Layout: `<url>/date=YYYY-MM-DD/hour=HH/<source>-<partition>-<first>-<last>.parquet`
(Hive-style, so DuckDB, Spark and pyarrow.dataset prune by partition). The file
name comes from the batch's source positions: a batch delivered again after a
crash rewrites the same files instead of adding copies. No reader ever sees half a
file under its final name (see `ParquetArchive._publish` for how, per storage).

Storage failures are raised as `ArchiveUnavailable` (may pass: retry) or
`ArchiveConfigError` (will not: fix the configuration), one line naming the URL, never a
credential from the options (`storage.py`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from paymetrics.archive.storage import (
    is_azure,
    is_s3,
    open_filesystem,
    publishes_atomically,
    storage_errors,
)

__all__ = ["ARCHIVE_SCHEMA", "ParquetArchive"]

ARCHIVE_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("transaction_id", pa.string()),
        ("merchant_id", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("source_id", pa.string()),
        ("partition", pa.string()),
        ("position", pa.int64()),
        ("pan_exposure", pa.bool_()),
        ("payload", pa.string()),
    ]
)
_US_PER_HOUR = 3_600_000_000
_DICTIONARY_COLUMNS = ["event_type", "merchant_id", "source_id", "partition"]
_STATISTICS_COLUMNS = ["event_type", "merchant_id", "occurred_at", "position", "pan_exposure"]


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ParquetArchive:
    """Writes archive files for batches; `url` is any fsspec URL or local path.

    `storage_options` go to the fsspec file system (for Azure: `connection_string`, or
    `account_name` with `account_key`, `sas_token` or neither; for S3: `key` and
    `secret`, `endpoint_url`, ...). The constructor makes no request; the first write
    checks the container (Azure) or bucket (S3), creating it if missing.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self._options = storage_options
        self.fs, self.root = open_filesystem(self.url, storage_options)
        self._prepared = False

    def write(
        self,
        rows: pa.Table,
        *,
        source_id: str,
        partition: str,
        first_position: int,
        last_position: int,
    ) -> list[str]:
        """Write `rows` (ARCHIVE_SCHEMA) into their hour partitions; returns the paths."""
        if rows.num_rows == 0:
            return []
        name = (
            f"{_short(source_id)}-{_short(partition)}-"
            f"{first_position:012d}-{last_position:012d}.parquet"
        )
        hours = rows["occurred_at"].cast(pa.int64()).to_numpy() // _US_PER_HOUR
        paths = []
        with storage_errors(self.url, self._options, "cannot write"):
            self._prepare()
            for hour in np.unique(hours):
                part = rows.filter(pa.array(hours == hour))
                start = pc.min(part["occurred_at"]).as_py()
                folder = f"{self.root}/date={start.year:04d}-{start:%m-%d}/hour={start:%H}"
                paths.append(self._publish(folder, name, part))
        return paths

    def _prepare(self) -> None:
        if self._prepared:
            return
        if is_azure(self.fs):
            from paymetrics.archive.azure import check_container

            check_container(self.fs, self.root, self.url, self._options, create=True)
        elif is_s3(self.fs):
            from paymetrics.archive.s3 import check_bucket

            check_bucket(self.fs, self.root, self.url, self._options, create=True)
        self._prepared = True

    def _publish(self, folder: str, name: str, part: pa.Table) -> str:
        """Write `part` as `folder/name` so that no reader sees half of it there."""
        path = f"{folder}/{name}"
        if publishes_atomically(self.fs):
            # Object stores publish an object only when its upload completes: one Put Blob,
            # or Put Block List over staged blocks (Azure; staged blocks stay invisible),
            # PutObject or CompleteMultipartUpload (S3, GCS alike). A reader sees the old
            # object or the whole new one, never a prefix. So the file is built in memory
            # and uploaded under its final name in one call. A temporary name and `mv`
            # would buy nothing there: `mv` is a server-side copy (asynchronous on Azure),
            # then a delete, so twice the requests and a window with two copies.
            buffer = pa.BufferOutputStream()
            self._write_parquet(part, buffer)
            self.fs.pipe_file(path, buffer.getvalue().to_pybytes())
            return path
        # Local disks (and file systems without atomic uploads): write a dot-file, which
        # readers skip, then rename it; on one local file system the rename is atomic.
        tmp = f"{folder}/.{name}.tmp"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as handle:
                self._write_parquet(part, handle)
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise
        return path

    @staticmethod
    def _write_parquet(part: pa.Table, sink: Any) -> None:
        pq.write_table(
            part,
            sink,
            compression="zstd",
            # Dictionaries and min/max statistics pay off only on repetitive,
            # short columns; on payloads and ids they cost time for nothing.
            use_dictionary=_DICTIONARY_COLUMNS,
            write_statistics=_STATISTICS_COLUMNS,
        )
