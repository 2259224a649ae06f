"""Plausibility: checks across columns and files of values that each passed their own rule.

A value can be well formed and still impossible: more clicks than impressions, a day of stats
after the load date, stats of an advertiser before it registered. Such a problem rejects the
file like any other, unless the load allows implausible values; then it is a warning and the
rows are loaded as they are.

Each check reads a whole block at once with pyarrow compute, skipping the values that failed
their own rule (already a problem); `reason` words one row, only for the problems listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from advertisers.ingestion.rules import CodeMap, bool_mask, show


class Values:
    """A block's columns as types, converted once for all its checks. A value that failed its
    own rule is null, and a comparison with a null fails no check."""

    def __init__(self, batch: pa.RecordBatch, passed: dict[str, np.ndarray]) -> None:
        self.batch = batch
        self._passed = passed
        self._typed: dict[tuple[str, pa.DataType], pa.Array] = {}

    def text(self, column: str) -> pa.Array:
        values, passed = self.batch.column(column), self._passed[column]
        return values if passed.all() else pc.if_else(pa.array(passed), values, None)

    def typed(self, column: str, kind: pa.DataType) -> pa.Array:
        key = (column, kind)
        if key not in self._typed:
            self._typed[key] = pc.cast(self.text(column), kind)
        return self._typed[key]

    def dates(self, column: str) -> pa.Array:
        return self.typed(column, pa.date32())

    def counts(self, column: str) -> pa.Array:
        return self.typed(column, pa.int64())


class RowCheck:
    """`bad` flags the rows of a block that fail; `reason` words one of them."""

    column: str  # where a problem is reported

    def bad(self, values: Values) -> np.ndarray:
        raise NotImplementedError

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        raise NotImplementedError


def _failed(comparison: pa.Array) -> np.ndarray:
    return bool_mask(pc.fill_null(comparison, False))


def _date(batch: pa.RecordBatch, column: str, row: int) -> str:
    return show(batch.column(column)[row].as_py())


@dataclass(frozen=True, eq=False)
class NotAfter(RowCheck):
    """A date no later than the load date."""

    column: str
    latest: date
    why: str  # the plain reason, e.g. "no day of stats can be in the future"

    def bad(self, values: Values) -> np.ndarray:
        latest = pa.scalar(self.latest, pa.date32())
        return _failed(pc.greater(values.dates(self.column), latest))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        return f"{_date(batch, self.column, row)} is after the load date {self.latest}; {self.why}"


@dataclass(frozen=True, eq=False)
class NotMore(RowCheck):
    """A count no larger than another in the same row (clicks <= impressions)."""

    column: str
    than: str

    def bad(self, values: Values) -> np.ndarray:
        return _failed(pc.greater(values.counts(self.column), values.counts(self.than)))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        mine, other = (batch.column(c)[row].as_py() for c in (self.column, self.than))
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

    def bad(self, values: Values) -> np.ndarray:
        since = self.codes.since_for(values.text(self.code_column))
        return _failed(pc.less(values.dates(self.column), since))

    def reason(self, batch: pa.RecordBatch, row: int) -> str:
        code = batch.column(self.code_column)[row].as_py()
        since = self.codes.since_for(pa.array([code], pa.string()))[0].as_py()
        return (
            f"{_date(batch, self.column, row)} is before {self.what} {show(code)} "
            f"{self.began} ({since}); no stats can come before it"
        )
