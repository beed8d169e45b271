"""PostgreSQL's binary wire formats, built column by column from Arrow arrays.

`copy_rows` and `copy_payload` make the input of `COPY … FROM STDIN (FORMAT binary)`
and `array_param` a binary array parameter (`text[]`, `timestamptz[]`, …): the server
parses no text at all (no timestamp or float parsing), and the client runs no
Python per row.

Each field is a 4-byte big-endian length (-1: NULL) and the value's bytes. Columns
whose fields all have one width (numbers, timestamps, and strings that happen to
have one length, like UUIDs or currency codes) become NumPy blocks of shape
(rows, width), laid side by side; the other strings become a block of lengths plus
their Arrow bytes. One `binary_join_element_wise` (C++) then concatenates the
pieces row by row; the result's byte buffer holds the rows back to back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import adapt, pq

__all__ = [
    "BOOL",
    "FLOAT8",
    "INT4",
    "INT8",
    "TEXT",
    "TIMESTAMPTZ",
    "ArrayParam",
    "PgType",
    "array_param",
    "copy_payload",
    "copy_rows",
    "register_dumpers",
]

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since 1970
_NULL = np.frombuffer(np.array([-1], ">i4").tobytes(), np.uint8)


@dataclass(frozen=True, slots=True)
class PgType:
    """A column type: its OIDs and, for fixed-width types, the big-endian NumPy dtype."""

    name: str
    oid: int
    array_oid: int
    dtype: str | None  # None: variable width (text)


TEXT = PgType("text", 25, 1009, None)  # also feeds varchar columns
INT4 = PgType("int4", 23, 1007, ">i4")
INT8 = PgType("int8", 20, 1016, ">i8")
FLOAT8 = PgType("float8", 701, 1022, ">f8")
BOOL = PgType("bool", 16, 1000, "u1")
TIMESTAMPTZ = PgType("timestamptz", 1184, 1185, ">i8")

Column: TypeAlias = pa.Array | pa.ChunkedArray
Block: TypeAlias = npt.NDArray[np.uint8]  # (rows, width): each row's bytes of some fields
Piece: TypeAlias = pa.Array | Block


def _contiguous(values: Column) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


def _lengths(width: int, n: int) -> Block:
    return np.tile(np.frombuffer(np.array([width], ">i4").tobytes(), np.uint8), (n, 1))


def _binary(offsets: npt.NDArray[np.int32], data: npt.NDArray[np.uint8]) -> pa.Array:
    """A binary array over NumPy offsets and bytes (no copy)."""
    n = len(offsets) - 1
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _uniform(block: Block) -> pa.Array:
    """A binary array whose row i is block[i]."""
    n, width = block.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return _binary(offsets, np.ascontiguousarray(block).reshape(-1))


def _numbers(values: pa.Array, pgtype: PgType) -> npt.NDArray[Any]:
    """The column as big-endian NumPy values of the wire type (nulls as zero)."""
    if pgtype is TIMESTAMPTZ:
        if not pa.types.is_timestamp(values.type):
            raise TypeError(f"timestamptz column needs an Arrow timestamp, got {values.type}")
        values = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
    elif pgtype is BOOL:
        values = values.cast(pa.uint8())
    if values.null_count:
        values = pc.fill_null(values, 0)
    raw = values.to_numpy(zero_copy_only=False)
    if pgtype is TIMESTAMPTZ:
        raw = raw - _PG_EPOCH_US
    assert pgtype.dtype is not None
    return np.ascontiguousarray(raw, dtype=pgtype.dtype)


def _fixed_fields(values: pa.Array, pgtype: PgType) -> list[Piece]:
    raw = _numbers(values, pgtype)
    n, width = len(raw), raw.itemsize
    block = np.empty((n, 4 + width), dtype=np.uint8)
    block[:, :4] = _lengths(width, 1)
    block[:, 4:] = raw.view(np.uint8).reshape(n, width)
    if not values.null_count:
        return [block]
    valid = np.asarray(values.is_valid())  # a NULL is its length (-1) alone
    block[~valid, :4] = _NULL
    keep = np.ones(block.shape, dtype=bool)
    keep[~valid, 4:] = False
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(valid, 4 + width, 4), out=offsets[1:])
    return [_binary(offsets, block[keep])]


def _text_fields(values: pa.Array) -> list[Piece]:
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(f"text column needs an Arrow string array, got {values.type}")
    data = values.cast(pa.binary())  # UTF-8 bytes, no copy
    n = len(data)
    if n == 0:
        return [_lengths(0, 0)]
    offsets = np.frombuffer(data.buffers()[1], np.int32, n + 1, data.offset * 4)
    lengths = np.diff(offsets)
    if not data.null_count and (lengths == lengths[0]).all():
        width = int(lengths[0])  # one length throughout: a block like a number column
        block = np.empty((n, 4 + width), dtype=np.uint8)
        block[:, :4] = _lengths(width, 1)
        if width:
            size, start = int(offsets[-1] - offsets[0]), int(offsets[0])
            body = np.frombuffer(data.buffers()[2], np.uint8, size, start)
            block[:, 4:] = body.reshape(n, width)
        return [block]
    if data.null_count:
        lengths = np.where(np.asarray(data.is_valid()), lengths, -1)
        data = pc.fill_null(data, b"")
    return [np.ascontiguousarray(lengths.astype(">i4")).view(np.uint8).reshape(n, 4), data]


def _fields(values: Column, pgtype: PgType) -> list[Piece]:
    """Pieces whose row-wise concatenation is the column's fields."""
    array = _contiguous(values)
    return _text_fields(array) if pgtype.dtype is None else _fixed_fields(array, pgtype)


