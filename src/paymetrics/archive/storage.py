"""The archive's file system: opening an fsspec URL, and storage errors as one line.

`open_filesystem(url, options)` returns the fsspec file system and the root path. Storage
failures come out as one of two `ArchiveError`s, each one line that names the archive URL
and the cause, never a credential (option values, connection-string keys and SAS
signatures become `**********`):

* `ArchiveUnavailable` (RuntimeError): it may pass, so retry later: endpoint unreachable,
  timeout, throttling, server error. `Pipeline` retries a batch with backoff on it.
* `ArchiveConfigError` (also a ValueError): retrying will not help: credentials rejected
  or missing, permission denied, invalid or missing container, bucket or archive, fsspec
  driver not installed. `paymetrics` commands print it as one line and exit 2.

The HTTP status comes from the error (`status_code`: Azure), from a botocore
`ClientError`'s response (S3), or from the `ClientError` that s3fs translated into an
OSError; botocore's own errors are told apart by class name (no botocore import here).
Option values are hidden wherever they appear, except those of `PUBLIC_OPTIONS` (the
S3 endpoint and region, which say where the archive is, as Azure's BlobEndpoint does):
only a password inside one is hidden.
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
    "is_s3",
    "open_filesystem",
    "publishes_atomically",
    "redact",
    "status_of",
    "storage_errors",
]

HIDDEN = "**********"
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
S3_PROTOCOLS = frozenset({"s3", "s3a"})
# Object stores that publish an object only once its upload completes (see parquet.py).
ATOMIC_PUT_PROTOCOLS = AZURE_PROTOCOLS | S3_PROTOCOLS | {"gs", "gcs", "memory"}
# Options that say where the archive is, not who may use it: error messages show them.
PUBLIC_OPTIONS = frozenset({"endpoint_url", "region_name"})
_EXTRAS = {"az": "azure", "abfs": "azure", "abfss": "azure", "s3": "s3", "s3a": "s3"}
_DRIVERS = {
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
}
_SECRET_PARTS = re.compile(r"(?i)(AccountKey=|SharedAccessSignature=|\bsig=)([^;&\s'\"]+)")
_ERROR_MODULES = ("azure", "aiohttp", "botocore", "aiobotocore", "google")
_TRANSIENT_STATUSES = frozenset({408, 409, 429})  # timeout, conflicting state, throttled
# Errors raised before any request that retrying cannot fix (azure-identity, botocore).
_PERMANENT_ERRORS = frozenset(
    {
        "ClientAuthenticationError",  # azure-identity found no credential, or it was refused
        "NoCredentialsError",  # botocore: no key in the options, environment or profile
        "PartialCredentialsError",
        "ProfileNotFound",
        "ParamValidationError",  # botocore: e.g. an invalid bucket name
        "NoRegionError",
        "InvalidRegionError",
    }
)


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


def _secrets(options: Mapping[str, Any]) -> Iterator[str]:
    """The option values to hide, nested ones (`client_kwargs`, ...) included."""
    for name, value in options.items():
        if isinstance(value, Mapping):
            yield from _secrets(value)
        elif isinstance(value, list | tuple):
            yield from _secrets({str(i): item for i, item in enumerate(value)})
        elif not isinstance(value, str):
            continue
        elif name in PUBLIC_OPTIONS:
            password = urlsplit(value).password if "://" in value else None
            if password:
                yield password
        else:
            yield value


def redact(text: str, options: Mapping[str, Any]) -> str:
    """`text` with every option value (and key or signature inside one) hidden, but
    `PUBLIC_OPTIONS` (the endpoint and region) where they hold no password."""
    text = _SECRET_PARTS.sub(lambda m: m.group(1) + HIDDEN, text)
    for value in sorted(_secrets(options), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, HIDDEN)
    return text


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def is_azure(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & AZURE_PROTOCOLS)


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & S3_PROTOCOLS)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def publishes_atomically(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & ATOMIC_PUT_PROTOCOLS)


def _client_response(error: BaseException) -> Mapping[str, Any] | None:
    """The parsed response of a botocore `ClientError` (`error` or, from s3fs, its cause)."""
    for candidate in (error, error.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
            return response
    return None


def error_code(error: BaseException) -> str | None:
    """The service's error code (Azure: `AuthenticationFailed`, S3: `AccessDenied`, ...),
    if it gave one."""
    code = getattr(error, "error_code", None)
    if code is None and (response := _client_response(error)) is not None:
        code = response["Error"].get("Code") or None
    return None if code is None else str(getattr(code, "value", code))


def status_of(error: BaseException) -> int | None:
    """The HTTP status of the service's answer, if there was one."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return status
    response = _client_response(error)
    metadata = response.get("ResponseMetadata") if response is not None else None
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    return status if isinstance(status, int) else None


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
    """Rejected (4xx but timeouts and throttling; refused or no credentials; bad arguments)."""
    status = status_of(error)
    if status is not None:
        return 400 <= status < 500 and status not in _TRANSIENT_STATUSES
    if any(cls.__name__ in _PERMANENT_ERRORS for cls in type(error).__mro__):
        return True
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
