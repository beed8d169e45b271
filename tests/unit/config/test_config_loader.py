"""Layered loading, provenance and every validator error path of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paymetrics.config import ConfigError, load_settings
from paymetrics.config.loader import env_layer
from paymetrics.config.secrets import SecretResolver


def write(tmp_path: Path, text: str, name: str = "paymetrics.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(**kwargs: Any) -> list[str]:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    return caught.value.problems


class FakeAppConfiguration:
    name = "azure-app-configuration https://example.azconfig.io"

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def load(self) -> dict[str, Any]:
        return self.values


# -- defaults and layers ---------------------------------------------------------------


def test_no_file_no_environment_gives_the_embedded_defaults() -> None:
    loaded = load_settings(environ={})
    s = loaded.settings
    assert s.storage.db_url.get_secret_value() == "sqlite:///paymetrics-data/paymetrics.db"
    assert s.storage.archive_url == "paymetrics-data/raw"
    assert s.batching.batch_max_events == 50_000
    assert s.lateness.max_lateness_seconds == 7 * 86_400
    assert set(s.validation.rules) == {
        "currency_iso4217",
        "country_iso3166",
        "occurred_at_range",
        "no_nul_characters",
    }
    assert all(rule.enabled for rule in s.validation.rules.values())
    assert s.metrics == []
    assert loaded.origin(("batching", "batch_max_events")) == "default"


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    path = ("batching", "batch_max_events")
    file = write(tmp_path, "batching:\n  batch_max_events: 1000\n  batch_max_seconds: 2.5\n")

    loaded = load_settings(config_file=file, environ={})
    assert loaded.settings.batching.batch_max_events == 1000
    assert loaded.origin(path) == f"file {file}"

    remote = FakeAppConfiguration({"batching": {"batch_max_events": 1500}})
    loaded = load_settings(config_file=file, environ={}, app_configuration=remote)
    assert loaded.settings.batching.batch_max_events == 1500
    assert loaded.origin(path) == remote.name
    assert loaded.settings.batching.batch_max_seconds == 2.5  # the file's other value stays

    env = {"PAYMETRICS__BATCHING__BATCH_MAX_EVENTS": "2000"}
    loaded = load_settings(config_file=file, environ=env, app_configuration=remote)
    assert loaded.settings.batching.batch_max_events == 2000
    assert loaded.origin(path) == "env"

    loaded = load_settings(
        config_file=file, environ=env, app_configuration=remote, flags={path: 3000}
    )
    assert loaded.settings.batching.batch_max_events == 3000
    assert loaded.origin(path) == "command line"
    assert loaded.origin(("batching", "batch_max_seconds")) == f"file {file}"


def test_config_file_from_the_environment_and_toml(tmp_path: Path) -> None:
    file = write(tmp_path, '[storage]\narchive_url = "memory://raw"\n', name="p.toml")
    loaded = load_settings(environ={"PAYMETRICS_CONFIG": str(file)})
    assert loaded.settings.storage.archive_url == "memory://raw"


def test_a_list_is_replaced_whole_by_a_later_layer(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "metrics:\n  - name: a\n    aggregate: count\n  - name: b\n    aggregate: count\n",
    )
    env = {"PAYMETRICS__METRICS": '[{"name": "c", "aggregate": "count"}]'}
    loaded = load_settings(config_file=file, environ=env)
    assert [m.name for m in loaded.settings.metrics] == ["c"]
    assert loaded.origin(("metrics", 0, "name")) == "env"


def test_environment_values_parse_as_json_when_they_can() -> None:
    layer = env_layer(
        {
            "PAYMETRICS__STORAGE__ARCHIVE_URL": "null",
            "PAYMETRICS__VALIDATION__RULES__COUNTRY_ISO3166__ENABLED": "false",
            "PAYMETRICS__LOGGING__LEVEL": "DEBUG",
            "PAYMETRICS_UNRELATED": "x",
            "OTHER__THING": "y",
        }
    )
    assert layer.values == {
        "storage": {"archive_url": None},
        "validation": {"rules": {"country_iso3166": {"enabled": False}}},
        "logging": {"level": "DEBUG"},
    }


def test_the_legacy_db_url_variable_still_works_and_the_nested_one_wins() -> None:
    env = {"PAYMETRICS_DB_URL": "sqlite:///a.db"}
    assert load_settings(environ=env).settings.storage.db_url.get_secret_value() == "sqlite:///a.db"
    env["PAYMETRICS__STORAGE__DB_URL"] = "sqlite:///b.db"
    assert load_settings(environ=env).settings.storage.db_url.get_secret_value() == "sqlite:///b.db"


def test_a_rule_left_out_keeps_its_default_and_params_reach_the_rule(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "validation:\n  rules:\n    occurred_at_range:\n      params:\n"
        "        earliest: '2020-01-01T00:00:00Z'\n",
    )
    rules = load_settings(config_file=file, environ={}).settings.validation.rules
    assert set(rules) == {
        "currency_iso4217",
        "country_iso3166",
        "occurred_at_range",
        "no_nul_characters",
    }
    assert rules["occurred_at_range"].params == {"earliest": "2020-01-01T00:00:00Z"}


# -- secrets ---------------------------------------------------------------------------


def test_secret_references_resolve_in_any_string_and_are_marked_secret(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-value\n")
    env = {
        "PAYMETRICS__API__TOKEN": f"file:{token_file}",
        "PAYMETRICS__STORAGE__ARCHIVE_URL": "env:ARCHIVE",
        "ARCHIVE": "memory://secret-archive",
    }
    loaded = load_settings(environ=env, resolver=SecretResolver(environ=env))
    assert loaded.settings.api.token is not None
    assert loaded.settings.api.token.get_secret_value() == "file-token-value"
    assert loaded.settings.storage.archive_url == "memory://secret-archive"
    assert loaded.secret_paths == {("api", "token"), ("storage", "archive_url")}


def test_a_source_url_is_never_taken_for_a_file_secret(tmp_path: Path) -> None:
    loaded = load_settings(environ={}, flags={("source", "url"): "file:/data/events.jsonl"})
    assert loaded.settings.source.url == "file:/data/events.jsonl"
    assert not loaded.secret_paths


def test_a_missing_secret_names_the_reference_and_the_path_never_a_value() -> None:
    env = {"PAYMETRICS__API__TOKEN": "env:NOT_SET_ANYWHERE"}
    found = problems(environ=env, resolver=SecretResolver(environ=env))
    assert len(found) == 1
    assert found[0].startswith("api.token (env): ")
    assert "NOT_SET_ANYWHERE" in found[0]


# -- every validator error path --------------------------------------------------------

BAD = """
storage:
  db_url: "not a url"
  pool_size: 0
