"""Secret references in configuration values, and the resolver that fetches them.

Any string setting may name where its value lives instead of holding it, so that
configuration files, App Configuration and `paymetrics config show` never carry a
secret:

* `env:NAME` — the environment variable NAME;
* `file:/run/secrets/db-url` — a file's content, one trailing newline stripped
  (Kubernetes and Docker secret mounts). Only absolute paths: `file:events.jsonl`
  is a source spec and `file:///data` an fsspec URL, so both stay literals;
* `@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])`,
  `@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<v>])` (the App
  Service syntax) and `keyvault://<vault>/<name>[/<version>]` — an Azure Key Vault secret.

Errors (`SecretReferenceError`) name the reference and the reason, never a value. They
are raised outside `except` blocks, so no chained exception (a UnicodeDecodeError holds
the file's bytes) travels with them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "KeyVaultClient",
    "KeyVaultSecretLike",
    "SecretReference",
    "SecretReferenceError",
    "SecretResolver",
    "azure_error_types",
    "describe_azure_error",
    "parse_reference",
]

AZURE_INSTALL_HINT = "pip install 'paymetrics[azure]'"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Vault names: 3-24 letters, digits and dashes; secret names: 1-127 letters, digits, dashes.
_VAULT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]")
_SECRET_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_SECRET_VERSION = re.compile(r"[A-Za-z0-9]{1,64}")
_VAULT_HOST = re.compile(
    r"(?P<vault>[A-Za-z0-9-]+)\.vault\."
    r"(?:azure\.net|azure\.cn|usgovcloudapi\.net|microsoftazure\.de)",
    re.IGNORECASE,
)
_SECRET_URI = re.compile(
    r"https://(?P<host>[^/]+)/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?/?", re.IGNORECASE
)
_APP_SERVICE_PREFIX = "@Microsoft.KeyVault("
_KEYVAULT_SCHEME = "keyvault://"


class SecretReferenceError(ValueError):
    """A secret reference is malformed or cannot be resolved; names the reference, not a value."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"secret reference {reference!r}: {reason}")


@dataclass(frozen=True)
class SecretReference:
    """Where a secret lives. Equal references share one cache entry, however they were written."""

    kind: Literal["env", "file", "keyvault"]
    name: str
    """The variable name (env), the absolute path (file) or the secret name (keyvault)."""
    vault_url: str | None = None
    """`https://<vault>.vault.azure.net/` for Key Vault references, else None."""
    version: str | None = None
    """A pinned Key Vault secret version; None is the latest."""
    text: str = field(default="", compare=False)
    """The reference as written; safe to show."""

    def __str__(self) -> str:
        return self.text or self._canonical()

    def _canonical(self) -> str:
        if self.kind != "keyvault":
            return f"{self.kind}:{self.name}"
        suffix = f"/{self.version}" if self.version else ""
        return f"{self.vault_url}secrets/{self.name}{suffix}"


def parse_reference(text: str) -> SecretReference | None:
    """The reference `text` spells, or None for a literal. Malformed: SecretReferenceError."""
    if text.startswith("env:"):
        name = text[len("env:") :]
        if not _ENV_NAME.fullmatch(name):
            raise SecretReferenceError(
                text, "expected env:NAME, NAME made of letters, digits and _"
            )
        return SecretReference("env", name, text=text)
    if text.startswith("file:/") and not text.startswith("file://"):
        return SecretReference("file", text[len("file:") :], text=text)
    if text.startswith(_KEYVAULT_SCHEME):
        return _parse_keyvault_url(text)
    if text.startswith(_APP_SERVICE_PREFIX):
        return _parse_app_service(text)
    return None


