"""`file:PATH` — JSON Lines files: one path, or a glob; `.gz` files too.

Each file is a partition, read in name order. A message's position is its
1-based line number; blank and whitespace-only lines are skipped and counted
nowhere. The checkpoint stores the line number and byte offset after the last
stored message, so a restart seeks straight there.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from paymetrics.sources.base import Checkpoint, RawBatch, Source

__all__ = ["FileSource"]

_READ_BYTES = 4 * 1024 * 1024


class FileSource(Source):
    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError("file source: no path given (use file:PATH, e.g. file:events.jsonl)")
        pattern = os.path.abspath(os.path.expanduser(path))
        self.source_id = f"file:{pattern}"
        self.files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        missing = [f for f in self.files if not Path(f).is_file()]
        if not self.files or missing:
            raise FileNotFoundError(f"file source: no file matches {path!r}")
        self.checkpoints: dict[str, Checkpoint] = {}

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        self.checkpoints = dict(checkpoints)

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        for path in self.files:
            yield from self._read(path, max_events)

    def _open(self, path: str) -> io.BufferedIOBase:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")

    def _read(self, path: str, max_events: int) -> Iterator[RawBatch]:
        start = self.checkpoints.get(path)
        line_no = start.position if start else 0
        offset = (start.byte_offset or 0) if start else 0
        with self._open(path) as handle:
            if offset:
                handle.seek(offset)
            messages: list[bytes] = []
            positions: list[int] = []
            carry = b""
            while True:
                block = handle.read(_READ_BYTES)
                if not block:
                    lines = [carry] if carry else []
                    newline = 0  # the last line has no terminator
                else:
                    lines = (carry + block).split(b"\n")
                    carry = lines.pop()
                    newline = 1
                for line in lines:
                    line_no += 1
                    offset += len(line) + newline
                    if line.strip():
                        messages.append(line.removesuffix(b"\r"))
                        positions.append(line_no)
                    if len(messages) >= max_events:
                        yield self._batch(path, messages, positions, line_no, offset)
                        messages, positions = [], []
                if not block:
                    break
            if messages:
                yield self._batch(path, messages, positions, line_no, offset)

    def _batch(
        self, path: str, messages: list[bytes], positions: list[int], line_no: int, offset: int
    ) -> RawBatch:
        checkpoint = Checkpoint(partition=path, position=line_no, byte_offset=offset)
        return RawBatch(self.source_id, path, messages, positions, checkpoint)
