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

import numpy as np

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
        """Split whole blocks into lines in C; only batch boundaries are handled in Python."""
        start = self.checkpoints.get(path)
        seekable = start is not None and start.byte_offset is not None
        line_no = start.position if start and seekable else 0
        offset = (start.byte_offset or 0) if start and seekable else 0
        skip_through = start.position if start and not seekable else 0  # re-read, then skip
        messages: list[bytes] = []
        positions: list[int] = []
        ends: list[int] = []  # byte offset just after each pending message
        with self._open(path) as handle:
            if offset:
                handle.seek(offset)
            carry = b""
            while True:
                block = handle.read(_READ_BYTES)
                has_cr = b"\r" in block or carry.endswith(b"\r")
                if block:
                    lines = (carry + block).split(b"\n")
                    carry = lines.pop()  # incomplete until the next block
                    lengths = np.fromiter(map(len, lines), np.int64, len(lines)) + 1
                else:  # end of file: a last line without a newline is still a message
                    lines = [carry] if carry else []
                    lengths = np.asarray([len(carry)] if carry else [], dtype=np.int64)
                line_ends = offset + np.cumsum(lengths)
                numbers = line_no + 1 + np.arange(len(lines), dtype=np.int64)
                if lines:
                    offset = int(line_ends[-1])
                    line_no = int(numbers[-1])
                keep = np.fromiter(map(len, map(bytes.strip, lines)), np.int64, len(lines)) > 0
                if skip_through:
                    keep &= numbers > skip_through
                kept = lines if keep.all() else [lines[i] for i in np.flatnonzero(keep)]
                if has_cr:
                    kept = [line.removesuffix(b"\r") for line in kept]
                messages += kept
                positions += numbers[keep].tolist()
                ends += line_ends[keep].tolist()
                while len(messages) >= max_events:
                    yield self._batch(
                        path,
                        messages[:max_events],
                        positions[:max_events],
                        positions[max_events - 1],
                        ends[max_events - 1],
                    )
                    del messages[:max_events], positions[:max_events], ends[:max_events]
                if not block:
                    break
        if messages:
            yield self._batch(path, messages, positions, line_no, offset)

    def _batch(
        self, path: str, messages: list[bytes], positions: list[int], line_no: int, offset: int
    ) -> RawBatch:
        checkpoint = Checkpoint(partition=path, position=line_no, byte_offset=offset)
        return RawBatch(self.source_id, path, messages, positions, checkpoint)
