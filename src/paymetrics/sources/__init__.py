"""Sources by URL scheme: `file:PATH`, `simulator:?events=N&seed=S`,
`kafka://host:port/topic?group=NAME`, `eventhubs://namespace/hub?consumer_group=NAME`.

`open_source(spec, options)` is the factory (the ConsumerFactory): it picks the
class from the scheme and names the supported schemes when it does not know one.
`options` are the source's client settings from the configuration
(`source.options`: SASL credentials, connection strings), kept out of the URL
because they are secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from paymetrics.sources.base import Checkpoint, RawBatch, Source

__all__ = ["SOURCES", "Checkpoint", "RawBatch", "Source", "open_source"]


Options = Mapping[str, str]


def _no_options(scheme: str, options: Options) -> None:
    if options:
        raise ValueError(
            f"source.options {sorted(options)} are for broker sources; a {scheme}: source "
            "takes none"
        )


def _file(rest: str, options: Options) -> Source:
    from paymetrics.sources.file import FileSource

    _no_options("file", options)
    return FileSource(rest)


def _simulator(rest: str, options: Options) -> Source:
    from paymetrics.sources.simulator import SimulatorSource

    _no_options("simulator", options)
    return SimulatorSource(rest)


def _kafka(rest: str, options: Options) -> Source:
    from paymetrics.sources.kafka import KafkaSource

    return KafkaSource(rest, options=options)


def _eventhubs(rest: str, options: Options) -> Source:
    from paymetrics.sources.eventhubs import EventHubsSource

    return EventHubsSource(rest, options=options)


SOURCES: dict[str, Callable[[str, Options], Source]] = {
    "file": _file,
    "simulator": _simulator,
    "kafka": _kafka,
    "eventhubs": _eventhubs,
}


def open_source(spec: str, options: Options | None = None) -> Source:
    """A source from its spec, e.g. `file:events/*.jsonl.gz` or `simulator:?events=1000`;
    `options` are its client settings (plain values: secrets already resolved)."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SOURCES:
        valid = ", ".join(f"{name}:" for name in SOURCES)
        raise ValueError(f"unknown source {spec!r}: the scheme must be one of {valid}")
    return SOURCES[scheme](rest, options or {})
