"""The Azure App Configuration source, against a fake of azure-appconfiguration-provider.

`FakeAppConfiguration` plays the store and the provider's `load` as documented: selectors
in order (a later selector's key wins), `trim_prefixes`, JSON content types parsed, Key
Vault references handed to `secret_resolver`, and `refresh()` reloading everything only
when a watched key changed and `refresh_interval` has passed. The tests at the end check
the fake against the real SDK: its `load` signature, and the real provider's processing
of the same settings.
"""

from __future__ import annotations

import copy
import inspect
import json
import sys
import traceback
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from azure.appconfiguration import ConfigurationSetting, SecretReferenceConfigurationSetting
from azure.appconfiguration.provider import (
    AzureAppConfigurationProvider,
    SettingSelector,
    WatchKey,
)
from azure.appconfiguration.provider import load as real_load
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
)
from pydantic import SecretStr

from paymetrics.config.appconfig import AppConfigurationSource, ConfigSourceError, parse_value
from paymetrics.config.secrets import SecretResolver

ENDPOINT = "https://paymetrics-test.azconfig.io"
ACCESS_KEY = "c2VjcmV0LWFjY2Vzcy1rZXktZG8tbm90LXNob3c9PQ=="  # the connection string's secret
CONNECTION_STRING = f"Endpoint={ENDPOINT};Id=abcd-id-0123;Secret={ACCESS_KEY}"
NO_LABEL = "\0"
JSON_CONTENT_TYPE = "application/json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def process(
    settings: list[ConfigurationSetting],
    trim_prefixes: list[str],
    secret_resolver: Callable[[str], str] | None,
) -> dict[str, Any]:
    """What the provider documents: later settings win, prefixes trimmed, JSON parsed."""
    unique = {setting.key: setting for setting in settings}
    out: dict[str, Any] = {}
    for setting in unique.values():
        key = setting.key
        for prefix in sorted(trim_prefixes, key=len, reverse=True):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if isinstance(setting, SecretReferenceConfigurationSetting):
            if secret_resolver is None or setting.secret_id is None:
                raise ValueError("Either a credential to Key Vault ... must be set")
            out[key] = secret_resolver(setting.secret_id)
        elif setting.content_type and JSON_CONTENT_TYPE in setting.content_type:
            try:
                out[key] = json.loads(setting.value)
            except json.JSONDecodeError:
                out[key] = setting.value
        else:
            out[key] = setting.value
    return out


class FakeProvider(Mapping[str, Any]):
    """`AzureAppConfigurationProvider`: a Mapping of trimmed keys, and `refresh()`."""

    def __init__(self, store: FakeAppConfiguration, options: dict[str, Any]) -> None:
        self.store = store
        self.selects: list[SettingSelector] = options["selects"]
        self.trim_prefixes: list[str] = options["trim_prefixes"] or []
        self.secret_resolver = options["secret_resolver"]
        self.on_refresh_success = options["on_refresh_success"]
        self.refresh_interval: int = options["refresh_interval"]
        self.watched = {
            (key, label): store.value_of(key, label) for key, label in options["refresh_on"] or []
        }
        self.refresh_calls = 0
        self.closed = False
        self._dict = self._load()
        self._next_refresh = store.clock() + self.refresh_interval

    def _load(self) -> dict[str, Any]:
        self.store.raise_failure()
        self.store.list_calls += 1
        settings = [s for selector in self.selects for s in self.store.select(selector)]
        return process(settings, self.trim_prefixes, self.secret_resolver)

    def refresh(self, **kwargs: Any) -> None:
        self.refresh_calls += 1
        if not self.watched or self.store.clock() < self._next_refresh:
            return
        self._next_refresh = self.store.clock() + self.refresh_interval
        self.store.raise_failure()
        current = {(key, label): self.store.value_of(key, label) for key, label in self.watched}
        if current == self.watched:
            return
        self.watched = current
        self._dict = self._load()
        if self.on_refresh_success:
            self.on_refresh_success()

    def close(self) -> None:
        self.closed = True

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)


