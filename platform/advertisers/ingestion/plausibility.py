"""Plausibility: checks across columns and files of values that each passed their own rule.

A value can be well formed and still impossible: more clicks than impressions, a day of stats
after the load date, stats of an advertiser before it registered. Such a problem rejects the
file like any other, unless the load allows implausible values; then it is a warning and the
rows are loaded as they are.

Each check reads a block's rows whose every column it uses passed its rule, all at once with
pyarrow compute; `reason` words one row, only for the problems listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from advertisers.ingestion.rules import CodeMap, bool_mask, show


class RowCheck:
    """`bad` returns the positions, among `rows` of the batch, that fail; `reason` words one."""

    column: str  # where a problem is reported
    columns: tuple[str, ...]  # every column it reads

    def bad(self, batch: pa.RecordBatch, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        raise NotImplementedError


def _taken(batch: pa.RecordBatch, column: str, rows: np.ndarray) -> pa.Array:
    return pc.take(batch.column(column), pa.array(rows))


def _date(batch: pa.RecordBatch, column: str, row: int) -> str:
    return show(batch.column(column)[row].as_py())


@dataclass(frozen=True, eq=False)
class NotAfter(RowCheck):
    """A date no later than the load date."""

    column: str
    latest: date
    why: str  # the plain reason, e.g. "no day of stats is in the future"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def bad(self, batch: pa.RecordBatch, rows: np.ndarray) -> np.ndarray:
        days = pc.cast(_taken(batch, self.column, rows), pa.date32())
        return bool_mask(pc.greater(days, pa.scalar(self.latest, pa.date32())))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        return f"{_date(batch, self.column, row)} is after the load date {self.latest}; {self.why}"


@dataclass(frozen=True, eq=False)
class NotMore(RowCheck):
    """A count no larger than another in the same row (clicks <= impressions)."""

    column: str
    than: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.than)

    def bad(self, batch: pa.RecordBatch, rows: np.ndarray) -> np.ndarray:
        counts = [pc.cast(_taken(batch, c, rows), pa.int64()) for c in self.columns]
        return bool_mask(pc.greater(*counts))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        mine, other = (batch.column(c)[row].as_py() for c in self.columns)
        return (
            f"{mine} {self.column} but {other} {self.than}; {self.column} cannot exceed {self.than}"
        )


@dataclass(frozen=True, eq=False)
class NotBeforeStart(RowCheck):
    """A date no earlier than the day the row's scenario or advertiser began (a launch, a
    registration), as its file in the same load gives it, or else as stored."""

    column: str
    code_column: str
    codes: CodeMap
    what: str  # "scenario"
    began: str  # "was launched"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.code_column)

    def bad(self, batch: pa.RecordBatch, rows: np.ndarray) -> np.ndarray:
        days = pc.cast(_taken(batch, self.column, rows), pa.date32())
        since = self.codes.since_for(_taken(batch, self.code_column, rows))
        return bool_mask(pc.fill_null(pc.less(days, since), False))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        code = batch.column(self.code_column)[row].as_py()
        since = self.codes.since_for(pa.array([code], pa.string()))[0].as_py()
        return (
            f"{_date(batch, self.column, row)} is before {self.what} {show(code)} "
            f"{self.began} ({since}); no stats can come before it"
        )