def _is_block(pieces: list[Piece]) -> bool:
    return len(pieces) == 1 and isinstance(pieces[0], np.ndarray)


def _rows(pieces: list[Piece]) -> pa.Array:
    """A binary array: row i is the concatenation of the pieces' row i (adjacent blocks
    are joined first)."""
    merged: list[pa.Array] = []
    blocks: list[Block] = []
    for piece in [*pieces, None]:
        if isinstance(piece, np.ndarray):
            blocks.append(piece)
            continue
        if blocks:
            merged.append(_uniform(blocks[0] if len(blocks) == 1 else np.hstack(blocks)))
            blocks = []
        if piece is not None:
            merged.append(piece)
    return merged[0] if len(merged) == 1 else pc.binary_join_element_wise(*merged, b"")


def _bytes(rows: pa.Array) -> memoryview:
    """The rows' bytes, back to back (no copy)."""
    if not len(rows):
        return memoryview(b"")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    return memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def copy_rows(
    columns: Mapping[str, Column], types: Mapping[str, PgType]
) -> tuple[list[str], pa.Array]:
    """The tuples of a binary COPY, one binary value per row, and the column names in
    the order the tuples hold them (fixed-width fields first). Rows can be taken or
    filtered like any Arrow array before `copy_payload` lays them out."""
    if not columns:
        raise ValueError("COPY needs at least one column")
    n = len(next(iter(columns.values())))
    if any(len(values) != n for values in columns.values()):
        raise ValueError("COPY columns differ in length")
    fields = {name: _fields(values, types[name]) for name, values in columns.items()}
    names = sorted(fields, key=lambda name: not _is_block(fields[name]))
    count = np.frombuffer(np.array([len(names)], ">i2").tobytes(), np.uint8)
    pieces: list[Piece] = [np.tile(count, (n, 1))]
    for name in names:
        pieces.extend(fields[name])
    return names, _rows(pieces)


def copy_payload(rows: pa.Array) -> list[memoryview]:
    """The input of `COPY … FROM STDIN (FORMAT binary)` for `copy_rows` rows: write the
    pieces in order."""
    return [memoryview(_COPY_HEADER), _bytes(rows), memoryview(_COPY_TRAILER)]


class ArrayParam:
    """A query parameter already in PostgreSQL's binary array format."""

    __slots__ = ("data",)
    oid: ClassVar[int]

    def __init__(self, data: bytes) -> None:
        self.data = data


def _param_class(pgtype: PgType) -> type[ArrayParam]:
    return type(f"{pgtype.name.capitalize()}ArrayParam", (ArrayParam,), {"oid": pgtype.array_oid})


_PARAM_CLASSES = {t.name: _param_class(t) for t in (TEXT, INT4, INT8, FLOAT8, BOOL, TIMESTAMPTZ)}


def array_param(values: Column, pgtype: PgType) -> ArrayParam:
    """A one-dimensional `pgtype[]` parameter (pass it with a `%b` placeholder)."""
    array = _contiguous(values)
    n = len(array)
    cls = _PARAM_CLASSES[pgtype.name]
    if n == 0:
        return cls(np.array([0, 0, pgtype.oid], ">i4").tobytes())
    header = np.array([1, int(array.null_count > 0), pgtype.oid, n, 1], ">i4").tobytes()
    return cls(b"".join((header, _bytes(_rows(_fields(array, pgtype))))))


def _dumper(cls: type[ArrayParam]) -> type[adapt.Dumper]:
    class _Dumper(adapt.Dumper):
        format = pq.Format.BINARY
        oid = cls.oid

        def dump(self, obj: Any) -> bytes:
            data: bytes = obj.data
            return data

    return _Dumper


def register_dumpers(adapters: adapt.AdaptersMap) -> None:
    """Teach a psycopg connection (its `adapters`) to send `ArrayParam`s as they are."""
    for cls in _PARAM_CLASSES.values():
        adapters.register_dumper(cls, _dumper(cls))
