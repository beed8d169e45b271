"""The running configuration: load once, watch, reload at batch boundaries.

A change (the file written, SIGHUP, the App Configuration sentinel) only sets a
flag; the pipeline calls `between_batches` before reading each batch, and only
there is a new configuration loaded, validated, recorded as a version and
swapped in whole. An invalid one is rejected with one log line and the running
one stays. Sections that cannot change live (storage, source, batching, api)
keep their running values and are reported as needing a restart.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paymetrics.config.loader import ConfigError, LoadedConfig, Path_, format_path, load_settings
from paymetrics.config.model import Settings

if TYPE_CHECKING:
    from paymetrics.config.appconfig import AppConfigurationSource
    from paymetrics.config.secrets import SecretResolver
    from paymetrics.pipeline import Pipeline, PipelineOptions
    from paymetrics.storage.base import AppliedConfig, Store

__all__ = ["ConfigManager", "pipeline_options", "restart_paths"]

log = logging.getLogger("paymetrics.config")

FILE_POLL_MILLISECONDS = 500
"""How often `watch` looks at the config file's size and modification time."""


def pipeline_options(settings: Settings, applied: AppliedConfig | None) -> PipelineOptions:
    """The pipeline's view of a configuration (rules compiled, versions attached)."""
    from paymetrics.compliance import Compliance
    from paymetrics.config.model import EVENT_SCHEMA
    from paymetrics.metrics.dynamic import compile_rule
    from paymetrics.metrics.extractors import resolve_extractor
    from paymetrics.metrics.histograms import compile_histogram
    from paymetrics.pipeline import PipelineOptions
    from paymetrics.validate import resolve_rule

    rules = [
        resolve_rule(name, rule.params)
        for name, rule in settings.validation.rules.items()
        if rule.enabled
    ]
    metric_rules = [
        compile_rule(
            name=rule.name,
            filter=rule.filter,
            aggregate=rule.aggregate,
            value=rule.value,
            numerator=rule.numerator,
            group_by=list(rule.group_by),
            window=rule.window,
            schema=EVENT_SCHEMA,
        )
        for rule in settings.metrics
        if rule.enabled
    ]
    return PipelineOptions(
        batch_max_events=settings.batching.batch_max_events,
        max_lateness_seconds=settings.lateness.max_lateness_seconds,
        rules=rules,
        metric_rules=metric_rules,
        extractors=[resolve_extractor(name) for name in settings.enabled_extractors()],
        histograms=[
            compile_histogram(
                name=h.name,
                column=h.column,
                buckets=h.buckets,
                group_by=h.group_by,
                window=h.window,
                schema=EVENT_SCHEMA,
            )
            for h in settings.histograms
        ],
        metric_versions={} if applied is None else dict(applied.metric_versions),
        config_version=None if applied is None else applied.version,
        compliance=Compliance.from_settings(settings.compliance, settings.fx),
        retry_initial_seconds=settings.storage.retry_initial_seconds,
        retry_max_interval_seconds=settings.storage.retry_max_interval_seconds,
        retry_give_up_seconds=settings.storage.retry_give_up_seconds,
    )


def _leaf_paths(values: Any, prefix: Path_ = ()) -> dict[Path_, Any]:
    if isinstance(values, Mapping):
        out: dict[Path_, Any] = {}
        for key, value in values.items():
            out.update(_leaf_paths(value, (*prefix, key)))
        return out
    return {prefix: values}


def restart_paths(old: Settings, new: Settings) -> list[str]:
    """Paths of settings that differ between `old` and `new` but cannot change live."""
    changed: list[str] = []
    for name, info in Settings.model_fields.items():
        section = getattr(old, name)
        if not getattr(section, "restart_required", False):
            continue
        a = _leaf_paths(_plain(section), (name,))
        b = _leaf_paths(_plain(getattr(new, name)), (name,))
        changed += [
            format_path(p) for p in sorted(set(a) | set(b), key=str) if a.get(p) != b.get(p)
        ]
        del info
    return changed


def _plain(section: Any) -> Any:
    """A section as plain values with secrets revealed, for comparison only (never shown)."""
    from pydantic import SecretStr

    dumped = section.model_dump()
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in dumped.items()}


def _relog(old: Settings, new: Settings) -> None:
    """Logging settings apply live."""
    if new.logging != old.logging:
        from paymetrics.config.logs import setup_logging

        setup_logging(new.logging)


