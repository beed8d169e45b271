"""Secret references (`env:`, `file:`, Key Vault) and the caching SecretResolver.

The Key Vault stub mimics `SecretClient.get_secret(name, version=None, **kwargs)` returning
an object with `.value`; `test_stub_matches_the_sdk` keeps it from drifting from the SDK.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import KeyVaultSecret, SecretClient

from paymetrics.config.secrets import (
    SecretReference,
    SecretReferenceError,
    SecretResolver,
    parse_reference,
)

SECRET = "hunter2-Sup3rS3cret"
VAULT = "https://myvault.vault.azure.net/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StubSecret:
    """`KeyVaultSecret`: only `.value` is read."""

    value: str | None


@dataclass
class StubSecretClient:
    """`SecretClient` for one vault: secrets by (name, version); None is the latest."""

    vault_url: str
    secrets: dict[tuple[str, str | None], str | None] = field(default_factory=dict)
    fail_with: Exception | None = None
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def get_secret(self, name: str, version: str | None = None, **kwargs: Any) -> StubSecret:
        self.calls.append((name, version))
        if self.fail_with is not None:
            raise self.fail_with
        if (name, version) not in self.secrets:
            raise ResourceNotFoundError(
                message=f"A secret with (name/id) {name} was not found in this key vault."
            )
        return StubSecret(self.secrets[(name, version)])


class StubVaults:
    """A keyvault_client_factory: one StubSecretClient per vault URL, counting constructions."""

    def __init__(self) -> None:
        self.clients: dict[str, StubSecretClient] = {}
        self.built: list[str] = []

    def __call__(self, vault_url: str) -> StubSecretClient:
        self.built.append(vault_url)
        return self.client(vault_url)

    def client(self, vault_url: str = VAULT) -> StubSecretClient:
        return self.clients.setdefault(vault_url, StubSecretClient(vault_url))


def make_resolver(
    vaults: StubVaults | None = None,
    environ: dict[str, str] | None = None,
    clock: FakeClock | None = None,
    ttl_seconds: float = 300.0,
) -> SecretResolver:
    return SecretResolver(
        ttl_seconds=ttl_seconds,
        environ=environ if environ is not None else {},
        keyvault_client_factory=vaults or StubVaults(),
        clock=clock or FakeClock(),
    )


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """Not in str, repr or the formatted traceback (with any chained exception)."""
    shown = "".join(traceback.format_exception(error)) + str(error) + repr(error)
    for secret in secrets:
        assert secret not in shown
    assert error.__cause__ is None
    assert error.__context__ is None


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain value",
        "postgresql+psycopg://user@db/x",
        "file:events.jsonl",  # a source spec, not a secret file
        "file:///data/raw",  # an fsspec URL
        "environment:X",
        "keyvault:/x",
        "@Microsoft.Other(x)",
        " env:X",
    ],
)
def test_literals_are_not_references(text: str) -> None:
    assert parse_reference(text) is None
    assert make_resolver().resolve(text) == text


def test_env_and_file_references() -> None:
    env = parse_reference("env:DB_URL")
    assert env == SecretReference("env", "DB_URL")
    assert env is not None
    assert str(env) == "env:DB_URL"
    file = parse_reference("file:/run/secrets/db-url")
    assert file == SecretReference("file", "/run/secrets/db-url")


@pytest.mark.parametrize(
    ("text", "vault_url", "name", "version"),
    [
        ("keyvault://myvault/db-url", VAULT, "db-url", None),
        ("keyvault://myvault/db-url/", VAULT, "db-url", None),
        ("keyvault://MyVault/db-url/0123abcdef", VAULT, "db-url", "0123abcdef"),
        ("keyvault://myvault.vault.azure.cn/db-url", VAULT.replace(".net", ".cn"), "db-url", None),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url)",
            VAULT,
            "db-url",
            None,
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url/abc123)",
            VAULT,
            "db-url",
            "abc123",
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url/)",
            VAULT,
            "db-url",
            None,
        ),
        ("@Microsoft.KeyVault(VaultName=myvault;SecretName=db-url)", VAULT, "db-url", None),
        (
            "@Microsoft.KeyVault(VaultName=myvault; SecretName=db-url; SecretVersion=abc123)",
            VAULT,
            "db-url",
            "abc123",
        ),
    ],
)
def test_keyvault_references(text: str, vault_url: str, name: str, version: str | None) -> None:
    reference = parse_reference(text)
    assert reference == SecretReference("keyvault", name, vault_url, version)
    assert str(reference) == text  # shown as written


@pytest.mark.parametrize(
    "text",
    [
        "env:",
        "env:DB-URL",
        "keyvault://",
        "keyvault://myvault",
        "keyvault://myvault/",
        "keyvault:///db-url",
        "keyvault://myvault/db-url/v1/extra",
        "keyvault://my_vault/db-url",
        "keyvault://myvault/db_url",
        "keyvault://example.com/db-url",
        "@Microsoft.KeyVault(",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url",
        "@Microsoft.KeyVault()",
        "@Microsoft.KeyVault(SecretUri=)",
        "@Microsoft.KeyVault(SecretUri=https://evil.example.com/secrets/db-url)",
        "@Microsoft.KeyVault(SecretUri=http://myvault.vault.azure.net/secrets/db-url)",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/keys/db-url)",
        "@Microsoft.KeyVault(VaultName=myvault)",
        "@Microsoft.KeyVault(SecretName=db-url)",
        "@Microsoft.KeyVault(VaultName=myvault;SecretName=db-url;Colour=blue)",
        "@Microsoft.KeyVault(VaultName=myvault;SecretName)",
    ],
)
def test_malformed_references_name_themselves(text: str) -> None:
    with pytest.raises(SecretReferenceError) as info:
        parse_reference(text)
    assert info.value.reference == text
    assert repr(text) in str(info.value)
    with pytest.raises(SecretReferenceError):
        make_resolver().resolve(text)


def test_spellings_of_one_secret_are_one_reference() -> None:
    spellings = [
        "keyvault://myvault/db-url",
        "keyvault://myvault.vault.azure.net/db-url",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url)",
        "@Microsoft.KeyVault(VaultName=myvault;SecretName=db-url)",
    ]
    assert len({parse_reference(text) for text in spellings}) == 1


# --------------------------------------------------------------------------- resolving


def test_env_reference_resolves_from_the_given_environ() -> None:
    resolver = make_resolver(environ={"DB_URL": SECRET})
    assert resolver.resolve("env:DB_URL") == SECRET


def test_env_reference_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMETRICS_TEST_SECRET", SECRET)
    assert SecretResolver().resolve("env:PAYMETRICS_TEST_SECRET") == SECRET


def test_missing_env_variable_is_named_and_no_value_shown() -> None:
    resolver = make_resolver(environ={"OTHER": SECRET})
    with pytest.raises(SecretReferenceError, match="variable DB_URL is not set") as info:
        resolver.resolve("env:DB_URL")
    assert "'env:DB_URL'" in str(info.value)
    assert_no_secret(info.value, SECRET)


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (f"{SECRET}\n", SECRET),
        (f"{SECRET}\r\n", SECRET),
        (SECRET, SECRET),
        (f"{SECRET}\n\n", f"{SECRET}\n"),  # one newline only
        (f"line1\n{SECRET}\n", f"line1\n{SECRET}"),
        ("", ""),
    ],
)
def test_file_reference_strips_one_trailing_newline(
    tmp_path: Path, content: str, value: str
) -> None:
    path = tmp_path / "db-url"
    path.write_bytes(content.encode())
    assert make_resolver().resolve(f"file:{path}") == value


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(SecretReferenceError) as info:
        make_resolver().resolve(f"file:{path}")
    assert f"cannot read {path}" in str(info.value)
    assert "No such file" in str(info.value)
    assert_no_secret(info.value)


def test_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    with pytest.raises(SecretReferenceError, match=f"cannot read {tmp_path}"):
        make_resolver().resolve(f"file:{tmp_path}")


def test_binary_file_error_does_not_carry_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(SECRET.encode() + b"\xff\xfe")
    with pytest.raises(SecretReferenceError, match="not UTF-8 text") as info:
        make_resolver().resolve(f"file:{path}")
    assert_no_secret(info.value, SECRET)  # a chained UnicodeDecodeError would hold them


def test_keyvault_reference_resolves_latest_and_pinned_versions() -> None:
    vaults = StubVaults()
    vaults.client().secrets.update({("db-url", None): SECRET, ("db-url", "abc123"): "old"})
    resolver = make_resolver(vaults)
    assert resolver.resolve("keyvault://myvault/db-url") == SECRET
    assert resolver.resolve("keyvault://myvault/db-url/abc123") == "old"
    assert vaults.client().calls == [("db-url", None), ("db-url", "abc123")]


def test_one_client_per_vault_reused() -> None:
    vaults = StubVaults()
    other = "https://othervault.vault.azure.net/"
    vaults.client().secrets.update({("a", None): "1", ("b", None): "2"})
    vaults.client(other).secrets[("c", None)] = "3"
    resolver = make_resolver(vaults)
    for text in ["keyvault://myvault/a", "keyvault://myvault/b", "keyvault://othervault/c"]:
        resolver.resolve(text)
    assert vaults.built == [VAULT, other]


def test_keyvault_secret_without_value_is_an_error() -> None:
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = None
    with pytest.raises(SecretReferenceError, match="has no value"):
        make_resolver(vaults).resolve("keyvault://myvault/db-url")


# --------------------------------------------------------------------------- caching


def test_values_are_cached_for_ttl_then_fetched_again() -> None:
    vaults, clock = StubVaults(), FakeClock()
    client = vaults.client()
    client.secrets[("db-url", None)] = "v1"
    resolver = make_resolver(vaults, clock=clock, ttl_seconds=60)
    assert resolver.resolve("keyvault://myvault/db-url") == "v1"
    client.secrets[("db-url", None)] = "v2"  # rotated
    clock.advance(59.9)
    assert resolver.resolve("keyvault://myvault/db-url") == "v1"
    assert len(client.calls) == 1
    clock.advance(0.1)
    assert resolver.resolve("keyvault://myvault/db-url") == "v2"
    assert len(client.calls) == 2


def test_spellings_share_a_cache_entry() -> None:
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = SECRET
    resolver = make_resolver(vaults)
    resolver.resolve("keyvault://myvault/db-url")
    resolver.resolve("@Microsoft.KeyVault(VaultName=myvault;SecretName=db-url)")
    assert len(vaults.client().calls) == 1


def test_invalidate_drops_the_cache() -> None:
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = "v1"
    environ = {"API_KEY": "k1"}
    resolver = make_resolver(vaults, environ=environ)
    assert resolver.resolve("keyvault://myvault/db-url") == "v1"
    assert resolver.resolve("env:API_KEY") == "k1"
    vaults.client().secrets[("db-url", None)] = "v2"
    environ["API_KEY"] = "k2"
    assert resolver.resolve("env:API_KEY") == "k1"
    resolver.invalidate()
    assert resolver.resolve("keyvault://myvault/db-url") == "v2"
    assert resolver.resolve("env:API_KEY") == "k2"
    assert len(vaults.client().calls) == 2


def test_zero_ttl_never_caches() -> None:
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = SECRET
    resolver = make_resolver(vaults, ttl_seconds=0)
    resolver.resolve("keyvault://myvault/db-url")
    resolver.resolve("keyvault://myvault/db-url")
    assert len(vaults.client().calls) == 2


def test_errors_are_not_cached() -> None:
    environ: dict[str, str] = {}
    resolver = make_resolver(environ=environ)
    with pytest.raises(SecretReferenceError):
        resolver.resolve("env:LATER")
    environ["LATER"] = "now set"
    assert resolver.resolve("env:LATER") == "now set"


def test_negative_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        SecretResolver(ttl_seconds=-1)


def test_repr_shows_no_cached_value() -> None:
    resolver = make_resolver(environ={"DB_URL": SECRET})
    resolver.resolve("env:DB_URL")
    assert SECRET not in repr(resolver)


# --------------------------------------------------------------------------- Azure errors


class _Response:
    """Enough of an azure-core HTTP response for HttpResponseError to read."""

    headers: dict[str, str] = {}  # noqa: RUF012 - read-only stand-in
    content_type = "application/json"
    request = None

    def __init__(self, status_code: int, reason: str, code: str, message: str) -> None:
        self.status_code, self.reason = status_code, reason
        self._body = f'{{"error": {{"code": "{code}", "message": "{message}"}}}}'

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ResourceNotFoundError(
                response=_Response(404, "Not Found", "SecretNotFound", "A secret was not found.")
            ),
            "ResourceNotFoundError (HTTP 404 Not Found): (SecretNotFound) A secret was not found.",
        ),
        (
            ClientAuthenticationError(
                message="DefaultAzureCredential failed to retrieve a token.\nAttempted: ..."
            ),
            "ClientAuthenticationError: DefaultAzureCredential failed to retrieve a token.",
        ),
        (
            HttpResponseError(
                response=_Response(403, "Forbidden", "Forbidden", "Caller is not authorized.")
            ),
            "HttpResponseError (HTTP 403 Forbidden): (Forbidden) Caller is not authorized.",
        ),
        (ServiceRequestError("Name or service not known"), "ServiceRequestError: Name or service"),
    ],
)
def test_azure_errors_name_vault_secret_and_reason(error: Exception, expected: str) -> None:
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = SECRET
    vaults.client().fail_with = error
    with pytest.raises(SecretReferenceError) as info:
        make_resolver(vaults).resolve("keyvault://myvault/db-url")
    message = str(info.value)
    assert "'keyvault://myvault/db-url'" in message
    assert f"secret 'db-url' in vault {VAULT}" in message
    assert expected in message
    assert "\n" not in message
    assert_no_secret(info.value, SECRET)


def test_a_stored_secret_never_reaches_an_error(tmp_path: Path) -> None:
    """Every failure path, with the secret sitting next to it in env, vault and files."""
    vaults = StubVaults()
    vaults.client().secrets[("db-url", None)] = SECRET
    vaults.client().secrets[("empty", None)] = None
    (tmp_path / "good").write_text(SECRET)
    (tmp_path / "binary").write_bytes(SECRET.encode() + b"\x80")
    resolver = make_resolver(vaults, environ={"DB_URL": SECRET})
    for text in ["env:DB_URL", f"file:{tmp_path / 'good'}", "keyvault://myvault/db-url"]:
        assert resolver.resolve(text) == SECRET
    failing = [
        "env:MISSING",
        f"file:{tmp_path / 'binary'}",
        f"file:{tmp_path / 'missing'}",
        "keyvault://myvault/empty",
        "keyvault://myvault/missing",
        "keyvault://myvault",
        "@Microsoft.KeyVault(",
    ]
    for text in failing:
        with pytest.raises(SecretReferenceError) as info:
            resolver.resolve(text)
        assert_no_secret(info.value, SECRET)
    assert SECRET not in repr(resolver)


# --------------------------------------------------------------------------- the real SDK


def test_stub_matches_the_sdk() -> None:
    """The stub's get_secret takes what SecretClient.get_secret takes, in the same places."""
    real = inspect.signature(SecretClient.get_secret).parameters
    stub = inspect.signature(StubSecretClient.get_secret).parameters
    assert list(real)[:3] == list(stub)[:3] == ["self", "name", "version"]
    for name in ("name", "version"):
        assert stub[name].kind == real[name].kind
        assert stub[name].default == real[name].default
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in real.values())
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in stub.values())
    # KeyVaultSecret.value is what the resolver reads
    assert isinstance(inspect.getattr_static(KeyVaultSecret, "value"), property)


