"""The raw archive: every valid message, masked, as received, in Parquet."""

from paymetrics.archive.parquet import ARCHIVE_SCHEMA, ParquetArchive

__all__ = ["ARCHIVE_SCHEMA", "ParquetArchive"]