class ConfigManager:
    """Owns the applied configuration of one running process."""

    def __init__(
        self,
        *,
        config_file: str | os.PathLike[str] | None = None,
        flags: Mapping[Path_, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        app_configuration: AppConfigurationSource | None = None,
        resolver: SecretResolver | None = None,
        applied_by: str | None = None,
    ) -> None:
        from paymetrics.config.secrets import SecretResolver

        self._environ = os.environ if environ is None else environ
        file = config_file or self._environ.get("PAYMETRICS_CONFIG") or None
        self.config_file = Path(file) if file else None
        self._flags = dict(flags or {})
        self._resolver = resolver or SecretResolver(environ=self._environ)
        if app_configuration is None:
            from paymetrics.config.appconfig import ConfigSourceError, from_environment

            try:
                app_configuration = from_environment(self._environ, self._resolver.resolve)
            except (ConfigSourceError, ValueError) as error:
                raise ConfigError([str(error)], "App Configuration") from None
        self._app_configuration = app_configuration
        self._applied_by = applied_by or f"pid {os.getpid()} on {socket.gethostname()}"
        self._reload = threading.Event()
        self._reason = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.loaded = self._load()
        self.store: Store | None = None
        self.applied: AppliedConfig | None = None

    # -- loading --------------------------------------------------------------------

    def _load(self) -> LoadedConfig:
        return load_settings(
            config_file=self.config_file,
            flags=self._flags,
            environ=self._environ,
            app_configuration=self._app_configuration,
            resolver=self._resolver,
        )

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    @property
    def origin(self) -> str:
        layers = dict.fromkeys(self.loaded.origins.values())
        return " + ".join(layers) if layers else "defaults"

    def attach(self, store: Store, reason: str = "start") -> PipelineOptions:
        """Record the current rules as a config version in `store`; the options to run with."""
        self.store = store
        pipeline_options(self.settings, None)  # rules that cannot compile are not recorded
        self.applied = store.record_config(
            self.settings.rules_document(),
            f"paymetrics run ({reason}), {self._applied_by}",
            self.origin,
        )
        log.info(
            "config version %d %s (%s)",
            self.applied.version,
            "recorded" if self.applied.new else "in effect",
            self.origin,
        )
        return pipeline_options(self.settings, self.applied)

    # -- reloading ------------------------------------------------------------------

    def request_reload(self, reason: str) -> None:
        """Thread- and signal-safe: the reload happens at the next batch boundary."""
        self._reason = reason
        self._reload.set()

    def between_batches(self, pipeline: Pipeline) -> None:
        if not self._reload.is_set():
            return
        self._reload.clear()
        reason = self._reason or "reload"
        self.reload(pipeline, reason)

    def reload(self, pipeline: Pipeline, reason: str) -> bool:
        """Load, validate, record and apply; False (and one log line) when rejected."""
        if reason == "SIGHUP":
            self._resolver.invalidate()
        try:
            loaded = self._load()
            pipeline_options(loaded.settings, None)  # compiles every rule: fails here, not later
        except (ConfigError, ValueError) as error:
            problems = getattr(error, "problems", None) or [str(error)]
            log.error(
                "config reload (%s) rejected, keeping version %s: %s",
                reason,
                self.applied.version if self.applied else "(none)",
                "; ".join(problems),
            )
            return False
        old = self.settings
        stuck = restart_paths(old, loaded.settings)
        if stuck:
            log.warning(
                "config reload (%s): %s changed; needs restart, running value kept",
                reason,
                ", ".join(stuck),
            )
            keep = {
                name: getattr(old, name)
                for name in Settings.model_fields
                if getattr(getattr(old, name), "restart_required", False)
            }
            loaded = LoadedConfig(
                loaded.settings.model_copy(update=keep),
                loaded.origins,
                loaded.secret_paths,
                loaded.files,
            )
        document = loaded.settings.rules_document()
        if self.store is None:
            raise RuntimeError("attach() a store before reloading")
        if document == old.rules_document() and not stuck:
            log.info("config reload (%s): no change to the rules", reason)
            self.loaded = loaded
            _relog(old, loaded.settings)
            return True
        applied = self.store.record_config(
            document, f"paymetrics run ({reason}), {self._applied_by}", self.origin
        )
        self.loaded = loaded
        self.applied = applied
        pipeline.reconfigure(pipeline_options(loaded.settings, applied))
        _relog(old, loaded.settings)
        log.info("config version %d applied (%s)", applied.version, reason)
        return True

    # -- watching -------------------------------------------------------------------

    def watch(self, poll_interval_seconds: float | None = None) -> None:
        """Watch the config file (and poll App Configuration) in daemon threads."""
        if self.config_file is not None:
            self._spawn(self._watch_file, "paymetrics-config-file")
        if self._app_configuration is not None:
            interval = poll_interval_seconds or min(
                5.0, self._app_configuration.refresh_interval_seconds
            )
            self._spawn(lambda: self._poll(interval), "paymetrics-config-poll")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch_file(self) -> None:
        """Poll the file's metadata twice a second. Not inotify on its folder: editors save
        by writing a new file and renaming it, so the folder would have to be watched, and
        a config file often sits beside the SQLite database and the raw archive, whose
        every write is an event: in the benchmark that cost 15% of throughput (one core)."""
        import watchfiles

        assert self.config_file is not None
        for _changes in watchfiles.watch(
            self.config_file.resolve(),
            watch_filter=None,
            stop_event=self._stop,
            debounce=200,
            raise_interrupt=False,
            force_polling=True,
            poll_delay_ms=FILE_POLL_MILLISECONDS,
            recursive=False,
        ):
            self.request_reload(f"file {self.config_file} changed")

    def _poll(self, interval: float) -> None:
        assert self._app_configuration is not None
        while not self._stop.wait(interval):
            try:
                if self._app_configuration.poll():
                    self.request_reload("App Configuration sentinel changed")
            except Exception as error:  # the service being away must not stop the pipeline
                log.warning("App Configuration poll failed: %s", str(error).splitlines()[0])

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
