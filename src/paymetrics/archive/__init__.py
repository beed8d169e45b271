"""The raw archive: every valid message, masked, as received, in Parquet.

* `ParquetArchive` writes it (`parquet.py`), on any fsspec URL: a local path, `az://` or
  `abfs://` (Azure Blob Storage, `azure.py`), `s3://`, ...
* `find_raw` reads it back by event id, transaction id, merchant and event time, with
  partition pruning (`query.py`); `raw_dataset` and `raw_filter` are its pieces.
* `ArchiveError`: the storage failed, in one line naming the URL, never a credential
  (`storage.py`); `ArchiveUnavailable` if it may pass (retry), `ArchiveConfigError`
  (a ValueError) if it will not.
"""

from paymetrics.archive.parquet import ARCHIVE_SCHEMA, ParquetArchive
from paymetrics.archive.query import find_raw, raw_dataset, raw_filter
from paymetrics.archive.storage import ArchiveConfigError, ArchiveError, ArchiveUnavailable

__all__ = [
    "ARCHIVE_SCHEMA",
    "ArchiveConfigError",
    "ArchiveError",
    "ArchiveUnavailable",
    "ParquetArchive",
    "find_raw",
    "raw_dataset",
    "raw_filter",
]
