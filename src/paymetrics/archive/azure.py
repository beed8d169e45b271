"""Azure Blob Storage (`az://`, `abfs://`, `abfss://` through adlfs): the container check.

Credentials come from the archive options, as adlfs takes them: `connection_string`;
or `account_name` with `account_key`, or `sas_token`, or neither (then
DefaultAzureCredential from azure-identity: environment, workload or managed identity,
Azure CLI login). `abfs://container@account.dfs.core.windows.net/prefix` names the
account in the URL instead.

`check_container` makes one request with no retries, before the first write or read,
so a wrong endpoint or key fails in about a second with a clear message, instead of after
the SDK's retries (about 90 s for an endpoint that refuses connections). The requests
that follow keep the SDK's retry policy.
"""

from __future__ import annotations

from typing import Any

from fsspec.asyn import sync

from paymetrics.archive.storage import ArchiveError, archive_error, error_code

__all__ = ["check_container", "missing_account_hint"]

# 403 codes that mean "this credential may not read container properties", as a SAS
# scoped to blobs can be: the container may well exist, so writes go ahead.
_NOT_PERMITTED = frozenset({"AuthorizationPermissionMismatch", "AuthorizationFailure"})


def missing_account_hint() -> str:
    return (
        "no storage account: give the archive option connection_string, or account_name "
        "(with account_key or sas_token, or neither for DefaultAzureCredential), or use "
        "abfs://container@account.dfs.core.windows.net/prefix"
    )


def check_container(fs: Any, root: str, url: str, options: dict[str, Any], *, create: bool) -> bool:
    """True if `root`'s container exists (creating it when `create`); else an
    `ArchiveError`: `ArchiveConfigError` for a refused key, a name Azure rejects or a
    container that may not be created, `ArchiveUnavailable` for an endpoint that does
    not answer. With `create=False` a missing container returns False."""
    from azure.core.exceptions import (
        AzureError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
    )

    container = root.split("/", 1)[0]

    def fail(doing: str, error: BaseException) -> ArchiveError:
        return archive_error(url, options, doing, error)

    async def check() -> bool:
        client = fs.service_client.get_container_client(container)
        try:
            await client.get_container_properties(retry_total=0)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as error:
            if error.status_code == 403 and error_code(error) in _NOT_PERMITTED:
                return True  # a credential scoped below the container: let writes tell
            raise fail(f"cannot access container {container!r}", error) from None
        except AzureError as error:
            raise fail(f"cannot reach container {container!r}", error) from None
        else:
            return True
        if not create:
            return False
        try:
            await client.create_container(retry_total=0)
        except ResourceExistsError:
            pass  # created meanwhile by another writer
        except AzureError as error:
            raise fail(
                f"container {container!r} does not exist and cannot be created", error
            ) from None
        fs.invalidate_cache(container)
        return True

    exists: bool = sync(fs.loop, check)
    return exists
