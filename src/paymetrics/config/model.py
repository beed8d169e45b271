"""The one typed configuration: every option, its unit, its default, its check.

Defaults give the embedded set-up (SQLite, local Parquet) with no file at all.
Models are frozen: a running pipeline swaps a whole validated `Settings` at a
batch boundary and never sees one half-changed. Expressions in metric rules are
parsed and type-checked here, at load time, never at first use.

Each field's docstring is its documentation (`docs/configuration.md` is
generated from this module), so keep them short and say what the unit is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from paymetrics.normalize import NORMALIZED_SCHEMA

__all__ = [
    "EVENT_SCHEMA",
    "ApiSettings",
    "BatchingSettings",
    "ComplianceSettings",
    "ExtractorSettings",
    "FxSettings",
    "HistogramSettings",
    "LatenessSettings",
    "LoggingSettings",
    "MetricRuleSettings",
    "RetentionSettings",
    "Settings",
    "SourceSettings",
    "StorageSettings",
    "ValidationRuleSettings",
    "ValidationSettings",
]

DEFAULT_DB_URL = "sqlite:///paymetrics-data/paymetrics.db"
DEFAULT_ARCHIVE_URL = "paymetrics-data/raw"

#: The columns rule expressions may use: the normalized event, without pipeline bookkeeping.
EVENT_SCHEMA = pa.schema(
    [f for f in NORMALIZED_SCHEMA if f.name not in {"source_position", "message_index"}]
)

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class Section(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,  # an input may be a secret
        coerce_numbers_to_str=True,  # App Configuration and YAML may give 123456 for a string
    )

    #: Changing a field of this section takes effect only after a restart.
    restart_required: ClassVar[bool] = False


class SourceSettings(Section):
    """Where events come from."""

    restart_required = True

    url: str | None = None
    """Where events come from: `file:PATH` (JSON Lines, a glob, .gz),
    `simulator:?events=N&seed=S`, `kafka://host:port/topic?group=NAME` or
    `eventhubs://namespace/hub?consumer_group=NAME`. `paymetrics run --source`
    overrides it."""
    options: dict[str, SecretStr] = Field(default_factory=dict)
    """Client settings of a broker source. Kafka: librdkafka properties
    (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`, …).
    Event Hubs: `connection_string`, `checkpoint_connection_string`,
    `checkpoint_container`, … Secrets, every one: never shown or logged; give them
    as `env:NAME`, `file:PATH` or Key Vault references."""

    def client_options(self) -> dict[str, str]:
        """The options as plain strings, for the source's client."""
        return {key: secret.get_secret_value() for key, secret in self.options.items()}


class StorageSettings(Section):
    """The database (events, dead letters, metrics, checkpoints) and the raw archive."""

    restart_required = True

    db_url: SecretStr = SecretStr(DEFAULT_DB_URL)
    """SQLAlchemy URL of the database. May hold a password, so it is a secret: shown
    with the password hidden, never logged. Also read from `PAYMETRICS_DB_URL`."""
    archive_url: str | None = DEFAULT_ARCHIVE_URL
    """fsspec URL of the raw Parquet archive (a path, `az://container/prefix`, `abfs://`,
    `s3://`); null disables the archive."""
    archive_options: dict[str, SecretStr] = Field(default_factory=dict)
    """fsspec storage options of the archive (`connection_string`, `account_name`,
    `account_key`, `sas_token`, `anon`, …). Secrets, every one: never shown or logged.
    Without credentials, Azure URLs use DefaultAzureCredential."""
    pool_size: int = Field(5, ge=1, le=1000)
    """Database connections kept open per process (server databases only)."""
    pool_max_overflow: int = Field(10, ge=0, le=1000)
    """Extra connections opened under load beyond `pool_size`."""
    pool_timeout_seconds: float = Field(30.0, gt=0)
    """How long to wait for a free connection before failing."""
    retry_initial_seconds: float = Field(0.5, gt=0)
    """First wait before retrying a batch whose database or archive write failed
    (connection lost, deadlock, server restart); doubles per attempt, with jitter."""
    retry_max_interval_seconds: float = Field(30.0, gt=0)
    """Longest wait between two attempts."""
    retry_give_up_seconds: float = Field(900.0, gt=0)
    """An outage longer than this ends the run with exit code 2 (nothing unstored is
    acknowledged; the next run resumes from the checkpoint)."""

    def archive_storage_options(self) -> dict[str, Any]:
        """The archive options as fsspec wants them: plain values (`"false"` → False)."""
        out: dict[str, Any] = {}
        for key, secret in self.archive_options.items():
            value = secret.get_secret_value()
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
        return out

    @field_validator("db_url")
    @classmethod
    def _is_sqlalchemy_url(cls, value: SecretStr) -> SecretStr:
        import sqlalchemy as sa

        try:
            sa.make_url(value.get_secret_value())
        except sa.exc.ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL (e.g. sqlite:///path/to/file.db or "
                "postgresql+psycopg://user@host/db)"
            ) from None
        return value


class BatchingSettings(Section):
    """How messages are grouped: one batch is one database transaction."""

    restart_required = True  # batch boundaries name archive files; they stay fixed per run

    batch_max_events: int = Field(50_000, ge=1, le=1_000_000)
    """Most messages per batch (one database transaction each)."""
    batch_max_seconds: float = Field(1.0, gt=0, le=3600)
    """Longest a streaming source waits to fill a batch before sending a smaller one."""


class LatenessSettings(Section):
    """How late an event may arrive and still count."""

    max_lateness_seconds: float = Field(7 * 86_400, ge=0)
    """An event older than the newest one already seen on its partition by more than
    this is dead-lettered as `too_late`. Judged on event time, never the wall clock."""


class ValidationRuleSettings(Section):
    """One validation rule: on or off, and its parameters."""

    enabled: bool = True
    """Whether the rule runs. A disabled rule lets through what it would reject."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The rule's parameters (see the rule list below)."""