class FakeAppConfiguration:
    """The service (settings by key and label) and a stand-in for the provider's `load`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.settings: dict[tuple[str, str | None], ConfigurationSetting] = {}
        self.fail_with: Exception | None = None
        self.calls: list[dict[str, Any]] = []
        self.providers: list[FakeProvider] = []
        self.list_calls = 0

    def set(
        self, key: str, value: str, label: str | None = None, content_type: str | None = None
    ) -> None:
        self.settings[(key, label)] = ConfigurationSetting(
            key=key, value=value, label=label, content_type=content_type
        )

    def set_keyvault_reference(self, key: str, secret_uri: str, label: str | None = None) -> None:
        self.settings[(key, label)] = SecretReferenceConfigurationSetting(
            key=key, secret_id=secret_uri, label=label
        )

    def value_of(self, key: str, label: str) -> str | None:
        setting = self.settings.get((key, None if label == NO_LABEL else label))
        return None if setting is None else setting.value

    def select(self, selector: SettingSelector) -> list[ConfigurationSetting]:
        key_filter, label_filter = selector.key_filter, selector.label_filter
        assert key_filter is not None
        wanted_label = None if label_filter == NO_LABEL else label_filter
        return [
            setting
            for (key, label), setting in self.settings.items()
            if label == wanted_label
            and (key.startswith(key_filter[:-1]) if key_filter.endswith("*") else key == key_filter)
        ]

    def raise_failure(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def load(self, **kwargs: Any) -> FakeProvider:
        self.calls.append(kwargs)
        return self._load(**kwargs)

    def _load(
        self,
        *,
        endpoint: str | None = None,
        credential: Any = None,
        connection_string: str | None = None,
        selects: list[SettingSelector] | None = None,
        trim_prefixes: list[str] | None = None,
        secret_resolver: Callable[[str], str] | None = None,
        refresh_on: list[tuple[str, str]] | None = None,
        refresh_interval: int = 30,
        on_refresh_success: Callable[[], None] | None = None,
        startup_timeout: int = 100,
    ) -> FakeProvider:
        """The subset of the real `load` the source uses; see test_fake_load_matches_the_sdk."""
        assert (endpoint is None) != (connection_string is None)
        provider = FakeProvider(
            self,
            {
                "selects": selects or [SettingSelector(key_filter="*")],
                "trim_prefixes": trim_prefixes,
                "secret_resolver": secret_resolver,
                "refresh_on": refresh_on,
                "refresh_interval": refresh_interval,
                "on_refresh_success": on_refresh_success,
            },
        )
        self.providers.append(provider)
        return provider


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeAppConfiguration:
    return FakeAppConfiguration(clock)


def make_source(
    store: FakeAppConfiguration, clock: FakeClock, **options: Any
) -> AppConfigurationSource:
    options.setdefault("connection_string", SecretStr(CONNECTION_STRING))
    return AppConfigurationSource(loader=store.load, clock=clock, **options)


def assert_no_access_key(*texts: str) -> None:
    for text in texts:
        assert ACCESS_KEY not in text
        assert CONNECTION_STRING not in text


def formatted(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + str(error) + repr(error)


# --------------------------------------------------------------------------- naming


def test_name_shows_endpoint_prefix_and_label_never_the_access_key(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    source = make_source(store, clock, label="prod")
    assert source.name == f"azure-app-configuration {ENDPOINT} (prefix 'paymetrics:', label 'prod')"
    assert source.endpoint == ENDPOINT
    assert_no_access_key(source.name, repr(source), str(vars(source)))


def test_name_with_endpoint_and_no_label(store: FakeAppConfiguration, clock: FakeClock) -> None:
    source = AppConfigurationSource(endpoint=ENDPOINT, credential=object(), loader=store.load)
    assert source.name == f"azure-app-configuration {ENDPOINT} (prefix 'paymetrics:', no label)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of endpoint or connection_string"),
        (
            {"endpoint": ENDPOINT, "connection_string": SecretStr(CONNECTION_STRING)},
            "exactly one",
        ),
        ({"connection_string": SecretStr(f"Id=x;Secret={ACCESS_KEY}")}, "no Endpoint="),
        ({"endpoint": "paymetrics-test.azconfig.io"}, "is not an http(s) URL"),
        ({"endpoint": ENDPOINT, "refresh_interval_seconds": 0.5}, "refresh_interval_seconds"),
        ({"endpoint": ENDPOINT, "startup_timeout_seconds": -1}, "startup_timeout_seconds"),
        ({"endpoint": ENDPOINT, "separator": ""}, "separator"),
        ({"endpoint": ENDPOINT, "label": "prod,dev"}, "one label"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigSourceError, match="azure-app-configuration") as info:
        AppConfigurationSource(**options)
    assert message in str(info.value)
    assert_no_access_key(formatted(info.value))


# --------------------------------------------------------------------------- loading


def test_prefix_trimmed_and_keys_nested(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("paymetrics:storage:db_url", "sqlite:///x.db")
    store.set("paymetrics:storage:pool:size", "5")
    store.set("paymetrics:source:url", "file:events.jsonl")
    store.set("paymetrics:sentinel", "1")
    store.set("otherapp:storage:db_url", "not ours")
    assert make_source(store, clock).load() == {
        "storage": {"db_url": "sqlite:///x.db", "pool": {"size": 5}},
        "source": {"url": "file:events.jsonl"},
    }
    (call,) = store.calls
    assert call["trim_prefixes"] == ["paymetrics:"]
    assert [s.key_filter for s in call["selects"]] == ["paymetrics:*"]


def test_custom_prefix_and_separator(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("pm/storage/db_url", "sqlite:///x.db")
    store.set("pm/sentinel", "1")
    source = make_source(store, clock, key_prefix="pm/", separator="/", sentinel_key="pm/sentinel")
    assert source.load() == {"storage": {"db_url": "sqlite:///x.db"}}


def test_unlabelled_settings_overridden_by_the_label(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    store.set("paymetrics:api:host", "127.0.0.1")
    store.set("paymetrics:api:port", "9090", label="prod")
    store.set("paymetrics:api:port", "7070", label="dev")
    assert make_source(store, clock, label="prod").load() == {
        "api": {"port": 9090, "host": "127.0.0.1"}
    }
    assert make_source(store, clock, label="dev").load()["api"]["port"] == 7070
    assert make_source(store, clock).load()["api"]["port"] == 8080
    assert [s.label_filter for s in store.calls[0]["selects"]] == [NO_LABEL, "prod"]
    assert [s.label_filter for s in store.calls[2]["selects"]] == [NO_LABEL]


@pytest.mark.parametrize(
    ("stored", "loaded"),
    [
        ('[{"name": "approval_rate", "filter": "status = \'approved\'"}]', None),
        ('{"a": {"b": [1, 2]}}', None),
        ("42", 42),
        ("-1.5", -1.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("plain text", "plain text"),
        ('"quoted"', '"quoted"'),
        ("null", "null"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("007", "007"),
        ("", ""),
        ("{not json", "{not json"),
        (
            "@Microsoft.KeyVault(VaultName=v;SecretName=s)",
            "@Microsoft.KeyVault(VaultName=v;SecretName=s)",
        ),
    ],
)
def test_json_values_parsed_plain_strings_kept(stored: str, loaded: Any) -> None:
    expected = json.loads(stored) if loaded is None else loaded
    assert parse_value(stored) == expected
    assert type(parse_value(stored)) is type(expected)


def test_json_content_type_and_plain_json(store: FakeAppConfiguration, clock: FakeClock) -> None:
    rules = [{"name": "approval_rate", "numerator": "count(*)"}]
    store.set("paymetrics:metrics", json.dumps(rules), content_type=JSON_CONTENT_TYPE)
    store.set("paymetrics:windows", "[300, 3600]")
    store.set("paymetrics:api:enabled", "true")
    assert make_source(store, clock).load() == {
        "metrics": rules,
        "windows": [300, 3600],
        "api": {"enabled": True},
    }


def test_json_section_merged_with_deeper_keys(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:storage", '{"db_url": "a", "pool": {"size": 5, "timeout": 30}}')
    store.set("paymetrics:storage:pool:size", "10")
    assert make_source(store, clock).load() == {
        "storage": {"db_url": "a", "pool": {"size": 10, "timeout": 30}}
    }


def test_a_value_cannot_also_be_a_section(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("paymetrics:storage", "sqlite:///x.db")
    store.set("paymetrics:storage:db_url", "sqlite:///y.db")
    with pytest.raises(ConfigSourceError) as info:
        make_source(store, clock).load()
    message = str(info.value)
    assert ENDPOINT in message
    assert "'paymetrics:storage:db_url' needs 'paymetrics:storage' to be a section" in message


def test_a_bad_store_is_reported_again_and_the_last_good_settings_kept(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:storage", "sqlite:///x.db")
    store.set("paymetrics:storage:db_url", "sqlite:///y.db")
    source = make_source(store, clock)
    for _ in range(2):  # a failed first load is not cached as an empty result
        with pytest.raises(ConfigSourceError, match="to be a section"):
            source.load()
    assert all(provider.closed for provider in store.providers)
    del store.settings[("paymetrics:storage:db_url", None)]
    assert source.load() == {"storage": "sqlite:///x.db"}
    store.set("paymetrics:storage:db_url", "sqlite:///y.db")
    store.set("paymetrics:sentinel", "2")
    clock.advance(30)
    with pytest.raises(ConfigSourceError, match="to be a section"):
        source.poll()
    assert source.load() == {"storage": "sqlite:///x.db"}


def test_empty_section_is_an_error(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("paymetrics:storage::db_url", "x")
    with pytest.raises(ConfigSourceError, match="'paymetrics:storage::db_url' has an empty"):
        make_source(store, clock).load()


def test_load_returns_a_copy(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("paymetrics:storage:db_url", "a")
    source = make_source(store, clock)
    first = source.load()
    first["storage"]["db_url"] = "changed"
    assert source.load() == {"storage": {"db_url": "a"}}


def test_keyvault_references_arrive_as_reference_text_for_the_resolver(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    uri = "https://myvault.vault.azure.net/secrets/db-url"
    store.set_keyvault_reference("paymetrics:storage:db_url", uri)
    loaded = make_source(store, clock).load()
    assert loaded == {"storage": {"db_url": f"@Microsoft.KeyVault(SecretUri={uri})"}}

    class Vault:
        def get_secret(self, name: str, version: str | None = None, **kwargs: Any) -> Any:
            assert (name, version) == ("db-url", None)
            return type("Secret", (), {"value": "postgresql://u:pw@db/x"})()

    resolver = SecretResolver(keyvault_client_factory=lambda url: Vault(), environ={})
    assert resolver.resolve(loaded["storage"]["db_url"]) == "postgresql://u:pw@db/x"


# --------------------------------------------------------------------------- refreshing


def test_second_load_within_the_interval_does_not_call_the_service(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    source = make_source(store, clock, refresh_interval_seconds=30)
    source.load()
    clock.advance(29)
    source.load()
    (provider,) = store.providers
    assert len(store.calls) == 1
    assert store.list_calls == 1
    assert provider.refresh_calls == 0
    clock.advance(1)
    source.load()  # an interval passed: asks the provider to refresh; nothing changed
    assert provider.refresh_calls == 1
    assert store.list_calls == 1


def test_poll_reloads_only_when_the_sentinel_changed(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    store.set("paymetrics:sentinel", "1")
    source = make_source(store, clock, refresh_interval_seconds=30)
    assert source.load() == {"api": {"port": 8080}}
    (provider,) = store.providers

    store.set("paymetrics:api:port", "9090")
    assert source.poll() is False  # too soon: the provider is not even asked
    assert provider.refresh_calls == 0
    clock.advance(30)
    assert source.poll() is False  # asked, but the sentinel is unchanged
    assert provider.refresh_calls == 1
    assert source.load() == {"api": {"port": 8080}}

    store.set("paymetrics:sentinel", "2")
    clock.advance(10)
    assert source.poll() is False
    clock.advance(20)
    assert source.poll() is True
    assert source.load() == {"api": {"port": 9090}}
    assert len(store.calls) == 1  # refreshed in place, not loaded again


def test_load_after_the_interval_picks_up_a_sentinel_change(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    source = make_source(store, clock, refresh_interval_seconds=5)
    source.load()
    store.set("paymetrics:api:port", "9090")
    store.set("paymetrics:sentinel", "created")  # a watched key appearing counts as a change
    clock.advance(5)
    assert source.load() == {"api": {"port": 9090}}


def test_sentinel_watched_under_each_selected_label(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080", label="prod")
    store.set("paymetrics:sentinel", "1", label="prod")
    source = make_source(store, clock, label="prod")
    source.load()
    assert store.calls[0]["refresh_on"] == [
        WatchKey("paymetrics:sentinel", NO_LABEL),
        WatchKey("paymetrics:sentinel", "prod"),
    ]
    store.set("paymetrics:api:port", "9090", label="prod")
    store.set("paymetrics:sentinel", "2", label="prod")
    clock.advance(30)
    assert source.poll() is True
    assert source.load() == {"api": {"port": 9090}}


def test_poll_before_load_loads(store: FakeAppConfiguration, clock: FakeClock) -> None:
    store.set("paymetrics:api:port", "8080")
    source = make_source(store, clock)
    assert source.poll() is True
    assert source.load() == {"api": {"port": 8080}}
    assert len(store.calls) == 1


def test_provider_interval_is_never_later_than_ours(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    make_source(store, clock, refresh_interval_seconds=30.7).load()
    make_source(store, clock, refresh_interval_seconds=1).load()
    assert [call["refresh_interval"] for call in store.calls] == [30, 1]


def test_invalidate_reads_the_whole_store_again(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    source = make_source(store, clock)
    source.load()
    store.set("paymetrics:api:port", "9090")  # no sentinel bump
    source.invalidate()
    assert store.providers[0].closed
    assert source.load() == {"api": {"port": 9090}}
    assert len(store.calls) == 2


# --------------------------------------------------------------------------- errors


def _http_error(status: int, reason: str, message: str) -> HttpResponseError:
    class Response:
        headers: typing.ClassVar[dict[str, str]] = {}
        content_type = "application/json"
        request = None
        status_code = status

        def __init__(self) -> None:
            self.reason = reason

        def text(self, encoding: str | None = None) -> str:
            return json.dumps({"error": {"code": reason.replace(" ", ""), "message": message}})

        def body(self) -> bytes:
            return self.text().encode()

    return HttpResponseError(response=Response())


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ClientAuthenticationError(message="Invalid access key.\nmore detail"),
            "ClientAuthenticationError: Invalid access key.",
        ),
        (
            ServiceRequestError("Failed to resolve 'paymetrics-test.azconfig.io'"),
            "ServiceRequestError: Failed to resolve 'paymetrics-test.azconfig.io'",
        ),
        (
            _http_error(403, "Forbidden", "Access to the store is denied."),
            "HttpResponseError (HTTP 403 Forbidden): (Forbidden) Access to the store is denied.",
        ),
        (
            TimeoutError(
                "The provider timed out while attempting to load.",
                [ServiceRequestError("first"), ClientAuthenticationError(message="Bad key.")],
            ),
            "timed out after 100s; last error: ClientAuthenticationError: Bad key.",
        ),
        (ValueError("No endpoint specified."), "ValueError: No endpoint specified."),
        (
            ClientAuthenticationError(message=f"signature for {CONNECTION_STRING} rejected"),
            "ClientAuthenticationError: signature for *** rejected",
        ),
    ],
)
def test_load_errors_name_the_endpoint_never_the_access_key(
    store: FakeAppConfiguration, clock: FakeClock, error: Exception, reason: str
) -> None:
    store.fail_with = error
    source = make_source(store, clock)
    with pytest.raises(ConfigSourceError) as info:
        source.load()
    message = str(info.value)
    assert message.startswith(f"{source.name}: loading failed: ")
    assert reason in message
    assert "\n" not in message
    assert_no_access_key(formatted(info.value))
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_refresh_errors_are_translated_and_retried_after_the_interval(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    store.set("paymetrics:api:port", "8080")
    source = make_source(store, clock)
    source.load()
    store.fail_with = ServiceRequestError(f"connection reset ({CONNECTION_STRING})")
    clock.advance(30)
    with pytest.raises(ConfigSourceError, match="refresh failed: ServiceRequestError") as info:
        source.poll()
    assert_no_access_key(formatted(info.value))
    assert source.poll() is False  # not hammering the service: next try after the interval
    store.fail_with = None
    store.set("paymetrics:api:port", "9090")
    store.set("paymetrics:sentinel", "2")
    clock.advance(30)
    assert source.poll() is True
    assert source.load() == {"api": {"port": 9090}}


def test_missing_sdk_gives_the_install_hint(
    store: FakeAppConfiguration, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "azure.appconfiguration.provider", None)
    with pytest.raises(ConfigSourceError, match=r"pip install 'paymetrics\[azure\]'") as info:
        make_source(store, clock).load()
    assert ENDPOINT in str(info.value)


# --------------------------------------------------------------------------- the real SDK


def test_defaults_to_the_providers_load_and_default_credential(
    store: FakeAppConfiguration, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.appconfiguration.provider
    import azure.identity

    class FakeCredential:
        pass

    monkeypatch.setattr(azure.appconfiguration.provider, "load", store.load)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    store.set("paymetrics:api:port", "8080")
    source = AppConfigurationSource(endpoint=ENDPOINT, clock=clock)
    assert source.load() == {"api": {"port": 8080}}
    (call,) = store.calls
    assert call["endpoint"] == ENDPOINT
    assert isinstance(call["credential"], FakeCredential)
    assert "connection_string" not in call


def test_connection_string_passed_as_is(store: FakeAppConfiguration, clock: FakeClock) -> None:
    make_source(store, clock).load()
    (call,) = store.calls
    assert call["connection_string"] == CONNECTION_STRING
    assert "endpoint" not in call
    assert "credential" not in call


def test_fake_load_matches_the_sdk(store: FakeAppConfiguration, clock: FakeClock) -> None:
    """Every keyword the source passes, and every parameter the fake takes, is a named
    parameter of one of the real `load` overloads (not swallowed by its **kwargs)."""
    overloads = [inspect.signature(f).parameters for f in typing.get_overloads(real_load)]
    assert len(overloads) == 2

    def named(parameters: Mapping[str, inspect.Parameter]) -> set[str]:
        return {n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}

    make_source(store, clock).load()
    AppConfigurationSource(endpoint=ENDPOINT, credential=object(), loader=store.load).load()
    for call in store.calls:
        assert any(set(call) <= named(parameters) for parameters in overloads), sorted(call)
    fake = inspect.signature(FakeAppConfiguration._load).parameters
    real_names = set().union(*(named(parameters) for parameters in overloads))
    assert set(fake) - {"self"} <= real_names
    for overload in overloads:
        for name in set(fake) & set(overload) - {"endpoint", "credential"}:
            assert overload[name].kind is inspect.Parameter.KEYWORD_ONLY
            if overload[name].default is not inspect.Parameter.empty:
                assert overload[name].default == fake[name].default, name
    # the selector and watch-key shapes the fake reads
    selector = SettingSelector(key_filter="paymetrics:*", label_filter="prod")
    assert (selector.key_filter, selector.label_filter) == ("paymetrics:*", "prod")
    assert SettingSelector(key_filter="x").label_filter == NO_LABEL
    assert WatchKey._fields == ("key", "label")
    assert WatchKey("k").label == NO_LABEL
    # the provider is a Mapping with refresh() taking no required argument
    assert issubclass(AzureAppConfigurationProvider, Mapping)
    refresh = inspect.signature(AzureAppConfigurationProvider.refresh).parameters
    assert all(
        p.default is not inspect.Parameter.empty or p.kind is inspect.Parameter.VAR_KEYWORD
        for name, p in refresh.items()
        if name != "self"
    )


def test_fake_processing_matches_the_real_provider(
    store: FakeAppConfiguration, clock: FakeClock
) -> None:
    """Same settings, same options: the fake and the real provider give the same mapping.

    Uses the provider's private `_buildprovider` and `_process_configurations` (no network);
    if an SDK release moves them, this test is the one to update.
    """
    from azure.appconfiguration.provider._azureappconfigurationprovider import _buildprovider

    store.set("paymetrics:api:port", "8080")
    store.set("paymetrics:api:port", "9090", label="prod")
    store.set("paymetrics:metrics", '[{"name": "x"}]', content_type=JSON_CONTENT_TYPE)
    store.set("paymetrics:broken", "{nope", content_type=JSON_CONTENT_TYPE)
    store.set("paymetrics:windows", "[300]")
    store.set_keyvault_reference(
        "paymetrics:storage:db_url", "https://myvault.vault.azure.net/secrets/db-url/abc123"
    )
    make_source(store, clock, label="prod").load()
    options = copy.copy(store.calls[0])
    connection_string = options.pop("connection_string")
    settings = [s for selector in options["selects"] for s in store.select(selector)]
    real = _buildprovider(connection_string, None, None, **options)
    # the client is only used to expand snapshot references, which these settings are not
    expected = real._process_configurations(settings, None)  # type: ignore[arg-type]
    assert dict(store.providers[0]) == expected
    assert expected["storage:db_url"] == (
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url/abc123)"
    )