def test_default_factory_builds_one_secret_client_per_vault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.identity
    import azure.keyvault.secrets

    credentials: list[object] = []
    built: list[tuple[str, object]] = []

    class FakeCredential:
        def __init__(self) -> None:
            credentials.append(self)

    class RecordingSecretClient(StubSecretClient):
        def __init__(self, vault_url: str, credential: object) -> None:
            super().__init__(vault_url, {("db-url", None): SECRET, ("other", None): "x"})
            built.append((vault_url, credential))

    assert "vault_url" in inspect.signature(SecretClient).parameters
    assert "credential" in inspect.signature(SecretClient).parameters
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient", RecordingSecretClient)
    resolver = SecretResolver(environ={})
    assert resolver.resolve("keyvault://myvault/db-url") == SECRET
    resolver.resolve("keyvault://myvault/other")
    resolver.resolve("keyvault://othervault/db-url")
    assert [url for url, _ in built] == [VAULT, "https://othervault.vault.azure.net/"]
    assert len(credentials) == 1
    assert all(credential is credentials[0] for _, credential in built)


def test_default_factory_builds_a_real_secret_client() -> None:
    """No request is made: building the client and credential is local."""
    resolver = SecretResolver()
    client = resolver._default_client(VAULT)
    assert isinstance(client, SecretClient)
    assert client.vault_url == VAULT.rstrip("/")


def test_missing_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.keyvault.secrets", None)
    with pytest.raises(SecretReferenceError, match=r"pip install 'paymetrics\[azure\]'") as info:
        SecretResolver().resolve("keyvault://myvault/db-url")
    assert "'keyvault://myvault/db-url'" in str(info.value)
    assert_no_secret(info.value)