def _default_rules() -> dict[str, ValidationRuleSettings]:
    from paymetrics.validate import RULES

    return {name: ValidationRuleSettings() for name in RULES}


class ValidationSettings(Section):
    """Validation rules applied on top of the event contract."""

    rules: dict[str, ValidationRuleSettings] = Field(default_factory=_default_rules)
    """Named validation rules from the registry; a rule left out keeps its default (on)."""

    @field_validator("rules")
    @classmethod
    def _known_rules(
        cls, value: dict[str, ValidationRuleSettings]
    ) -> dict[str, ValidationRuleSettings]:
        from paymetrics.validate import RULES

        problems = []
        for name, rule in value.items():
            if name not in RULES:
                problems.append(
                    f"unknown validation rule {name!r}; valid rules: {', '.join(sorted(RULES))}"
                )
                continue
            try:
                RULES[name].Params.model_validate(rule.params)
            except ValueError as error:
                problems.append(f"{name}.params: {_first_line(error)}")
        if problems:
            raise ValueError("; ".join(problems))
        return {**_default_rules(), **value}


def _first_line(error: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors(include_url=False)
        )
    return str(error).splitlines()[0]


class HistogramSettings(Section):
    """A fixed-bucket histogram, added per window into `aggregate_histograms`."""

    name: Identifier
    """Histogram name (stored as `histogram.<name>`; `paymetrics query histogram --name`)."""
    column: str
    """Numeric expression over event columns whose values are counted (NULL: not counted)."""
    buckets: list[float] = Field(min_length=1)
    """Upper bounds, strictly ascending; a value v goes to the first bound >= v, and +Inf
    is implied as the last bucket."""
    group_by: list[str] = Field(default_factory=list)
    """Event columns the histogram is broken down by (its `dimensions`)."""
    window: Literal["1m", "5m", "15m", "1h", "1d"] = "1h"
    """Tumbling window in UTC the counts are kept per."""

    @model_validator(mode="after")
    def _compiles(self) -> HistogramSettings:
        from paymetrics.metrics.histograms import compile_histogram

        compile_histogram(
            name=self.name,
            column=self.column,
            buckets=self.buckets,
            group_by=self.group_by,
            window=self.window,
            schema=EVENT_SCHEMA,
        )
        return self


class ExtractorSettings(Section):
    """One installed metric extractor (a plugin): on or off."""

    enabled: bool = True
    """Whether the extractor runs."""


