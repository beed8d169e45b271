"""Log records as one readable line each, or one JSON object per line (to stderr)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from rich.console import Console

from paymetrics.config.model import LoggingSettings

__all__ = ["JsonFormatter", "setup_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and the
    record's structured `fields` (`extra={"fields": {...}}`) as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="seconds")


def setup_logging(settings: LoggingSettings, console: Console | None = None) -> None:
    """Configure the `paymetrics` logger (idempotent: replaces our own handler)."""
    logger = logging.getLogger("paymetrics")
    for old in list(logger.handlers):
        if getattr(old, "_paymetrics", False):
            logger.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(console.file if console else sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:  # never wrapped: one record, one line, whatever the terminal width
        handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._paymetrics = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(settings.level)
    logger.propagate = False