def _keyvault(text: str, vault: str, name: str, version: str | None) -> SecretReference:
    """Validate the parts and build the reference: `vault` is a vault name or a vault host."""
    host = _VAULT_HOST.fullmatch(vault)
    if host is None and "." in vault:
        raise SecretReferenceError(
            text, f"{vault!r} is not a Key Vault host (<vault>.vault.azure.net or sovereign)"
        )
    vault_name = host.group("vault") if host else vault
    if not _VAULT_NAME.fullmatch(vault_name):
        raise SecretReferenceError(
            text, f"{vault_name!r} is not a vault name (3-24 letters, digits and dashes)"
        )
    if not _SECRET_NAME.fullmatch(name):
        raise SecretReferenceError(
            text, f"{name!r} is not a secret name (1-127 letters, digits and dashes)"
        )
    if version is not None and not _SECRET_VERSION.fullmatch(version):
        raise SecretReferenceError(text, f"{version!r} is not a secret version (letters, digits)")
    hostname = vault.lower() if host else f"{vault_name.lower()}.vault.azure.net"
    return SecretReference("keyvault", name, f"https://{hostname}/", version or None, text)


def _parse_keyvault_url(text: str) -> SecretReference:
    parts = text[len(_KEYVAULT_SCHEME) :].split("/")
    if len(parts) == 3 and parts[2] == "":
        parts = parts[:2]  # a trailing slash
    if len(parts) not in (2, 3) or not all(parts):
        raise SecretReferenceError(text, "expected keyvault://<vault>/<secret-name>[/<version>]")
    return _keyvault(text, parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _parse_app_service(text: str) -> SecretReference:
    usage = (
        "expected @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>)"
        " or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<v>])"
    )
    if not text.endswith(")"):
        raise SecretReferenceError(text, f"unterminated: no closing ')'; {usage}")
    params: dict[str, str] = {}
    for item in text[len(_APP_SERVICE_PREFIX) : -1].split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise SecretReferenceError(text, f"{item.strip()!r} is not Key=Value; {usage}")
        params[key.strip().lower()] = value.strip()
    if "secreturi" in params:
        if set(params) != {"secreturi"}:
            raise SecretReferenceError(text, f"SecretUri goes alone; {usage}")
        match = _SECRET_URI.fullmatch(params["secreturi"])
        if match is None:
            raise SecretReferenceError(text, usage)
        return _keyvault(text, match["host"], match["name"], match["version"] or None)
    unknown = set(params) - {"vaultname", "secretname", "secretversion"}
    if unknown or "vaultname" not in params or "secretname" not in params:
        raise SecretReferenceError(text, usage)
    return _keyvault(text, params["vaultname"], params["secretname"], params.get("secretversion"))


class KeyVaultSecretLike(Protocol):
    """What `SecretClient.get_secret` returns (`KeyVaultSecret`): only `.value` is used."""

    @property
    def value(self) -> str | None: ...


class KeyVaultClient(Protocol):
    """The part of `azure.keyvault.secrets.SecretClient` the resolver uses."""

    def get_secret(
        self, name: str, version: str | None = None, **kwargs: Any
    ) -> KeyVaultSecretLike: ...


class SecretResolver:
    """Resolves references to values, caching each for `ttl_seconds` so rotation is picked up.

    `environ` defaults to `os.environ` (read at resolve time). `keyvault_client_factory`
    maps a vault URL to a client; it is called once per vault. The default builds an
    Azure `SecretClient` with `DefaultAzureCredential` (managed identity, workload
    identity, `az login`), importing the Azure SDK only when a Key Vault reference is met.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        environ: Mapping[str, str] | None = None,
        keyvault_client_factory: Callable[[str], KeyVaultClient] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"SecretResolver: ttl_seconds must be >= 0, got {ttl_seconds}")
        self.ttl_seconds = ttl_seconds
        self._environ = environ
        self._factory = keyvault_client_factory or self._default_client
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[SecretReference, tuple[float, str]] = {}
        self._clients: dict[str, KeyVaultClient] = {}
        self._credential: TokenCredential | None = None

    def __repr__(self) -> str:
        return f"SecretResolver(ttl_seconds={self.ttl_seconds}, cached={len(self._cache)})"

    def resolve(self, text: str) -> str:
        """`text` unchanged if it is a literal, else the value it refers to."""
        reference = parse_reference(text)
        if reference is None:
            return text
        now = self._clock()
        with self._lock:
            cached = self._cache.get(reference)
        if cached is not None and now < cached[0]:
            return cached[1]
        value = self._fetch(reference)
        if self.ttl_seconds > 0:
            with self._lock:
                self._cache[reference] = (now + self.ttl_seconds, value)
        return value

    def invalidate(self) -> None:
        """Forget every cached value, so the next resolve fetches again (a forced reload)."""
        with self._lock:
            self._cache.clear()

    def _fetch(self, reference: SecretReference) -> str:
        if reference.kind == "env":
            environ = os.environ if self._environ is None else self._environ
            value = environ.get(reference.name)
            if value is None:
                raise SecretReferenceError(
                    str(reference), f"environment variable {reference.name} is not set"
                )
            return value
        if reference.kind == "file":
            return _read_secret_file(reference)
        return self._fetch_keyvault(reference)

    def _fetch_keyvault(self, reference: SecretReference) -> str:
        assert reference.vault_url is not None
        where = f"secret {reference.name!r} in vault {reference.vault_url}"
        client = self._client(reference)
        azure_errors = azure_error_types()
        problem: str | None = None
        try:
            secret = client.get_secret(reference.name, version=reference.version)
        except azure_errors as error:
            problem = f"{where}: {describe_azure_error(error)}"
        if problem is not None:  # raised here, outside `except`, so no chained exception
            raise SecretReferenceError(str(reference), problem)
        value = secret.value
        if value is None:
            raise SecretReferenceError(str(reference), f"{where} has no value")
        return value

    def _client(self, reference: SecretReference) -> KeyVaultClient:
        assert reference.vault_url is not None
        with self._lock:
            client = self._clients.get(reference.vault_url)
            if client is not None:
                return client
            missing_sdk = False
            try:
                client = self._factory(reference.vault_url)
            except ImportError:
                missing_sdk = True
            if missing_sdk:
                raise SecretReferenceError(
                    str(reference), f"Key Vault references need the Azure SDK: {AZURE_INSTALL_HINT}"
                )
            assert client is not None
            self._clients[reference.vault_url] = client
            return client

    def _default_client(self, vault_url: str) -> KeyVaultClient:
        """`SecretClient` with one `DefaultAzureCredential` shared by all vaults."""
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return SecretClient(vault_url=vault_url, credential=self._credential)


def _read_secret_file(reference: SecretReference) -> str:
    problem: str | None = None
    data = b""
    try:
        data = Path(reference.name).read_bytes()
    except OSError as error:
        problem = f"cannot read {reference.name}: {error.strerror or type(error).__name__}"
    if problem is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problem = f"{reference.name} is not UTF-8 text"  # the error would hold the bytes
    if problem is not None:
        raise SecretReferenceError(str(reference), problem)
    for newline in ("\r\n", "\n"):
        if text.endswith(newline):
            return text[: -len(newline)]
    return text


def azure_error_types() -> tuple[type[Exception], ...]:
    """`(AzureError,)` when azure-core is installed; an empty tuple catches nothing."""
    try:
        from azure.core.exceptions import AzureError
    except ImportError:
        return ()
    return (AzureError,)


def describe_azure_error(error: BaseException, *, limit: int = 200) -> str:
    """Class, HTTP status and the first line of the message: enough to act on, short to log."""
    status = getattr(error, "status_code", None)
    reason = getattr(error, "reason", None)
    head = type(error).__name__
    if status is not None:
        head += f" (HTTP {status}{' ' + reason if isinstance(reason, str) and reason else ''})"
    message = str(getattr(error, "message", None) or error).strip()
    first = message.splitlines()[0].strip() if message else ""
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    return f"{head}: {first}" if first else head