class MetricRuleSettings(Section):
    """A config-defined metric, computed into `dynamic_metrics` per window."""

    name: Identifier
    """Metric name in `dynamic_metrics` (lower-case letters, digits, underscores)."""
    description: str = ""
    """What the number means, for the people who read it."""
    enabled: bool = True
    """A disabled rule is kept in the config but computes nothing."""
    filter: str | None = None
    """Which events count: a SQL-like boolean expression over event columns. Null: all."""
    aggregate: Literal["count", "sum", "avg", "min", "max", "ratio"] = "count"
    """count, sum, avg, min, max of `value`, or ratio = events matching `numerator` / events."""
    value: str | None = None
    """Numeric expression aggregated by sum, avg, min and max (e.g. `amount_minor`)."""
    numerator: str | None = None
    """For ratio: a boolean expression over the filtered events."""
    group_by: list[str] = Field(default_factory=list)
    """Event columns the metric is broken down by (its `dimensions`)."""
    window: Literal["1m", "5m", "15m", "1h", "1d"] = "5m"
    """Tumbling window in UTC the metric is computed over."""

    @field_validator("filter", "numerator")
    @classmethod
    def _boolean_expression(cls, value: str | None) -> str | None:
        from paymetrics.metrics.expressions import parse_filter

        if value is not None:
            parse_filter(value, EVENT_SCHEMA)
        return value

    @field_validator("value")
    @classmethod
    def _numeric_expression(cls, value: str | None) -> str | None:
        from paymetrics.metrics.expressions import parse_value

        if value is not None:
            parse_value(value, EVENT_SCHEMA)
        return value

    @field_validator("group_by")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        from paymetrics.metrics.dynamic import group_by_problems

        problems = group_by_problems(value, EVENT_SCHEMA)  # the same check as at run start
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _fields_fit_the_aggregate(self) -> MetricRuleSettings:
        needs_value = self.aggregate in {"sum", "avg", "min", "max"}
        if needs_value and self.value is None:
            raise ValueError(f"value: required for aggregate {self.aggregate!r}")
        if not needs_value and self.value is not None:
            raise ValueError(f"value: not used by aggregate {self.aggregate!r}; remove it")
        if self.aggregate == "ratio" and self.numerator is None:
            raise ValueError("numerator: required for aggregate 'ratio'")
        if self.aggregate != "ratio" and self.numerator is not None:
            raise ValueError(f"numerator: only used by aggregate 'ratio', not {self.aggregate!r}")
        return self


class CurrencyAmount(Section):
    """An amount in a currency, e.g. a reporting threshold."""

    amount: Decimal = Field(gt=0)
    """In major units of `currency` (10000 = USD 10,000.00)."""
    currency: str = "USD"
    """ISO 4217 code the amount is in."""


class ComplianceRuleSettings(Section):
    """A compliance rule: on or off, and the severity of its alerts."""

    enabled: bool = True
    """Whether the rule raises alerts."""
    severity: Literal["info", "low", "medium", "high", "critical"] = "medium"
    """Severity written on the alert."""


class LargeTransactionRule(ComplianceRuleSettings):
    """`large_transaction`: one approved amount at or above a threshold."""

    threshold: CurrencyAmount = CurrencyAmount(amount=Decimal(10_000))
    """A single approved amount at or above this (converted with `fx`) raises an alert."""


class DailyAggregateRule(ComplianceRuleSettings):
    """`daily_aggregate_threshold`: a customer's approved total in one UTC day."""

    threshold: CurrencyAmount = CurrencyAmount(amount=Decimal(10_000))
    """One customer's approved amounts in one UTC day summing above this."""


class StructuringRule(ComplianceRuleSettings):
    """`structuring`: repeated amounts just below the reporting threshold."""

    threshold: CurrencyAmount = CurrencyAmount(amount=Decimal(10_000))
    """The reporting threshold the transactions stay just below."""
    band_low_fraction: float = Field(0.8, gt=0, lt=1)
    """Lower edge of the suspicious band, as a fraction of the threshold."""
    min_transactions: int = Field(3, ge=2)
    """How many in-band transactions by one customer raise the alert."""
    period_seconds: int = Field(86_400, ge=60)
    """Within how long."""


class VelocityRule(ComplianceRuleSettings):
    """`velocity`: too many authorizations by one customer in a period."""

    max_authorizations: int = Field(5, ge=1)
    """More authorizations than this by one customer within the period raise an alert."""
    period_seconds: int = Field(12 * 3600, ge=60)
    """The period, in seconds."""


