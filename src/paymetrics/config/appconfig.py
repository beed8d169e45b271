"""Azure App Configuration as a layer of the configuration loader.

Built on azure-appconfiguration-provider (`pip install 'paymetrics[azure]'`), imported
only when the source first loads. What it selects and how:

* keys starting with `key_prefix` (default `paymetrics:`), the prefix trimmed; the rest
  is split on `separator` into nested sections: `paymetrics:storage:db_url` sets
  `{"storage": {"db_url": ...}}`. A JSON object stored under a section is merged with
  deeper keys, the deeper key winning;
* settings without a label, then — when `label` is set — the same keys under `label`,
  which override them (the provider's later-selector-wins rule). One store serves all
  environments: shared values unlabelled, `prod`/`dev` values labelled;
* values with a JSON content type arrive parsed; plain strings that are JSON objects,
  arrays, numbers or booleans are parsed too (`paymetrics:metrics` may hold a JSON array
  of rules); any other string stays a string;
* Key Vault references stored in App Configuration are not fetched here: they arrive as
  `@Microsoft.KeyVault(SecretUri=...)` strings, which the loader resolves with its
  `SecretResolver` like any other reference (one cache, one error style);
* the sentinel key (`paymetrics:sentinel`, under each selected label) is watched: bump it
  after editing settings and `poll()` reloads everything at the next refresh interval.
  It is not itself a setting, so it is left out of `load()`'s result.

The connection string holds an access key: it is kept as a `SecretStr`, and `name`,
`repr` and errors show only the endpoint.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import SecretStr

from paymetrics.config.secrets import AZURE_INSTALL_HINT, azure_error_types, describe_azure_error

__all__ = ["AppConfigurationSource", "ConfigSourceError"]

_NO_LABEL = "\0"  # the provider's (and the service's) "no label" filter
_T = TypeVar("_T")


class ConfigSourceError(ValueError):
    """A configuration source failed; the message names the source and the reason."""


def _keyvault_reference_text(secret_uri: str) -> str:
    """The provider's `secret_resolver`: hand Key Vault references on as reference text."""
    return f"@Microsoft.KeyVault(SecretUri={secret_uri})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_value(value: Any) -> Any:
    """JSON objects, arrays, numbers and booleans parsed from strings; other values unchanged."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError, NaN/Infinity
        return value
    return parsed if isinstance(parsed, dict | list | bool | int | float) else value


def _merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class AppConfigurationSource:
    """Settings from an App Configuration store, cached between refresh intervals.

    Give `endpoint` (authenticated with `credential`, default `DefaultAzureCredential`)
    or `connection_string`. `loader` stands in for the provider's `load` in tests;
    `clock` (monotonic seconds) decides when `refresh_interval_seconds` has passed.
    `startup_timeout_seconds` bounds the provider's own retrying at first load.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        connection_string: SecretStr | None = None,
        credential: Any = None,
        key_prefix: str = "paymetrics:",
        label: str | None = None,
        sentinel_key: str = "paymetrics:sentinel",
        refresh_interval_seconds: float = 30.0,
        startup_timeout_seconds: float = 100.0,
        separator: str = ":",
        loader: Callable[..., Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        where = "azure-app-configuration"
        if (endpoint is None) == (connection_string is None):
            raise ConfigSourceError(f"{where}: give exactly one of endpoint or connection_string")
        if connection_string is not None:
            endpoint = _endpoint_of(connection_string)
        assert endpoint is not None
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigSourceError(f"{where}: endpoint {endpoint!r} is not an http(s) URL")
        if refresh_interval_seconds < 1:
            raise ConfigSourceError(
                f"{where} {endpoint}: refresh_interval_seconds must be >= 1 (the provider's"
                f" minimum), got {refresh_interval_seconds}"
            )
        if startup_timeout_seconds < 0:
            raise ConfigSourceError(
                f"{where} {endpoint}: startup_timeout_seconds must be >= 0,"
                f" got {startup_timeout_seconds}"
            )
        if not separator:
            raise ConfigSourceError(f"{where} {endpoint}: separator must not be empty")
        if label is not None and ("*" in label or "," in label):
            raise ConfigSourceError(f"{where} {endpoint}: label {label!r} must be one label")
        self.endpoint = endpoint
        self.key_prefix = key_prefix
        self.label = label
        self.sentinel_key = sentinel_key
        self.refresh_interval_seconds = refresh_interval_seconds
        self.startup_timeout_seconds = startup_timeout_seconds
        self.separator = separator
        self._connection_string = connection_string
        self._credential = credential
        self._loader = loader
        self._clock = clock
        self._lock = threading.RLock()
        self._provider: Mapping[str, Any] | None = None
        self._settings: dict[str, Any] = {}
        self._checked_at = 0.0
        self._refreshed = False
        label_text = f"label {label!r}" if label is not None else "no label"
        self.name = f"{where} {endpoint} (prefix {key_prefix!r}, {label_text})"

    def __repr__(self) -> str:
        return f"AppConfigurationSource({self.name!r})"

    # -- the source API ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The settings as a nested dict; the service is asked again once an interval passed."""
        with self._lock:
            if self._provider is None:
                self._open()
            elif self._clock() - self._checked_at >= self.refresh_interval_seconds:
                self.poll()
            return copy.deepcopy(self._settings)

    def poll(self) -> bool:
        """Refresh if an interval passed; True when the sentinel changed and settings reloaded.

        The first call on a source never loaded loads it, and is True.
        """
        with self._lock:
            if self._provider is None:
                self._open()
                return True
            now = self._clock()
            if now - self._checked_at < self.refresh_interval_seconds:
                return False
            self._checked_at = now
            self._refreshed = False
            refresh = getattr(self._provider, "refresh", None)
            if not callable(refresh):
                raise ConfigSourceError(f"{self.name}: the provider has no refresh()")
            self._call(refresh, "refresh failed")
            if not self._refreshed:
                return False
            self._settings = self._nest(self._provider)  # on error the last good settings stay
            return True

    def invalidate(self) -> None:
        """Drop the provider and its settings: the next load() reads the whole store again."""
        with self._lock:
            self.close()
            self._settings = {}

    def close(self) -> None:
        """Close the provider's HTTP clients (the real provider has `close()`; fakes may not)."""
        with self._lock:
            provider, self._provider = self._provider, None
            close = getattr(provider, "close", None)
            if callable(close):
                close()

    # -- internals -----------------------------------------------------------------------

    def _open(self) -> None:
        loader, kwargs = self._load_arguments()
        provider = self._call(lambda: loader(**kwargs), "loading failed")
        try:
            settings = self._nest(provider)
        except ConfigSourceError:
            close = getattr(provider, "close", None)
            if callable(close):
                close()  # not kept: the next load() opens afresh and reports the problem again
            raise
        self._provider, self._settings = provider, settings
        self._checked_at = self._clock()

    def _load_arguments(self) -> tuple[Callable[..., Mapping[str, Any]], dict[str, Any]]:
        """The provider's `load` and its keyword arguments, importing the SDK lazily."""
        try:
            from azure.appconfiguration.provider import SettingSelector, WatchKey
        except ImportError:
            missing = True
        else:
            missing = False
        if missing:
            raise ConfigSourceError(f"{self.name} needs the Azure SDK: {AZURE_INSTALL_HINT}")
        labels = [_NO_LABEL] if self.label is None else [_NO_LABEL, self.label]
        key_filter = f"{self.key_prefix}*"
        kwargs: dict[str, Any] = {
            "selects": [SettingSelector(key_filter=key_filter, label_filter=lab) for lab in labels],
            "trim_prefixes": [self.key_prefix] if self.key_prefix else [],
            "refresh_on": [WatchKey(self.sentinel_key, lab) for lab in labels],
            # The provider's timer runs on the wall clock; floor it so it is never the later one.
            "refresh_interval": max(1, math.floor(self.refresh_interval_seconds)),
            "on_refresh_success": self._on_refresh_success,
            "secret_resolver": _keyvault_reference_text,
            "startup_timeout": math.ceil(self.startup_timeout_seconds),
        }
        if self._connection_string is not None:
            kwargs["connection_string"] = self._connection_string.get_secret_value()
        else:
            kwargs["endpoint"] = self.endpoint
            self._credential = self._credential or self._default_credential()
            kwargs["credential"] = self._credential
        loader = self._loader
        if loader is None:
            from azure.appconfiguration.provider import load

            loader = load
        return loader, kwargs

    def _default_credential(self) -> Any:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            missing = True
        else:
            missing = False
        if missing:
            raise ConfigSourceError(f"{self.name} needs azure-identity: {AZURE_INSTALL_HINT}")
        return DefaultAzureCredential()

    def _on_refresh_success(self) -> None:
        self._refreshed = True

    def _call(self, action: Callable[[], _T], what: str) -> _T:
        """Run a provider call; its failures become ConfigSourceError naming the endpoint only."""
        # The SDK raises AzureError subclasses, ValueError (bad options, Key Vault setup),
        # RuntimeError (no replica answered a refresh) and TimeoutError (startup retries).
        expected: tuple[type[Exception], ...] = (
            *azure_error_types(),
            ValueError,
            RuntimeError,
            OSError,
        )
        try:
            return action()
        except TimeoutError as error:  # the provider retried until startup_timeout
            causes = error.args[1] if len(error.args) > 1 else None
            last = ""
            if isinstance(causes, list) and causes:
                last = f"; last error: {describe_azure_error(causes[-1])}"
            problem = f"timed out after {self.startup_timeout_seconds:g}s{last}"
        except expected as error:
            problem = describe_azure_error(error)
        raise ConfigSourceError(f"{self.name}: {what}: {self._scrub(problem)}")

    def _scrub(self, text: str) -> str:
        """Hide the connection string and its parts, should an SDK message ever echo them."""
        if self._connection_string is None:
            return text
        secret = self._connection_string.get_secret_value()
        parts = [secret, *(p.partition("=")[2] for p in secret.split(";"))]
        for part in sorted(parts, key=len, reverse=True):
            if len(part) >= 8 and part != self.endpoint:
                text = text.replace(part, "***")
        return text

    def _nest(self, provider: Mapping[str, Any]) -> dict[str, Any]:
        sentinel = self.sentinel_key
        if self.key_prefix and sentinel.startswith(self.key_prefix):
            sentinel = sentinel[len(self.key_prefix) :]
        items = [(k, parse_value(v)) for k, v in provider.items() if k != sentinel]
        return self._build_tree(items)

    def _build_tree(self, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Shallower keys first, so deeper keys override what a JSON object set."""
        root: dict[str, Any] = {}
        sep = self.separator
        for key, value in sorted(items, key=lambda item: item[0].count(sep)):
            parts = key.split(sep)
            if not all(parts):
                raise ConfigSourceError(
                    f"{self.name}: key {self.key_prefix + key!r} has an empty section"
                )
            node = root
            for depth, part in enumerate(parts[:-1], start=1):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    parent = self.key_prefix + sep.join(parts[:depth])
                    raise ConfigSourceError(
                        f"{self.name}: key {self.key_prefix + key!r} needs {parent!r} to be a"
                        f" section, but {parent!r} holds a {type(child).__name__} value"
                    )
                node = child
            leaf = parts[-1]
            if isinstance(value, dict) and isinstance(node.get(leaf), dict):
                _merge(node[leaf], value)
            else:
                node[leaf] = value
        return root


def _endpoint_of(connection_string: SecretStr) -> str:
    """`Endpoint=...` from `Endpoint=https://x.azconfig.io;Id=...;Secret=...`."""
    for part in connection_string.get_secret_value().split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "endpoint" and value.strip():
            return value.strip()
    raise ConfigSourceError(
        "azure-app-configuration: the connection string has no Endpoint=https://... part"
    )


#: The variables that point a process at an App Configuration store. The store cannot
#: configure its own connection, so these live in the environment only.
ENVIRONMENT = {
    "PAYMETRICS_APPCONFIG_ENDPOINT": "https://<store>.azconfig.io (DefaultAzureCredential)",
    "PAYMETRICS_APPCONFIG_CONNECTION_STRING": "a connection string, or a secret reference to one",
    "PAYMETRICS_APPCONFIG_PREFIX": "key prefix (default 'paymetrics:')",
    "PAYMETRICS_APPCONFIG_LABEL": "label to select on top of unlabelled keys (default none)",
    "PAYMETRICS_APPCONFIG_SENTINEL": "sentinel key (default 'paymetrics:sentinel')",
    "PAYMETRICS_APPCONFIG_REFRESH_SECONDS": "how often the sentinel is checked (default 30)",
    "PAYMETRICS_APPCONFIG_STARTUP_TIMEOUT_SECONDS": "how long the first load retries (default 15)",
}


def from_environment(
    environ: Mapping[str, str], resolve: Callable[[str], str] = lambda text: text
) -> AppConfigurationSource | None:
    """The store named by `PAYMETRICS_APPCONFIG_*` variables, or None when none is named.

    `resolve` turns a secret reference (e.g. `file:/run/secrets/appconfig`) into the
    connection string.
    """
    endpoint = environ.get("PAYMETRICS_APPCONFIG_ENDPOINT") or None
    connection = environ.get("PAYMETRICS_APPCONFIG_CONNECTION_STRING") or None
    if endpoint is None and connection is None:
        return None

    def number(name: str, default: float) -> float:
        raw = environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigSourceError(f"{name}: {raw!r} is not a number of seconds") from None

    return AppConfigurationSource(
        endpoint=endpoint,
        connection_string=None if connection is None else SecretStr(resolve(connection)),
        key_prefix=environ.get("PAYMETRICS_APPCONFIG_PREFIX", "paymetrics:"),
        label=environ.get("PAYMETRICS_APPCONFIG_LABEL") or None,
        sentinel_key=environ.get("PAYMETRICS_APPCONFIG_SENTINEL", "paymetrics:sentinel"),
        refresh_interval_seconds=number("PAYMETRICS_APPCONFIG_REFRESH_SECONDS", 30.0),
        startup_timeout_seconds=number("PAYMETRICS_APPCONFIG_STARTUP_TIMEOUT_SECONDS", 15.0),
    )
