"""The archive's file system: opening an fsspec URL, and storage errors as one line.

`open_filesystem(url, options)` returns the fsspec file system and the root path. Storage
failures come out as one of two `ArchiveError`s, each one line that names the archive URL
and the cause, never a credential (option values, connection-string keys and SAS
signatures become `**********`):

* `ArchiveUnavailable` (RuntimeError): it may pass, so retry later: endpoint unreachable,
  timeout, throttling, server error. `Pipeline` retries a batch with backoff on it.
* `ArchiveConfigError` (also a ValueError): retrying will not help: credentials rejected
  or missing, permission denied, invalid or missing container or archive, fsspec driver
  not installed. `paymetrics` commands print it as one line and exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "ArchiveConfigError",
    "ArchiveError",
    "ArchiveUnavailable",
    "archive_error",
    "describe_error",
    "display_url",
    "error_code",
    "is_azure",
    "is_local",
    "open_filesystem",
    "publishes_atomically",
    "redact",
    "storage_errors",
]

HIDDEN = "**********"
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
# Object stores that publish an object only once its upload completes (see parquet.py).
ATOMIC_PUT_PROTOCOLS = AZURE_PROTOCOLS | {"s3", "s3a", "gs", "gcs", "memory"}
_EXTRAS = {"az": "azure", "abfs": "azure", "abfss": "azure"}
_DRIVERS = {"az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "s3": "s3fs", "gs": "gcsfs"}
_SECRET_PARTS = re.compile(r"(?i)(AccountKey=|SharedAccessSignature=|\bsig=)([^;&\s'\"]+)")
_ERROR_MODULES = ("azure", "aiohttp", "botocore", "aiobotocore", "google")
_TRANSIENT_STATUSES = frozenset({408, 409, 429})  # timeout, conflicting state, throttled


class ArchiveError(RuntimeError):
    """The archive's storage failed; the message is one line, names the URL, no secrets."""


class ArchiveUnavailable(ArchiveError):
    """A failure that may pass (unreachable, timeout, throttled, server error): retry."""


class ArchiveConfigError(ArchiveError, ValueError):
    """A failure that retrying will not fix: credentials, permissions, names, driver."""


def display_url(url: str) -> str:
    """`url` without a password or query string (a SAS token can ride in either)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", f":{HIDDEN}@")
    query = HIDDEN if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, options: Mapping[str, Any]) -> str:
    """`text` with every option value (and key or signature inside one) hidden."""
    text = _SECRET_PARTS.sub(lambda m: m.group(1) + HIDDEN, text)
    for value in options.values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, HIDDEN)
    return text


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def is_azure(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & AZURE_PROTOCOLS)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def publishes_atomically(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & ATOMIC_PUT_PROTOCOLS)


def error_code(error: BaseException) -> str | None:
    """The service's error code (Azure: `AuthenticationFailed`, ...), if it gave one."""
    code = getattr(error, "error_code", None)
    return None if code is None else str(getattr(code, "value", code))


def describe_error(error: BaseException) -> str:
    """The cause in one line: the error code and first line of its message."""
    code = error_code(error)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if code and str(code) not in text:
        text = f"{code}: {text}"
    return text


def _is_storage_error(error: BaseException) -> bool:
    if isinstance(error, OSError | ValueError | TimeoutError):
        return True
    return any(cls.__module__.split(".")[0] in _ERROR_MODULES for cls in type(error).__mro__)


def _is_permanent(error: BaseException) -> bool:
    """Rejected (4xx but timeouts and throttling; refused credentials; bad arguments)."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return 400 <= status < 500 and status not in _TRANSIENT_STATUSES
    if any(cls.__name__ == "ClientAuthenticationError" for cls in type(error).__mro__):
        return True  # azure-identity found no credential, or it was refused
    return isinstance(error, PermissionError | ValueError | NotADirectoryError)


def archive_error(
    url: str, options: Mapping[str, Any], doing: str, error: BaseException
) -> ArchiveError:
    """The `ArchiveError` for `error` met while `doing` something with the archive."""
    what = f"{doing}: " if doing else ""
    message = redact(f"raw archive {display_url(url)}: {what}{describe_error(error)}", options)
    return ArchiveConfigError(message) if _is_permanent(error) else ArchiveUnavailable(message)


@contextmanager
def storage_errors(url: str, options: Mapping[str, Any], doing: str = "") -> Iterator[None]:
    """Re-raise storage failures inside the block as an `ArchiveError` (one line)."""
    try:
        yield
    except ArchiveError:
        raise
    except Exception as error:
        if not _is_storage_error(error):
            raise
        raise archive_error(url, options, doing, error) from None


def open_filesystem(
    url: str, options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system of `url` and the root path in it (no trailing slash)."""
    options = dict(options or {})
    protocol = protocol_of(url)
    try:
        with storage_errors(url, options):
            fs, root = fsspec.core.url_to_fs(url, **options)
    except ArchiveError as error:
        if protocol in AZURE_PROTOCOLS and "account_name" in str(error):
            from paymetrics.archive.azure import missing_account_hint

            raise ArchiveConfigError(
                f"raw archive {display_url(url)}: {missing_account_hint()}"
            ) from None
        raise ArchiveConfigError(str(error)) from None  # the URL or options are wrong
    except ImportError:
        driver = _DRIVERS.get(protocol, f"the fsspec driver for {protocol}://")
        extra = _EXTRAS.get(protocol)
        hint = f"pip install 'paymetrics[{extra}]'" if extra else f"pip install {driver}"
        raise ArchiveConfigError(
            f"raw archive {display_url(url)}: {protocol}:// needs {driver}; install it with: {hint}"
        ) from None
    return fs, str(root).rstrip("/")