class DeclineSpikeRule(ComplianceRuleSettings):
    """`decline_spike`: a merchant's approval rate below its trailing baseline."""

    margin: float = Field(0.2, gt=0, lt=1)
    """Alert when a window's approval rate is below the trailing baseline by this much."""
    baseline_windows: int = Field(12, ge=1)
    """Trailing 5-minute windows the baseline is computed over."""
    min_authorizations: int = Field(20, ge=1)
    """Windows with fewer authorizations are not judged."""


class LatencySloRule(ComplianceRuleSettings):
    """`latency_slo`: p95 latency above an objective."""

    p95_ms: float = Field(1000.0, gt=0)
    """p95 latency above this, per merchant or card network, breaks the SLO."""
    subject: Literal["merchant_id", "card_network"] = "card_network"
    """What the SLO is measured per."""


class WebhookSettings(Section):
    """Webhook delivery of compliance alerts, at least once (`paymetrics alerts deliver`)."""

    url: str | None = None
    """POST each alert as JSON to this http(s) URL; null: no delivery. Credentials go in
    `bearer_token`, never in the URL (it is shown in errors, without its query)."""
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    """How long one POST may take (connect and response) before it counts as failed."""
    max_attempts: int = Field(10, ge=1, le=10_000)
    """Attempts per alert over all passes; after that it stays `failed`, not retried."""
    attempts_per_pass: int = Field(3, ge=1, le=100)
    """Attempts per alert within one pass, with backoff, before the pass moves on."""
    backoff_base_seconds: float = Field(0.5, gt=0)
    """First wait before a retry; doubles per attempt, with full jitter."""
    backoff_max_seconds: float = Field(30.0, gt=0)
    """Longest wait between two attempts, also for a receiver's `Retry-After`."""
    interval_seconds: float = Field(60.0, gt=0)
    """How often `paymetrics run` delivers new alerts while it runs (it also delivers
    once at its end)."""
    bearer_token: SecretStr | None = None
    """Sent as `Authorization: Bearer <token>`; null: none. A secret: never shown or
    logged; give it as `env:NAME`, `file:PATH` or a Key Vault reference."""
    signing_secret: SecretStr | None = None
    """Key of the `X-Paymetrics-Signature: sha256=<hex HMAC-SHA256 of the body>` header,
    so the receiver can check who sent it; null: unsigned. A secret."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("not an http(s) URL (e.g. https://hooks.example.com/paymetrics)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL; give them as bearer_token instead")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> WebhookSettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds: must be at least backoff_base_seconds")
        return self


class ComplianceSettings(Section):
    """Compliance monitoring: rules evaluated in every batch's transaction, writing
    `compliance_alerts` (see docs/compliance.md)."""

    enabled: bool = False
    """Evaluate the rules below (each also has its own `enabled`). Off by default: the
    rules cost throughput (docs/performance.md) and their thresholds should be set by
    whoever answers the alerts."""
    large_transaction: LargeTransactionRule = LargeTransactionRule(severity="medium")
    """Large single transactions."""
    daily_aggregate_threshold: DailyAggregateRule = DailyAggregateRule(severity="high")
    """Daily per-customer totals above the reporting threshold."""
    structuring: StructuringRule = StructuringRule(severity="high")
    """Several transactions just below the threshold."""
    velocity: VelocityRule = VelocityRule(severity="medium")
    """Too many authorizations by one customer."""
    decline_spike: DeclineSpikeRule = DeclineSpikeRule(severity="medium")
    """A merchant's approval rate falling below its baseline."""
    latency_slo: LatencySloRule = LatencySloRule(severity="low")
    """p95 latency above the SLO."""
    pan_exposure: ComplianceRuleSettings = ComplianceRuleSettings(severity="critical")
    """An event carried a full card number (masked before storage; the alert says where)."""
    webhook: WebhookSettings = WebhookSettings()
    """Delivery of the alerts to an HTTP endpoint (off until `url` is set)."""

    def longest_customer_period_seconds(self) -> int:
        """The longest period of the enabled per-customer rules (0: none enabled): how far
        back they read the stored events."""
        if not self.enabled:
            return 0
        periods = [
            seconds
            for rule, seconds in (
                (self.daily_aggregate_threshold, 86_400),
                (self.structuring, self.structuring.period_seconds),
                (self.velocity, self.velocity.period_seconds),
            )
            if rule.enabled
        ]
        return max(periods, default=0)


