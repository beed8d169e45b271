"""Raw events back from the archive: look-ups by id, merchant and event time.

`find_raw(url, ...)` returns archive rows (`ARCHIVE_SCHEMA`, masked payloads, one row per
delivery, so duplicates appear once per delivery) ordered by `occurred_at`, then source,
partition and position. Filters combine with AND; `start` is inclusive, `end` exclusive,
both aware datetimes (naive ones raise ValueError).

How little it reads:

* Folders are pruned before anything is listed in them: only the `date=` folders that
  [start, end) touches are listed, and on its first and last day only the `hour=`
  folders in range. Without a time range every folder is listed.
* Days are read oldest first, and reading stops at the end of the first day by which
  `limit` rows were found: rows of later days cannot come earlier in the order.
* Row filters run in pyarrow. `merchant_id` and `occurred_at` carry min/max statistics,
  so row groups without a match are skipped; `event_id` and `transaction_id` have none,
  so a look-up by id without a time range reads those columns in every file.

`raw_dataset` and `raw_filter` are the same pieces for your own pyarrow scans.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from itertools import groupby
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from paymetrics.archive.parquet import ARCHIVE_SCHEMA
from paymetrics.archive.storage import (
    ArchiveConfigError,
    display_url,
    is_azure,
    is_local,
    is_s3,
    open_filesystem,
    storage_errors,
)

__all__ = ["PARTITION_SCHEMA", "find_raw", "raw_dataset", "raw_filter"]

PARTITION_SCHEMA = pa.schema([("date", pa.string()), ("hour", pa.int32())])
"""The Hive partition fields: `date` as `YYYY-MM-DD` (UTC), `hour` as 0–23."""
DATASET_SCHEMA = pa.schema([*ARCHIVE_SCHEMA, *PARTITION_SCHEMA])
ORDER = [
    ("occurred_at", "ascending"),
    ("source_id", "ascending"),
    ("partition", "ascending"),
    ("position", "ascending"),
]
_DATE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")
_TIMESTAMP = ARCHIVE_SCHEMA.field("occurred_at").type
_ONE_US = dt.timedelta(microseconds=1)

Slot = tuple[str, int]  # (date, hour) of an hour folder


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value.isoformat()} is naive: give an aware datetime (UTC)")
    return value.astimezone(dt.UTC)


def _slot(instant: dt.datetime) -> Slot:
    return f"{instant:%Y-%m-%d}", instant.hour


def _slots(start: dt.datetime | None, end: dt.datetime | None) -> tuple[Slot | None, Slot | None]:
    """First and last (date, hour) folders that can hold rows in [start, end)."""
    return (
        None if start is None else _slot(start),
        None if end is None else _slot(end - _ONE_US),
    )


def raw_filter(
    *,
    event_id: str | None = None,
    transaction_id: str | None = None,
    merchant_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> ds.Expression | None:
    """The filter of a look-up, on `raw_dataset` rows: row conditions, plus the `date`
    and `hour` partition conditions that [start, end) implies (so pyarrow skips other
    hour folders' files without opening them). None when nothing is filtered."""
    start, end = _utc(start, "start"), _utc(end, "end")
    terms: list[ds.Expression] = []
    for column, value in (
        ("event_id", event_id),
        ("transaction_id", transaction_id),
        ("merchant_id", merchant_id),
    ):
        if value is not None:
            terms.append(pc.field(column) == value)
    first, last = _slots(start, end)
    date, hour = pc.field("date"), pc.field("hour")
    if start is not None and first is not None:
        terms.append((date > first[0]) | ((date == first[0]) & (hour >= first[1])))
        terms.append(pc.field("occurred_at") >= pa.scalar(start, _TIMESTAMP))
    if end is not None and last is not None:
        terms.append((date < last[0]) | ((date == last[0]) & (hour <= last[1])))
        terms.append(pc.field("occurred_at") < pa.scalar(end, _TIMESTAMP))
    if not terms:
        return None
    expression = terms[0]
    for term in terms[1:]:
        expression = expression & term
    return expression


class _Archive:
    """An archive root opened for reading: pruned folder listing, datasets over files."""

    def __init__(self, url: str, options: Mapping[str, Any] | None) -> None:
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.fs, self.root = open_filesystem(self.url, self.options)
        self.arrow_fs: Any = pafs.LocalFileSystem() if is_local(self.fs) else self.fs
        # fsspec reuses file system instances, listing cache included: each query must
        # see the files written since the previous one.
        self.fs.invalidate_cache()

    def errors(self, doing: str) -> Any:
        return storage_errors(self.url, self.options, doing)

    def _names(self, path: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
        """(captured value, full path) of the entries of `path` named like `pattern`."""
        entries = []
        for entry in self.fs.ls(path, detail=False):
            match = pattern.fullmatch(entry.rstrip("/").rsplit("/", 1)[-1])
            if match:
                entries.append((match.group(1), entry.rstrip("/")))
        return sorted(entries)

    def _check_root(self) -> None:
        missing = ArchiveConfigError(
            f"raw archive {display_url(self.url)}: nothing there (nothing archived yet, "
            "or a wrong URL)"
        )
        if is_azure(self.fs):
            from paymetrics.archive.azure import check_container

            if not check_container(self.fs, self.root, self.url, self.options, create=False):
                raise missing
        if is_s3(self.fs):  # one quick request instead of botocore's ~10 s of retries
            from paymetrics.archive.s3 import check_bucket

            if not check_bucket(self.fs, self.root, self.url, self.options, create=False):
                raise missing
        if not self.fs.isdir(self.root):
            raise missing

    def hour_folders(
        self, start: dt.datetime | None, end: dt.datetime | None
    ) -> Iterator[tuple[Slot, str]]:
        """The hour folders that [start, end) touches, oldest first, listed lazily."""
        first, last = _slots(start, end)
        with self.errors("cannot list"):
            self._check_root()
            dates = self._names(self.root, _DATE)
        for date, date_path in dates:
            if (first and date < first[0]) or (last and date > last[0]):
                continue
            with self.errors("cannot list"):
                hours = self._names(date_path, _HOUR)
            for hour_text, hour_path in hours:
                slot = (date, int(hour_text))
                if (first and slot < first) or (last and slot > last):
                    continue
                yield slot, hour_path

    def files(self, folders: list[str]) -> list[str]:
        paths = []
        with self.errors("cannot list"):
            for folder in folders:
                for path in self.fs.ls(folder, detail=False):
                    name = path.rsplit("/", 1)[-1]
                    if name.endswith(".parquet") and not name.startswith("."):
                        paths.append(path)
        return sorted(paths)

    def dataset(self, files: list[str]) -> ds.Dataset:
        partitioning = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
        return ds.dataset(
            files,
            schema=DATASET_SCHEMA,
            format="parquet",
            filesystem=self.arrow_fs,
            partitioning=partitioning,
            partition_base_dir=self.root,
        )


def raw_dataset(
    url: str,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ds.Dataset:
    """A pyarrow dataset over the archive files in the hour folders [start, end) touches
    (all of them without a range): `ARCHIVE_SCHEMA` columns plus the `date` and `hour`
    partition fields. Filter it with `raw_filter` to trim rows at the range's edges."""
    start, end = _utc(start, "start"), _utc(end, "end")
    archive = _Archive(url, storage_options)
    folders = [path for _slot, path in archive.hour_folders(start, end)]
    return archive.dataset(archive.files(folders))


def find_raw(
    url: str,
    *,
    event_id: str | None = None,
    transaction_id: str | None = None,
    merchant_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int | None = 100,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Archived rows matching every given filter, as archived (masked), oldest first.

    `url` is the archive's fsspec URL or path (what `paymetrics run --archive` wrote);
    `storage_options` its fsspec options (e.g. `{"connection_string": ...}` for
    `az://`). `start <= occurred_at < end`, aware datetimes only. At most `limit` rows
    (None: all). Raises an `ArchiveError` if the archive is not there
    (`ArchiveConfigError`) or cannot be read (see `paymetrics.archive.storage`), and
    ValueError on a naive datetime or a `limit` below 1.

    >>> import datetime as dt
    >>> rows = find_raw(
    ...     "paymetrics-data/raw",
    ...     merchant_id="merchant_42",
    ...     start=dt.datetime(2026, 1, 1, 13, tzinfo=dt.UTC),
    ...     end=dt.datetime(2026, 1, 1, 14, tzinfo=dt.UTC),
    ... )  # doctest: +SKIP
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    empty = ARCHIVE_SCHEMA.empty_table()
    if start is not None and end is not None and start >= end:
        return empty
    archive = _Archive(url, storage_options)
    expression = raw_filter(
        event_id=event_id,
        transaction_id=transaction_id,
        merchant_id=merchant_id,
        start=start,
        end=end,
    )
    found: list[pa.Table] = []
    count = 0
    for _date, day in groupby(archive.hour_folders(start, end), key=lambda item: item[0][0]):
        files = archive.files([path for _slot, path in day])
        if not files:
            continue
        with archive.errors("cannot read"):
            table = archive.dataset(files).to_table(columns=ARCHIVE_SCHEMA.names, filter=expression)
        if table.num_rows:
            found.append(table)
            count += table.num_rows
        if limit is not None and count >= limit:
            break  # later days sort after every row found so far
    if not found:
        return empty
    rows = pa.concat_tables(found).sort_by(ORDER)
    return rows if limit is None else rows.slice(0, limit)
