"""PostgreSQL binary COPY, and the staging load through it.

The COPY data is binary (`BinaryRows`: the server does not parse text) and is sent by a worker
thread, so the server loads one block while this process reads, checks and encodes the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import connection, models
from psycopg.copy import QueuedLibpqWriter

from advertisers.ingestion.loading import (
    STAGE_TABLE,
    Sink,
    quote,
    stage_create,
    stage_merge,
    stat_fields,
)
from advertisers.ingestion.timing import phase

# COPY's binary format: a signature, flags and header-extension length, then rows, then -1.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
PG_EPOCH_DAYS = 10_957  # binary dates count days from 2000-01-01
_WIRE_TYPES = {"bigint": ">i8", "integer": ">i4", "date": ">i4"}  # numpy, big-endian
_ARROW_INTS = {"bigint": pa.int64(), "integer": pa.int32()}


@dataclass(frozen=True)
class _WireColumn:
    """How one checked column travels in binary COPY: a length, then the value."""

    column: str
    kind: str  # bigint, integer, date or numeric
    digits: int = 0  # numeric: base-10000 digits per value, the last one the fraction
    scale: int = 0

    @classmethod
    def of(cls, field: models.Field) -> _WireColumn:
        if isinstance(field, models.DecimalField):
            if not 0 < field.decimal_places <= 4:
                raise ValueError(f"{field.name}: binary COPY sends 1 to 4 decimals here")
            # Enough digits for the largest value the column holds, whatever the block has:
            # every row then has the same width; the server drops leading zero digits.
            whole = field.max_digits - field.decimal_places
            return cls(field.column, "numeric", -(-whole // 4) + 1, field.decimal_places)
        kind = field.db_type(connection).split()[0]
        if kind not in _WIRE_TYPES:
            raise ValueError(f"{field.name}: binary COPY of {kind} is not implemented")
        return cls(field.column, kind)

    def layout(self) -> list[tuple]:
        value = (
            [(">i2", 4), (">i2", self.digits)]  # (digits, weight, sign, scale), then digits
            if self.kind == "numeric"
            else [(_WIRE_TYPES[self.kind],)]
        )
        return [(f"{self.column}:size", ">i4")] + [
            (f"{self.column}:{i}", *part) for i, part in enumerate(value)
        ]

    def constants(self, template: np.ndarray) -> None:
        """Set the length (and a numeric's header) that every row shares."""
        size = template[f"{self.column}:0"].nbytes
        if self.kind == "numeric":
            size += 2 * self.digits
            template[f"{self.column}:0"] = (self.digits, self.digits - 2, 0, self.scale)
        template[f"{self.column}:size"] = size

    def fill(self, rows: np.ndarray, values: pa.ChunkedArray) -> None:
        if self.kind == "numeric":
            digits = rows[f"{self.column}:1"]
            for place, group in enumerate(_base_10000(values, self.scale), 1):
                digits[:, -place] = group
        elif self.kind == "date":
            days = pc.cast(pc.cast(values, pa.date32()), pa.int32()).to_numpy()
            rows[f"{self.column}:0"] = days - PG_EPOCH_DAYS
        else:
            rows[f"{self.column}:0"] = pc.cast(values, _ARROW_INTS[self.kind]).to_numpy()


def unscaled(values: pa.ChunkedArray, scale: int) -> np.ndarray:
    """Checked amounts as integers in units of 10**-scale (cents for scale 2)."""
    # A decimal128's unscaled value is a little-endian 128-bit integer; a checked amount fits
    # its low 64 bits.
    decimals = pc.cast(values, pa.decimal128(38, scale)).combine_chunks()
    low = np.frombuffer(decimals.buffers()[1], dtype="<i8")[2 * decimals.offset :: 2]
    return low[: len(decimals)]


def _base_10000(values: pa.ChunkedArray, scale: int) -> list[np.ndarray]:
    """Checked amounts as base-10000 digits, least significant (the fraction) first, as many as
    the largest amount needs (the ones above stay zero)."""
    # Scaled to 4 decimals, an amount's base-10000 digits are the numeric's digits.
    rest = unscaled(values, scale) * 10 ** (4 - scale)
    groups = [rest % 10_000]
    for _ in range((len(str(int(rest.max(initial=0)))) - 1) // 4):
        rest = rest // 10_000
        groups.append(rest % 10_000)
    return groups


class BinaryRows:
    """Checked columns as binary COPY rows, a whole block at a time with numpy.

    Every value is checked before it is encoded, so none is NULL and every row has the same
    width: the rows are one structured array whose bytes are the COPY data. Binary values cost
    the server a fraction of parsing text, and the server is the busier end of the load.
    """

    def __init__(self, fields: list[models.Field]) -> None:
        self.columns = [_WireColumn.of(field) for field in fields]
        layout = [("count", ">i2")] + [part for c in self.columns for part in c.layout()]
        self.dtype = np.dtype(layout)
        template = np.zeros((), self.dtype)
        template["count"] = len(self.columns)
        for column in self.columns:
            column.constants(template)
        self.template = np.frombuffer(template.tobytes(), np.uint8)

    def encode(self, table: pa.Table) -> memoryview:
        """The rows of `table`: ids as integers, every other column checked text or integers."""
        data = np.tile(self.template, table.num_rows)
        rows = data.view(self.dtype)
        for column in self.columns:
            column.fill(rows, table.column(column.column))
        return memoryview(data)


@contextmanager
def binary_copy(
    cursor, table: str, fields: list[models.Field], options: str = ""
) -> Iterator[Callable[[pa.Table], None]]:
    """COPY FROM STDIN in binary format; yields the function that sends one block of rows.

    A worker thread sends the data, so the server loads one block while this thread reads,
    checks and encodes the next (pyarrow and numpy release the GIL).
    """
    rows = BinaryRows(fields)
    columns = ", ".join(quote(field.column) for field in fields)
    raw = cursor.cursor  # Django's debug wrapper of copy() takes no writer
    statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT binary{options})"
    with raw.copy(statement, writer=QueuedLibpqWriter(raw)) as copy:
        copy.write(COPY_SIGNATURE)
        yield lambda block: copy.write(rows.encode(block))
        copy.write(COPY_TRAILER)


@contextmanager
def pg_staging() -> Iterator[Sink]:
    with connection.cursor() as cursor:
        stage_create(cursor)
        with binary_copy(cursor, STAGE_TABLE, stat_fields()) as send:
            sink = Sink(send, "staging")
            yield sink
        with phase("staging: upsert into the table"):
            sink.counts = stage_merge(cursor, sink.rows)