class FxSettings(Section):
    """Exchange rates, for thresholds given in a reporting currency."""

    reporting_currency: str = "USD"
    """ISO 4217 code amounts are converted to for thresholds."""
    rates: dict[str, Decimal] = Field(default_factory=dict)
    """Units of the reporting currency per one major unit of each currency (EUR: 1.08)."""

    @field_validator("reporting_currency")
    @classmethod
    def _iso_code(cls, value: str) -> str:
        return _currency(value)

    @field_validator("rates")
    @classmethod
    def _iso_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        out = {}
        for code, rate in value.items():
            if rate <= 0:
                raise ValueError(f"{code}: a rate must be greater than 0, got {rate}")
            out[_currency(code)] = rate
        return out


def _currency(code: str) -> str:
    from paymetrics.validate.iso import currency_codes

    upper = code.upper()
    if upper not in currency_codes().to_pylist():
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return upper


class RetentionSettings(Section):
    """How long stored data is kept, in days of the data's own time (null: forever).
    `paymetrics retention apply` deletes what is older; schedule it (cron, a timer)."""

    raw_archive_days: int | None = Field(None, ge=1)
    """Days raw Parquet files are kept; null keeps them forever (audit default)."""
    normalized_days: int | None = Field(None, ge=1)
    """Days `normalized_transactions` rows are kept (by `occurred_at`); null keeps them
    forever. Must cover `lateness.max_lateness_seconds`."""
    dead_letters_days: int | None = Field(None, ge=1)
    """Days `failed_items` rows are kept; null keeps them forever."""
    metrics_days: int | None = Field(None, ge=1)
    """Days metric rows and their sketches are kept (by `window_start`); null keeps them
    forever. Usually much longer than the others."""


class LoggingSettings(Section):
    """Log level and format (stderr)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log level written."""
    format: Literal["console", "json"] = "console"
    """console: one readable line per record; json: one JSON object per line."""


class DeadLetterSettings(Section):
    """Where dead letters go besides the `failed_items` table."""

    restart_required = True

    topic_url: str | None = None
    """Also publish every dead letter to this Kafka topic
    (`kafka://host:port/topic`; Event Hubs through its Kafka endpoint): the masked
    payload as value, the source partition as key, reason, error and position in
    headers. At least once. null: the table only."""
    options: dict[str, SecretStr] = Field(default_factory=dict)
    """librdkafka properties of the dead-letter producer (`security.protocol`,
    `sasl.username`, `sasl.password`, …). Secrets, every one."""
    flush_timeout_seconds: float = Field(30.0, gt=0)
    """How long a batch waits for the broker to confirm its dead letters before the
    attempt counts as failed and is retried with backoff."""

    def client_options(self) -> dict[str, str]:
        """The options as plain strings, for the producer."""
        return {key: secret.get_secret_value() for key, secret in self.options.items()}


