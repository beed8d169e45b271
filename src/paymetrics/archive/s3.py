"""Amazon S3 and S3-compatible stores (`s3://`, `s3a://` through s3fs): the bucket check.

Credentials come from the archive options, as s3fs takes them: `key` and `secret` (and
`token` for temporary credentials), or `profile`, or none (then botocore's chain:
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, web identity, container or
instance role). `endpoint_url` points s3fs at an S3-compatible store or an emulator
(s3fs takes it as a top-level option and prefers it to `client_kwargs["endpoint_url"]`,
which the paymetrics configuration cannot hold: its options are strings).

`check_bucket` makes one request with no retries (neither botocore's nor s3fs's),
before the first write, so a wrong endpoint or key fails in about a second with a clear
message, instead of after the retries (about 11 s for an endpoint that refuses
connections). The requests that follow keep the retry policies.
"""

from __future__ import annotations

from typing import Any

from fsspec.asyn import sync

from paymetrics.archive.storage import (
    ArchiveConfigError,
    ArchiveError,
    archive_error,
    error_code,
    status_of,
)

__all__ = ["check_bucket"]

# 403 codes that mean "this credential may not list the bucket", as a key allowed only
# s3:PutObject under the prefix can be: the bucket may well exist, so writes go ahead.
# (A wrong key is `InvalidAccessKeyId`, a wrong secret `SignatureDoesNotMatch`.)
_NOT_PERMITTED = frozenset({"AccessDenied"})
# botocore's errors for an endpoint that did not answer, or answered garbage: may pass.
# Its other errors (no credentials, invalid bucket name, no region, ...) come before any
# request, so retrying cannot help.
_UNREACHABLE = frozenset(
    {
        "ConnectionError",  # EndpointConnectionError, ConnectTimeoutError, ...
        "HTTPClientError",  # ReadTimeoutError, ...
        "ResponseParserError",
        "IncompleteReadError",
        "ResponseStreamingError",
    }
)
_OWNED = frozenset({"BucketAlreadyOwnedByYou"})


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _is_botocore(error: BaseException) -> bool:
    return any(cls.__module__.startswith("botocore.") for cls in type(error).__mro__)


def _probe(fs: Any) -> Any:
    """A file system like `fs` (same options: credentials, endpoint, region) whose client
    tries each request once: no botocore retries, no s3fs retries."""
    options = dict(fs.storage_options)
    config = dict(options.get("config_kwargs") or {})
    retries = {k: v for k, v in dict(config.get("retries") or {}).items() if k != "max_attempts"}
    config["retries"] = {**retries, "total_max_attempts": 1}
    options.update(config_kwargs=config, asynchronous=True, loop=fs.loop, skip_instance_cache=True)
    probe = type(fs)(**options)
    probe.retries = 1
    return probe


def check_bucket(fs: Any, root: str, url: str, options: dict[str, Any], *, create: bool) -> bool:
    """True if `root`'s bucket exists (creating it when `create`); else an
    `ArchiveError`: `ArchiveConfigError` for a refused key or secret, no credentials, a
    name S3 rejects or a bucket that may not be created, `ArchiveUnavailable` for an
    endpoint that does not answer or a server error. With `create=False` a missing
    bucket returns False."""
    bucket, key, _version = fs.split_path(root)
    prefix = f"{key.rstrip('/')}/" if key else ""

    def fail(doing: str, error: BaseException) -> ArchiveError:
        failure = archive_error(url, options, doing, error)
        if _is_botocore(error) and status_of(error) is None and not _names(error) & _UNREACHABLE:
            return ArchiveConfigError(str(failure))  # raised before any request was sent
        return failure

    def is_client_error(error: BaseException) -> bool:
        return "ClientError" in _names(error)

    async def check(client: Any) -> bool:
        try:
            await client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except Exception as error:
            if not _is_botocore(error):
                raise
            if _names(error) & _UNREACHABLE:
                raise fail(f"cannot reach bucket {bucket!r}", error) from None
            if not is_client_error(error):  # no credentials, an invalid name, ...
                raise fail(f"cannot access bucket {bucket!r}", error) from None
            code = error_code(error)
            if code == "NoSuchBucket":
                pass
            elif create and code in _NOT_PERMITTED:
                return True  # a credential scoped below the bucket: let writes tell
            else:
                raise fail(f"cannot access bucket {bucket!r}", error) from None
        else:
            return True
        if not create:
            return False
        region = client.meta.region_name
        location = (
            {"CreateBucketConfiguration": {"LocationConstraint": region}}
            if region and region not in ("us-east-1", "aws-global")
            else {}
        )
        try:
            await client.create_bucket(Bucket=bucket, **location)
        except Exception as error:
            if not _is_botocore(error):
                raise
            if not (is_client_error(error) and error_code(error) in _OWNED):
                raise fail(
                    f"bucket {bucket!r} does not exist and cannot be created", error
                ) from None  # BucketAlreadyExists: the name is another account's
        fs.invalidate_cache(bucket)
        return True

    async def probe() -> bool:
        client = None
        try:
            try:
                client = await _probe(fs).set_session()
            except TypeError as error:  # s3fs hands options it does not know to botocore
                raise fail("invalid S3 options", ValueError(str(error))) from None
            return await check(client)
        except ArchiveError:
            raise
        except Exception as error:  # a profile or credential source that fails at once
            if not _is_botocore(error):
                raise
            raise fail(f"cannot access bucket {bucket!r}", error) from None
        finally:
            if client is not None:
                await client.close()

    exists: bool = sync(fs.loop, probe)
    return exists
