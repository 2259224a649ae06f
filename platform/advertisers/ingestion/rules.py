"""Rules: vectorised checks of one text column (`Rule.ok`, one pass of pyarrow compute)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import models

EMPTY = "is empty; a value is required"


def bool_mask(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


class Rule:
    """`ok` checks a whole column at once; `reason` words one bad value (only listed ones)."""

    def ok(self, values: pa.Array) -> np.ndarray:
        raise NotImplementedError

    def reason(self, value: str) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Text(Rule):
    max_length: int
    pattern: str = ""  # full-match regular expression (RE2 syntax)
    hint: str = ""

    def ok(self, values: pa.Array) -> np.ndarray:
        length = pc.utf8_length(values)
        good = pc.and_(pc.greater(length, 0), pc.less_equal(length, self.max_length))
        if self.pattern:
            good = pc.and_(good, pc.match_substring_regex(values, self.pattern))
        return bool_mask(good)

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if len(value) > self.max_length:
            return f"is {len(value)} characters long; at most {self.max_length} are allowed"
        return f"{show(value)} {self.hint}"


@dataclass(frozen=True, eq=False)
class Choice(Rule):
    options: tuple[str, ...]

    def ok(self, values: pa.Array) -> np.ndarray:
        return bool_mask(pc.is_in(values, value_set=pa.array(self.options, pa.string())))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{show(value)} is not one of {', '.join(self.options)}"


def _ok_by_distinct(values: pa.Array, check: Callable[[pa.Array], np.ndarray]) -> np.ndarray:
    """Check each distinct value once (a day repeats on every row of that day)."""
    distinct = pc.unique(values)
    bad = distinct.filter(pa.array(~check(distinct)))
    if not len(bad):
        return np.ones(len(values), dtype=bool)
    return ~bool_mask(pc.is_in(values, value_set=bad))


def dates_of(values: pa.Array) -> pa.Array:
    """Text dates as date32, null where a value is not a date by IsoDate's rule."""
    good = pa.array(IsoDate().ok(values))
    return pc.cast(pc.if_else(good, values, pa.scalar(None, pa.string())), pa.date32())


class IsoDate(Rule):
    """YYYY-MM-DD, a real calendar day, years 1000-2999."""

    def ok(self, values: pa.Array) -> np.ndarray:
        return _ok_by_distinct(values, self._check)

    @staticmethod
    def _check(values: pa.Array) -> np.ndarray:
        shaped = pc.match_substring_regex(values, r"^[12]\d{3}-\d{2}-\d{2}$")
        parsed = pc.strptime(values, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls 2024-02-30 over to March; printing it back catches that.
        same = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), values)
        return bool_mask(pc.and_(shaped, pc.fill_null(same, False)))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{show(value)} is not a date; write YYYY-MM-DD"


@dataclass(frozen=True, eq=False)
class Count(Rule):
    """A non-negative whole number in [low, high], plain ASCII digits."""

    low: int = 0
    high: int = 10**18 - 1

    def ok(self, values: pa.Array) -> np.ndarray:
        length = pc.binary_length(values)
        digits = pc.and_(pc.ascii_is_decimal(values), pc.less_equal(length, 18))
        # Fewer digits than `high` has is in range without parsing: the usual case for counts.
        shorter = pc.all(pc.less(length, len(str(self.high)))).as_py()
        if self.low == 0 and (shorter or self.high >= 10**18 - 1):
            return bool_mask(digits)
        if not pc.all(digits).as_py():
            values = pc.if_else(digits, values, "0")
        numbers = pc.cast(values, pa.int64())
        inside = pc.and_(pc.greater_equal(numbers, self.low), pc.less_equal(numbers, self.high))
        return bool_mask(pc.and_(digits, inside))

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if re.fullmatch(r"-[0-9]+", value):
            return f"{show(value)} is negative; counts are never negative"
        if not re.fullmatch(r"[0-9]+", value):
            return f"{show(value)} is not a whole number"
        return f"{show(value)} is out of range {self.low}..{self.high}"


@dataclass(frozen=True, eq=False)
class Money(Rule):
    """A non-negative amount with at most 2 decimals and `whole_digits` digits before the point."""

    whole_digits: int

    def ok(self, values: pa.Array) -> np.ndarray:
        pattern = rf"^[0-9]{{1,{self.whole_digits}}}(\.[0-9]{{1,2}})?$"
        return bool_mask(pc.match_substring_regex(values, pattern))

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if re.fullmatch(r"-[0-9]+(\.[0-9]*)?", value):
            return f"{show(value)} is negative; amounts are never negative"
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", value):
            return f"{show(value)} has more than 2 decimals; round it to cents"
        if re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", value):
            return (
                f"{show(value)} is too large; at most {self.whole_digits} digits before the point"
            )
        return f"{show(value)} is not an amount; write it like 1234.56"


class Number(Rule):
    """A finite decimal number, optionally signed and with an exponent (scenario attributes)."""

    def ok(self, values: pa.Array) -> np.ndarray:
        pattern = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
        return bool_mask(pc.match_substring_regex(values, pattern))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{show(value)} is not a number"


@dataclass(frozen=True, eq=False)
class CodeMap:
    """Codes (scenario codes or advertiser ids), the primary keys they stand for, and the date
    each began (a scenario's launch, an advertiser's registration; null where unknown)."""

    codes: pa.Array
    ids: np.ndarray
    since: pa.Array  # date32, one per code

    @classmethod
    def stored(cls, model: type[models.Model], key: str, since: str) -> CodeMap:
        rows = list(model.objects.values_list(key, "pk", since))
        codes, ids, days = zip(*rows, strict=True) if rows else ((), (), ())
        return cls(
            pa.array(codes, pa.string()),
            np.array(ids, dtype=np.int64),
            pa.array(days, pa.date32()),
        )

    def with_codes(self, extra: pa.ChunkedArray, since: pa.ChunkedArray) -> CodeMap:
        """`extra` codes, which have no key yet, then these (used only to check, never to load).

        `extra` come first: a code in both is looked up with the date its file gives."""
        extra = extra.combine_chunks().cast(pa.string())
        return CodeMap(
            pa.concat_arrays([extra, self.codes]),
            np.concatenate([np.full(len(extra), -1, np.int64), self.ids]),
            pa.concat_arrays([dates_of(since.combine_chunks()), self.since]),
        )

    def since_for(self, values: pa.Array) -> pa.Array:
        """The date each known code began (null for an unknown code or date)."""
        return pc.take(self.since, pc.index_in(values, value_set=self.codes))

    def contains(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return bool_mask(pc.is_in(values, value_set=self.codes))

    def ids_for(self, values: pa.Array) -> pa.Array:
        index = pc.index_in(values, value_set=self.codes)
        if index.null_count:
            raise ValueError("ids_for() called on codes that were not checked first")
        return pa.array(self.ids[index.to_numpy()])


@dataclass(frozen=True, eq=False)
class Known(Rule):
    codes: CodeMap
    what: str
    where: str

    def ok(self, values: pa.Array) -> np.ndarray:
        return self.codes.contains(values)

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        return (
            f"unknown {self.what} {show(value)}; add it to {self.where} in the same load "
            "or load it first"
        )