batching:
  batch_max_event: 10
lateness:
  max_lateness_seconds: -1
validation:
  rules:
    no_such_rule: {}
    occurred_at_range: {params: {earliest: "2020-01-01T00:00:00"}}
metrics:
  - name: ok_rule
    aggregate: count
  - name: Bad-Name
    aggregate: median
  - name: typo
    filter: "amout_minor > 5"
    aggregate: sum
  - name: typo
    aggregate: ratio
    group_by: [merchant, merchant_id]
fx:
  reporting_currency: XYZ
  rates: {EUR: 0}
logging:
  level: LOUD
"""


def test_every_problem_is_reported_at_once_with_its_path_and_origin(tmp_path: Path) -> None:
    file = write(tmp_path, BAD)
    found = problems(config_file=file)
    origin = f"(file {file})"
    expected = {
        "storage.db_url": "not a SQLAlchemy URL",
        "storage.pool_size": "greater than or equal to 1",
        "batching.batch_max_event": "unknown setting; did you mean 'batch_max_events'?",
        "lateness.max_lateness_seconds": "greater than or equal to 0",
        "metrics[1].name": "should match pattern",
        "metrics[1].aggregate": "'count', 'sum', 'avg', 'min', 'max' or 'ratio'",
        "metrics[2].filter": "unknown column 'amout_minor'",
        "metrics[3].group_by": "unknown column 'merchant'",
        "fx.reporting_currency": "'XYZ' is not an ISO 4217 currency code",
        "fx.rates": "EUR: a rate must be greater than 0",
        "logging.level": "'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    }
    for path, fragment in expected.items():
        lines = [p for p in found if p.startswith(f"{path} {origin}: ")]
        assert lines, f"no problem reported for {path}: {found}"
        assert fragment in lines[0], lines[0]
    rules_line = next(p for p in found if p.startswith("validation.rules "))
    assert "unknown validation rule 'no_such_rule'; valid rules:" in rules_line
    assert "occurred_at_range.params: earliest: Input should have timezone info" in rules_line


def test_cross_field_rules_of_a_metric(tmp_path: Path) -> None:
    cases = {
        "aggregate: sum": "value: required for aggregate 'sum'",
        "aggregate: count\n    value: amount_minor": "value: not used by aggregate 'count'",
        "aggregate: ratio": "numerator: required for aggregate 'ratio'",
        "aggregate: count\n    numerator: \"status = 'approved'\"": "numerator: only used by",
    }
    for n, (body, fragment) in enumerate(cases.items()):
        text = f"metrics:\n  - name: m\n    {body}\n"
        found = problems(config_file=write(tmp_path, text, name=f"case{n}.yaml"))
        assert len(found) == 1, found
        assert found[0].startswith("metrics[0] (file "), found
        assert fragment in found[0], (body, found)


def test_duplicate_metric_names_are_refused(tmp_path: Path) -> None:
    file = write(tmp_path, "metrics:\n  - {name: a}\n  - {name: a}\n")
    found = problems(config_file=file)
    assert found == [f"metrics (file {file}): metric name 'a' is used twice"]


def test_expressions_are_type_checked_at_load_time(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "metrics:\n"
        "  - {name: a, filter: \"amount_minor = 'high'\"}\n"
        "  - {name: b, aggregate: sum, value: merchant_id}\n"
        "  - {name: c, filter: \"status = 'approved' AND (SELECT 1)\"}\n",
    )
    found = problems(config_file=file)
    assert [p.split(" ")[0] for p in found] == [
        "metrics[0].filter",
        "metrics[1].value",
        "metrics[2].filter",
    ]


def test_an_unreadable_or_malformed_file_is_one_clear_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert problems(config_file=missing) == [f"config file {missing} does not exist"]
    broken = write(tmp_path, "batching: [unclosed\n")
    (line,) = problems(config_file=broken)
    assert line.startswith(f"{broken}: not valid YAML: ")
    assert "line" in line
    scalar = write(tmp_path, "just a string\n", name="scalar.yaml")
    assert problems(config_file=scalar) == [
        f"{scalar}: the top level must be a mapping of sections, got str"
    ]
    bad_toml = write(tmp_path, "[storage\n", name="bad.toml")
    (line,) = problems(config_file=bad_toml)
    assert line.startswith(f"{bad_toml}: not valid TOML: ")


def test_a_bad_rule_setting_names_the_rule(tmp_path: Path) -> None:
    file = write(tmp_path, "validation:\n  rules:\n    currency_iso4217: {enabled: maybe}\n")
    (line,) = problems(config_file=file)
    assert line.startswith(f"validation.rules.currency_iso4217.enabled (file {file}): ")
    assert "valid boolean" in line


def test_a_malformed_reference_is_a_problem_not_a_crash() -> None:
    (line,) = problems(environ={"PAYMETRICS__API__TOKEN": "keyvault://only-a-vault"})
    assert line.startswith("api.token (env): secret reference 'keyvault://only-a-vault'")


def test_an_environment_problem_names_the_environment() -> None:
    found = problems(environ={"PAYMETRICS__BATCHING__BATCH_MAX_EVENTS": "many"})
    assert found == [
        "batching.batch_max_events (env): Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


# -- App Configuration from the environment -------------------------------------------


def test_app_configuration_is_named_by_environment_variables(tmp_path: Path) -> None:
    from paymetrics.config.appconfig import from_environment

    assert from_environment({}) is None
    secret_file = tmp_path / "appconfig"
    secret_file.write_text("Endpoint=https://store.azconfig.io;Id=abc;Secret=c2VjcmV0LXZhbHVl\n")
    env = {
        "PAYMETRICS_APPCONFIG_CONNECTION_STRING": f"file:{secret_file}",
        "PAYMETRICS_APPCONFIG_LABEL": "prod",
        "PAYMETRICS_APPCONFIG_REFRESH_SECONDS": "10",
    }
    source = from_environment(env, SecretResolver(environ=env).resolve)
    assert source is not None
    assert source.endpoint == "https://store.azconfig.io"
    assert source.label == "prod"
    assert source.key_prefix == "paymetrics:"
    assert source.refresh_interval_seconds == 10
    assert "c2VjcmV0LXZhbHVl" not in source.name
    assert "c2VjcmV0LXZhbHVl" not in repr(source)


def test_a_bad_app_configuration_variable_is_a_config_error() -> None:
    env = {
        "PAYMETRICS_APPCONFIG_ENDPOINT": "https://store.azconfig.io",
        "PAYMETRICS_APPCONFIG_REFRESH_SECONDS": "often",
    }
    (line,) = problems(environ=env)
    assert line == "PAYMETRICS_APPCONFIG_REFRESH_SECONDS: 'often' is not a number of seconds"


def test_the_app_configuration_layer_sits_between_file_and_environment(tmp_path: Path) -> None:
    from paymetrics.config.appconfig import AppConfigurationSource

    store = {"paymetrics:lateness:max_lateness_seconds": "3600", "paymetrics:sentinel": "1"}

    def fake_load(**kwargs: Any) -> dict[str, Any]:
        prefix = kwargs["trim_prefixes"][0]
        return {k[len(prefix) :]: v for k, v in store.items() if k.startswith(prefix)}

    source = AppConfigurationSource(endpoint="https://store.azconfig.io", loader=fake_load)
    file = write(tmp_path, "lateness: {max_lateness_seconds: 60}\n")
    loaded = load_settings(config_file=file, environ={}, app_configuration=source)
    assert loaded.settings.lateness.max_lateness_seconds == 3600
    assert loaded.origin(("lateness", "max_lateness_seconds")) == source.name