class MonitoringSettings(Section):
    """What a running worker reports about itself: a progress log line and, on an
    optional port, Prometheus metrics."""

    restart_required = True

    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics at `http://metrics_host:metrics_port/metrics` while
    `paymetrics run` runs (0: any free port, logged); null: no endpoint. Needs
    `paymetrics[prometheus]`. Also `paymetrics run --metrics-port`."""
    metrics_host: str = "127.0.0.1"
    """Address of the metrics endpoint (loopback by default; `0.0.0.0` for a scraper
    on another host)."""
    progress_log_seconds: float = Field(10.0, ge=0)
    """Log one progress line (events/s, outcomes, dead-letter reasons, batch latency,
    consumer lag) this often; 0 turns it off."""


class ApiSettings(Section):
    """The HTTP query API (settings only: the API itself is not built yet)."""

    restart_required = True

    host: str = "127.0.0.1"
    """Address the HTTP API listens on (loopback by default)."""
    port: int = Field(8080, ge=1, le=65535)
    """TCP port of the HTTP API."""
    token: SecretStr | None = None
    """Bearer token the API requires; null: no authentication (loopback only)."""


class Settings(Section):
    """Everything paymetrics can be told. Every section has working defaults."""

    source: SourceSettings = SourceSettings()
    """Where events come from."""
    storage: StorageSettings = StorageSettings()
    """Database and raw archive."""
    batching: BatchingSettings = BatchingSettings()
    """How events are grouped into transactions."""
    lateness: LatenessSettings = LatenessSettings()
    """How late an event may arrive."""
    validation: ValidationSettings = ValidationSettings()
    """Validation rules on top of the event contract."""
    metrics: list[MetricRuleSettings] = Field(default_factory=list)
    """Metric rules computed into `dynamic_metrics`, besides the fixed `payment_metrics_5m`."""
    extractors: dict[str, ExtractorSettings] = Field(default_factory=dict)
    """Installed metric extractors to run, by name (entry-point group
    `paymetrics.extractors`, see docs/plugins.md), e.g. `{refund_ratio_by_country: {}}`;
    their rows go to `dynamic_metrics` like a metric rule's."""
    histograms: list[HistogramSettings] = Field(default_factory=list)
    """Fixed-bucket histograms (Prometheus-style), stored in `aggregate_histograms`."""
    compliance: ComplianceSettings = ComplianceSettings()
    """Compliance monitoring rules and their thresholds."""
    fx: FxSettings = FxSettings()
    """Exchange rates for thresholds given in a reporting currency."""
    retention: RetentionSettings = RetentionSettings()
    """How long stored data is kept."""
    logging: LoggingSettings = LoggingSettings()
    """Log level and format."""
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    """Where dead letters go besides the table."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Progress logging and the Prometheus endpoint of a running worker."""
    api: ApiSettings = ApiSettings()
    """The HTTP query API."""

    @field_validator("metrics")
    @classmethod
    def _unique_names(
        cls, value: list[MetricRuleSettings], info: ValidationInfo
    ) -> list[MetricRuleSettings]:
        seen: set[str] = set()
        for rule in value:
            if rule.name in seen:
                raise ValueError(f"metric name {rule.name!r} is used twice")
            seen.add(rule.name)
        return value

    @field_validator("histograms")
    @classmethod
    def _unique_histograms(cls, value: list[HistogramSettings]) -> list[HistogramSettings]:
        names = [h.name for h in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"histogram name(s) used twice: {', '.join(repeated)}")
        return value

    @field_validator("extractors")
    @classmethod
    def _known_extractors(
        cls, value: dict[str, ExtractorSettings], info: ValidationInfo
    ) -> dict[str, ExtractorSettings]:
        from paymetrics.metrics.extractors import EXTRACTORS

        problems = [
            f"unknown extractor {name!r}; valid extractors: "
            f"{', '.join(sorted(EXTRACTORS)) or '(none installed)'}"
            for name in value
            if name not in EXTRACTORS
        ]
        rules = {r.name for r in info.data.get("metrics", [])}
        problems += [f"{n!r} is also the name of a metric rule" for n in value if n in rules]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def enabled_extractors(self) -> list[str]:
        return sorted(name for name, extractor in self.extractors.items() if extractor.enabled)

    @model_validator(mode="after")
    def _retention_covers_lateness(self) -> Settings:
        days = self.retention.normalized_days
        if days is not None and days * 86_400 < self.lateness.max_lateness_seconds:
            raise ValueError(
                f"retention.normalized_days: {days} days is shorter than "
                f"lateness.max_lateness_seconds ({self.lateness.max_lateness_seconds:g} s); "
                "a late redelivery of an expired event would be counted again"
            )
        period = self.compliance.longest_customer_period_seconds()
        if (
            days is not None
            and period
            and days * 86_400 < self.lateness.max_lateness_seconds + period
        ):
            raise ValueError(
                f"retention.normalized_days: {days} days is shorter than the longest "
                f"per-customer compliance period ({period} s) plus "
                f"lateness.max_lateness_seconds ({self.lateness.max_lateness_seconds:g} s); "
                "those rules total the stored events of a period, and expired ones would "
                "no longer count"
            )
        return self

    def rules_document(self) -> dict[str, Any]:
        """What decides the numbers (not where they go): hashed into a config version."""
        from paymetrics.config.versions import rules_document

        return rules_document(self)
