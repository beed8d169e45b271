"""`simulator:?events=N&seed=S&...` — the built-in simulator as a source.

Options are `SimulatorConfig` fields, plus `events_per_second` to pace the
stream like live traffic (it changes when messages arrive, never what they
are, so it is not part of the source id). One partition ("0"); a message's position
is its 1-based index in the simulated stream, and the stream is deterministic
per seed, so a restart regenerates and skips what is already stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, urlencode

from paymetrics.simulator import SimulatorConfig, generate
from paymetrics.sources.base import Checkpoint, RawBatch, Source

__all__ = ["SimulatorSource", "parse_simulator_options"]

PARTITION = "0"


def parse_simulator_options(query: str) -> SimulatorConfig:
    """`events=1000&seed=7&rate_invalid=0.01` → SimulatorConfig, with clear errors."""
    fields = {f.name: f for f in dataclasses.fields(SimulatorConfig)}
    values: dict[str, object] = {}
    for key, raw in parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=False):
        name = key.replace("-", "_")
        if name not in fields:
            valid = ", ".join(sorted(fields))
            raise ValueError(f"simulator source: unknown option {key!r}; valid options: {valid}")
        default = getattr(SimulatorConfig(), name)
        try:
            if isinstance(default, bool):
                values[name] = raw.lower() in {"1", "true", "yes"}
            elif isinstance(default, int):
                values[name] = int(raw.replace("_", ""))
            elif isinstance(default, float):
                values[name] = float(raw)
            elif isinstance(default, dt.datetime):
                values[name] = dt.datetime.fromisoformat(raw)
            else:
                values[name] = raw
        except ValueError as error:
            raise ValueError(f"simulator source: option {key}={raw!r}: {error}") from None
    return SimulatorConfig(**values)  # type: ignore[arg-type]


def _pace(query: str) -> tuple[str, float | None]:
    """Split `events_per_second` off the query (it is not a SimulatorConfig field)."""
    pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    rate = [v for k, v in pairs if k.replace("-", "_") == "events_per_second"]
    rest = urlencode([(k, v) for k, v in pairs if k.replace("-", "_") != "events_per_second"])
    if not rate:
        return rest, None
    try:
        value = float(rate[-1])
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(
            f"simulator source: option events_per_second={rate[-1]!r} must be a number above 0"
        )
    return rest, value


class SimulatorSource(Source):
    def __init__(self, query: str) -> None:
        query, self.events_per_second = _pace(query)
        self.config = parse_simulator_options(query)
        canonical = "&".join(
            f"{f.name}={getattr(self.config, f.name)}"
            for f in dataclasses.fields(SimulatorConfig)
            if f.name != "chunk_events"
        )
        self.source_id = f"simulator:?{canonical}"
        self.skip = 0

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        checkpoint = checkpoints.get(PARTITION)
        self.skip = checkpoint.position if checkpoint else 0

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        config = dataclasses.replace(self.config, chunk_events=max_events)
        position = 0
        started = time.monotonic()
        emitted = 0
        for chunk in generate(config):
            for start in range(0, len(chunk), max_events):
                part = chunk[start : start + max_events]
                first = position + 1
                position += len(part)
                if position <= self.skip:
                    continue
                if first <= self.skip:  # a chunk straddling the checkpoint
                    part = part[self.skip - first + 1 :]
                    first = self.skip + 1
                if self.events_per_second:
                    emitted += len(part)
                    due = started + emitted / self.events_per_second
                    time.sleep(max(0.0, due - time.monotonic()))
                yield RawBatch(
                    self.source_id,
                    PARTITION,
                    part,
                    list(range(first, position + 1)),
                    Checkpoint(PARTITION, position),
                )
