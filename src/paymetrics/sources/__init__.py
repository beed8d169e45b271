"""Sources by URL scheme: `file:PATH`, `simulator:?events=N&seed=S`,
`kafka://host:port/topic?group=NAME`.

`open_source(spec)` is the factory: it picks the class from the scheme and
names the supported schemes when it does not know one. Broker sources (Kafka,
Event Hubs) plug in here with the same interface.
"""

from __future__ import annotations

from collections.abc import Callable

from paymetrics.sources.base import Checkpoint, RawBatch, Source

__all__ = ["SOURCES", "Checkpoint", "RawBatch", "Source", "open_source"]


def _file(rest: str) -> Source:
    from paymetrics.sources.file import FileSource

    return FileSource(rest)


def _simulator(rest: str) -> Source:
    from paymetrics.sources.simulator import SimulatorSource

    return SimulatorSource(rest)


def _kafka(rest: str) -> Source:
    from paymetrics.sources.kafka import KafkaSource

    return KafkaSource(rest)


SOURCES: dict[str, Callable[[str], Source]] = {
    "file": _file,
    "simulator": _simulator,
    "kafka": _kafka,
}


def open_source(spec: str) -> Source:
    """A source from its spec, e.g. `file:events/*.jsonl.gz` or `simulator:?events=1000`."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SOURCES:
        valid = ", ".join(f"{name}:" for name in SOURCES)
        raise ValueError(f"unknown source {spec!r}: the scheme must be one of {valid}")
    return SOURCES[scheme](rest)
