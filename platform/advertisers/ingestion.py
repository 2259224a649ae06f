"""Ingestion of the data contract (DESIGN section 3): check whole files, then load them at once.

Three files, each optional: scenarios, advertisers and daily stats, as UTF-8 CSV with a header
row or as Parquet with the same columns. A load is all or nothing.

Checking. Every file is read block by block with pyarrow, every column as text, and each block
is checked by vectorised rules (`Rule.ok`, one pass of pyarrow compute per column). A problem is
reported as `file:line: column: reason`; the first PROBLEM_LIMIT, in file and line order, are
worded and the rest are counted. Line 1 is the header; Parquet rows are numbered as if the file
were that CSV (first row = line 2). Blank lines are skipped. Duplicate keys are found at the end
of a file, over all its rows. Advertiser and scenario codes in daily stats must be defined in the
same load or already stored.

Loading. Scenarios and advertisers are small reference files: checked whole, then upserted by
their code. Daily stats may be millions of rows: each checked block is mapped to foreign keys
(vectorised lookups) and streamed to the database while the next block is read, inside the same
transaction; any problem, found early or late, raises IngestError inside it, so nothing is
stored. Daily stats use one of two strategies:

- staging (both backends, any size): rows go to a temporary table (COPY on PostgreSQL, batched
  executemany on SQLite), then one INSERT ... SELECT ... ON CONFLICT DO UPDATE replaces the rows
  of the same (advertiser, scenario, date) and adds the others.
- bulk (PostgreSQL, at least INGEST_BULK_MIN_ROWS rows into a table holding at most
  BULK_MAX_TABLE_RATIO times as many: a first load, a backfill, a full reload): the table's
  indexes and foreign keys are dropped, rows are COPYed straight in, the rows they replace are
  deleted with one join, the keys and indexes are rebuilt from their saved definitions, the
  table is analysed and the foreign keys are added back: NOT VALID for the advertiser and the
  scenario, whose every used key was checked under lock (`_referenced_keys_check`), any other
  checked by one join. Per-row index upkeep and per-row foreign-key triggers make the staging
  path cost ten times a plain COPY or more; a rebuild is one sort per index. The table is
  locked (ACCESS EXCLUSIVE) meanwhile, and it is the same transaction, so a failure restores
  the table as it was. Replaced rows get new ids. Into an empty table the rows are COPYed
  frozen (`_bulk_copy_options`).

On PostgreSQL the COPY data is binary (`BinaryRows`: the server does not parse text) and is
sent by a worker thread, so the server loads one block while this process reads, checks and
encodes the next.

Scenario statistics are refreshed in the same transaction (`scenario_stats_refresh`); after a
bulk load into an empty table, from the figures gathered while the rows streamed (`_LoadedRows`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from psycopg.copy import QueuedLibpqWriter
from tqdm import tqdm

from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.services import STATS_WINDOW_DAYS, WindowActivity, scenario_stats_refresh

logger = logging.getLogger(__name__)

PROBLEM_LIMIT = 50
CSV_BLOCK_BYTES = 2 << 20  # small enough that the server starts on the first block soon
PARQUET_BATCH_ROWS = 131_072
PROGRESS_MIN_BYTES = 4 << 20
# Overridable with settings.INGEST_BULK_MIN_ROWS (tests lower it to exercise the bulk path).
BULK_MIN_ROWS = 100_000
# Bulk loads while the table holds at most this many times the load's rows: staging costs about
# 35 us per inserted and 85 us per replaced row, a rebuild about 5 us per row already there.
BULK_MAX_TABLE_RATIO = 4
STAGE_TABLE = "ingest_daily_stats_stage"
FILE_KINDS = {"scenarios": "scenarios", "advertisers": "advertisers", "stats": "daily_stats"}
SUFFIXES = (".csv", ".parquet")

FileArg = str | os.PathLike[str] | None


def _log_since(label: str, started: float) -> None:
    """Log how long a step took (DEBUG; bench/ingest.py shows them)."""
    logger.debug("%-48s %6.2f s", label, time.perf_counter() - started)


@contextmanager
def _phase(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    _log_since(label, started)


# --- Results and problems -------------------------------------------------------------------


class IngestError(Exception):
    """A load was rejected and nothing was stored.

    `problems` are `file:line: column: reason` lines (at most PROBLEM_LIMIT), `more` counts the
    problems that were found but not listed.
    """

    def __init__(self, problems: list[str], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        total = len(problems) + more
        super().__init__(f"{total} problem{'s' if total != 1 else ''}; nothing was stored")

    def lines(self) -> list[str]:
        """Every problem line, and a last line counting the unlisted ones."""
        tail = [f"... and {self.more} more problems"] if self.more else []
        return [*self.problems, *tail]


@dataclass(frozen=True)
class TableCounts:
    inserted: int = 0
    updated: int = 0


@dataclass(frozen=True)
class IngestReport:
    scenarios: TableCounts | None
    advertisers: TableCounts | None
    daily_stats: TableCounts | None
    seconds: float

    def summary(self) -> str:
        """One line: rows inserted and updated per file and the elapsed time."""
        parts = [
            f"{label} {counts.inserted:,} inserted, {counts.updated:,} updated"
            for label, counts in (
                ("scenarios", self.scenarios),
                ("advertisers", self.advertisers),
                ("daily stats", self.daily_stats),
            )
            if counts is not None
        ]
        return f"Loaded in {self.seconds:.1f} s: {'; '.join(parts)}."


@dataclass(frozen=True)
class _Source:
    path: Path
    order: int  # position in the load, so problems list file by file

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() == ".parquet"


class ProblemLog:
    """Counts every problem and keeps the first `limit` worded, in file, line, column order."""

    def __init__(self, limit: int = PROBLEM_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self._kept: list[tuple[int, int, int, str]] = []

    @property
    def clean(self) -> bool:
        return self.total == 0

    def add(self, source: _Source, line: int, column: str, reason: str, order: int = -1) -> None:
        self.add_many(source, np.array([line]), column, lambda _: reason, order)

    def add_many(
        self,
        source: _Source,
        lines: np.ndarray,
        column: str,
        reason_of: Callable[[int], str],
        order: int = 0,
    ) -> None:
        """Record problems at `lines`; `reason_of(i)` words the i-th, only if it is listed."""
        self.total += len(lines)
        first = np.argsort(lines, kind="stable")[: self.limit]
        fresh = [
            (
                source.order,
                int(lines[i]),
                order,
                f"{source.name}:{lines[i]}: {column}: {reason_of(i)}",
            )
            for i in first
        ]
        self._kept = sorted(self._kept + fresh)[: self.limit]

    def raise_if_any(self) -> None:
        if self.total:
            raise IngestError([text for *_, text in self._kept], self.total - len(self._kept))


# --- Rules: vectorised checks of one text column -----------------------------------------------

EMPTY = "is empty; a value is required"


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _show(value: str) -> str:
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
        return _np(good)

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if len(value) > self.max_length:
            return f"is {len(value)} characters long; at most {self.max_length} are allowed"
        return f"{_show(value)} {self.hint}"


@dataclass(frozen=True, eq=False)
class Choice(Rule):
    options: tuple[str, ...]

    def ok(self, values: pa.Array) -> np.ndarray:
        return _np(pc.is_in(values, value_set=pa.array(self.options, pa.string())))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{_show(value)} is not one of {', '.join(self.options)}"


def _ok_by_distinct(values: pa.Array, check: Callable[[pa.Array], np.ndarray]) -> np.ndarray:
    """Check each distinct value once (a day repeats on every row of that day)."""
    distinct = pc.unique(values)
    bad = distinct.filter(pa.array(~check(distinct)))
    if not len(bad):
        return np.ones(len(values), dtype=bool)
    return ~_np(pc.is_in(values, value_set=bad))


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
        return _np(pc.and_(shaped, pc.fill_null(same, False)))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{_show(value)} is not a date; write YYYY-MM-DD"


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
            return _np(digits)
        if not pc.all(digits).as_py():
            values = pc.if_else(digits, values, "0")
        numbers = pc.cast(values, pa.int64())
        inside = pc.and_(pc.greater_equal(numbers, self.low), pc.less_equal(numbers, self.high))
        return _np(pc.and_(digits, inside))

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if re.fullmatch(r"-[0-9]+", value):
            return f"{_show(value)} is negative; counts are never negative"
        if not re.fullmatch(r"[0-9]+", value):
            return f"{_show(value)} is not a whole number"
        return f"{_show(value)} is out of range {self.low}..{self.high}"


@dataclass(frozen=True, eq=False)
class Money(Rule):
    """A non-negative amount with at most 2 decimals and `whole_digits` digits before the point."""

    whole_digits: int

    def ok(self, values: pa.Array) -> np.ndarray:
        pattern = rf"^[0-9]{{1,{self.whole_digits}}}(\.[0-9]{{1,2}})?$"
        return _np(pc.match_substring_regex(values, pattern))

    def reason(self, value: str) -> str:
        if value == "":
            return EMPTY
        if re.fullmatch(r"-[0-9]+(\.[0-9]*)?", value):
            return f"{_show(value)} is negative; amounts are never negative"
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", value):
            return f"{_show(value)} has more than 2 decimals; round it to cents"
        if re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", value):
            return (
                f"{_show(value)} is too large; at most {self.whole_digits} digits before the point"
            )
        return f"{_show(value)} is not an amount; write it like 1234.56"


class Number(Rule):
    """A finite decimal number, optionally signed and with an exponent (scenario attributes)."""

    def ok(self, values: pa.Array) -> np.ndarray:
        pattern = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
        return _np(pc.match_substring_regex(values, pattern))

    def reason(self, value: str) -> str:
        return EMPTY if value == "" else f"{_show(value)} is not a number"


@dataclass(frozen=True, eq=False)
class CodeMap:
    """Codes (scenario codes or advertiser ids) and the primary keys they stand for."""

    codes: pa.Array
    ids: np.ndarray

    @classmethod
    def stored(cls, model: type[models.Model], key: str) -> CodeMap:
        pairs = list(model.objects.values_list(key, "pk"))
        codes, ids = zip(*pairs, strict=True) if pairs else ((), ())
        return cls(pa.array(codes, pa.string()), np.array(ids, dtype=np.int64))

    def with_codes(self, extra: pa.ChunkedArray) -> CodeMap:
        """These codes plus `extra`, which have no key yet (used only to check, never to load)."""
        extra = extra.combine_chunks().cast(pa.string())
        codes = pa.concat_arrays([self.codes, extra])
        return CodeMap(codes, np.concatenate([self.ids, np.full(len(extra), -1, np.int64)]))

    def contains(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return _np(pc.is_in(values, value_set=self.codes))

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
            f"unknown {self.what} {_show(value)}; add it to {self.where} in the same load "
            "or load it first"
        )


# --- The contract's files ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FileSpec:
    label: str
    key: tuple[str, ...]
    rules: dict[str, Rule]
    extra_prefix: str = ""  # optional columns with this prefix use extra_rule
    extra_rule: Rule | None = None

    def allows(self, column: str) -> bool:
        return column in self.rules or bool(
            self.extra_prefix and column.startswith(self.extra_prefix)
        )

    def rule(self, column: str) -> Rule:
        return self.rules.get(column) or self.extra_rule  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class _Maps:
    scenarios: CodeMap
    advertisers: CodeMap


def _max_length(model: type[models.Model], name: str) -> int:
    return model._meta.get_field(name).max_length  # type: ignore[union-attr, return-value]


def _scenarios_spec() -> FileSpec:
    return FileSpec(
        label="scenarios",
        key=("code",),
        rules={
            "code": Text(
                _max_length(Scenario, "code"),
                r"^[-a-zA-Z0-9_]+$",
                "is not a code; use letters, digits, - and _",
            ),
            "name": Text(_max_length(Scenario, "name")),
            "kind": Choice(tuple(Scenario.Kind.values)),
            "launched_on": IsoDate(),
        },
        extra_prefix="attr_",
        extra_rule=Number(),
    )


def _advertisers_spec() -> FileSpec:
    return FileSpec(
        label="advertisers",
        key=("advertiser_id",),
        rules={
            "advertiser_id": Text(_max_length(Advertiser, "advertiser_id")),
            "name": Text(_max_length(Advertiser, "name")),
            "registered_on": IsoDate(),
            "business_scale": Count(1, 5),
            "main_category": Text(_max_length(Advertiser, "main_category")),
            "star_level": Count(0, 5),
        },
    )


def _counter_rule(name: str) -> Rule:
    field = DailyStat._meta.get_field(name)
    if isinstance(field, models.DecimalField):
        return Money(field.max_digits - field.decimal_places)
    if isinstance(field, models.BigIntegerField):
        return Count(0, 10**18 - 1)
    return Count(0, 2**31 - 1)


def _stats_spec(maps: _Maps) -> FileSpec:
    return FileSpec(
        label="daily stats",
        key=("advertiser_id", "scenario", "date"),
        rules={
            "advertiser_id": Known(maps.advertisers, "advertiser", "the advertisers file"),
            "scenario": Known(maps.scenarios, "scenario", "the scenarios file"),
            "date": IsoDate(),
            **{name: _counter_rule(name) for name in DailyStat.COUNTERS},
        },
    )


# --- Reading and checking ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Block:
    batch: pa.RecordBatch  # text columns
    lines: np.ndarray  # the file line of each row
    source_bytes: int  # about how much of the file it came from (for the progress bar)


def _csv_header(source: _Source, log: ProblemLog) -> list[str] | None:
    with source.path.open("rb") as fh:
        first = fh.readline()
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.add(source, 1, "-", "is not UTF-8 text; save it as UTF-8 CSV")
        return None
    header = next(csv.reader([text]), None)
    if not header:
        log.add(source, 1, "-", "is empty; the first line must be the header")
        return None
    return header


def _check_header(
    source: _Source, spec: FileSpec, header: list[str], ignore_unknown: bool, log: ProblemLog
) -> list[str] | None:
    """The columns to read, or None when the header is wrong (the rows are then not read)."""
    before = log.total
    for position, name in enumerate(header):
        if name in header[:position]:
            log.add(source, 1, name, "appears twice in the header; keep one")
    for name in spec.rules:
        if name not in header:
            needed = ", ".join(spec.rules)
            log.add(source, 1, name, f"missing column; a {spec.label} file needs {needed}")
    unknown = [name for name in header if not spec.allows(name)]
    if not ignore_unknown:
        for name in unknown:
            what = "unknown column" if name else "a column without a name (a trailing comma?)"
            log.add(
                source,
                1,
                name or "(no name)",
                f"{what}; remove it, or ask to ignore unknown columns (--ignore-unknown-columns)",
            )
    if log.total > before:
        return None
    return [name for name in header if name not in unknown]


def _line_numbers(first_row: int, count: int, skipped_lines: list[int]) -> np.ndarray:
    """File lines of kept rows first_row.., given the lines of rows pyarrow skipped as invalid."""
    rows = np.arange(first_row, first_row + count)
    # The j-th skipped line comes after (line - 2 - j) kept rows: every later row moves down one.
    thresholds = np.asarray(skipped_lines, dtype=np.int64) - 2 - np.arange(len(skipped_lines))
    return rows + 2 + np.searchsorted(thresholds, rows, side="right")


def _csv_blocks(
    source: _Source, header: list[str], columns: list[str], log: ProblemLog
) -> Iterator[Block]:
    skipped: list[int] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        skipped.append(row.number)
        log.add(
            source,
            row.number,
            "-",
            f"has {row.actual_columns} fields, the header has {row.expected_columns}",
        )
        return "skip"

    kept = 0
    try:
        # use_threads=False: pyarrow then knows the line number of a malformed row.
        reader = pcsv.open_csv(
            source.path,
            read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                include_columns=columns,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            lines = _line_numbers(kept, batch.num_rows, skipped)
            kept += batch.num_rows
            # Text bytes plus one separator per field (the offsets are 4 bytes per field).
            nbytes = batch.nbytes - 3 * batch.num_rows * batch.num_columns
            yield Block(batch, lines, nbytes)
    except pa.ArrowInvalid as exc:
        # pyarrow names the row when it can ("Row #3"); else point at the block it was reading.
        row = re.search(r"Row #(\d+)", str(exc))
        line = int(row.group(1)) if row else int(_line_numbers(kept, 1, skipped)[0])
        log.add(source, line, "-", f"cannot be read ({exc}); the file must be UTF-8 CSV")


def _parquet_blocks(
    source: _Source, file: pq.ParquetFile, columns: list[str], log: ProblemLog
) -> Iterator[Block]:
    total_rows = max(file.metadata.num_rows, 1)
    size = source.path.stat().st_size
    first = 0
    for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        texts = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                texts.append(pc.fill_null(pc.cast(column, pa.string()), ""))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                log.add(source, 1, name, f"has type {column.type}, which cannot be read as text")
                return
        lines = np.arange(first + 2, first + 2 + batch.num_rows)
        first += batch.num_rows
        text_batch = pa.RecordBatch.from_arrays(texts, names=batch.schema.names)
        yield Block(text_batch, lines, size * batch.num_rows // total_rows)


def _without_blank_rows(block: Block) -> Block:
    """Drop rows whose every field is empty (blank lines)."""
    batch = block.batch
    if batch.num_columns == 0 or not pc.any(pc.equal(pc.binary_length(batch.column(0)), 0)).as_py():
        return block
    blank = np.ones(batch.num_rows, dtype=bool)
    for column in batch.columns:
        blank &= _np(pc.equal(pc.binary_length(column), 0))
    if not blank.any():
        return block
    return Block(batch.filter(pa.array(~blank)), block.lines[~blank], block.source_bytes)


class _KeyIndex:
    """Collects a file's key columns to find duplicate keys over all its rows at the end.

    Each key column is dictionary-encoded on its own (few distinct advertisers, scenarios and
    days, so small hash tables) and the codes are combined into one integer per row; hashing the
    joined key strings instead costs several times more on a million distinct keys.
    """

    def __init__(self, key: tuple[str, ...]) -> None:
        self.key = key
        self.parts: dict[str, list[pa.Array]] = {name: [] for name in key}
        self.lines: list[np.ndarray] = []

    def add(self, block: Block) -> None:
        for name in self.key:
            self.parts[name].append(block.batch.column(name))
        self.lines.append(block.lines)

    def _row_keys(self) -> np.ndarray:
        """One int64 per row, equal for two rows exactly when their keys are equal."""
        combined = np.zeros(sum(len(lines) for lines in self.lines), dtype=np.int64)
        cardinality = 1
        for name in self.key:
            encoded = pc.dictionary_encode(pa.chunked_array(self.parts[name], pa.string()))
            codes = np.concatenate([c.indices.to_numpy() for c in encoded.chunks]).astype(np.int64)
            size = max(len(encoded.chunks[-1].dictionary), 1) if encoded.num_chunks else 1
            if cardinality * size >= 2**62:  # renumber the keys so far densely to avoid overflow
                combined = np.unique(combined, return_inverse=True)[1].astype(np.int64)
                cardinality = int(combined.max()) + 1
            combined = combined * size + codes
            cardinality *= size
        return combined

    def report(self, source: _Source, log: ProblemLog) -> None:
        if not self.lines:
            return
        keys = self._row_keys()
        _, first_row = np.unique(keys, return_index=True)
        if len(first_row) == len(keys):
            return
        _, inverse = np.unique(keys, return_inverse=True)
        first_of = first_row[inverse]  # for each row, the first row with the same key
        duplicates = np.flatnonzero(first_of != np.arange(len(keys)))
        lines = np.concatenate(self.lines)
        columns = [pa.chunked_array(self.parts[name], pa.string()) for name in self.key]

        def reason(i: int) -> str:
            row = int(duplicates[i])
            shown = ", ".join(column[row].as_py() for column in columns)
            return f"duplicate of line {lines[first_of[row]]} ({shown}); keep one row per key"

        log.add_many(source, lines[duplicates], "/".join(self.key), reason, order=len(self.key))


@dataclass(eq=False)
class _Scan:
    """A file's checked blocks; iterate it to the end to run the checks over all rows."""

    source: _Source
    columns: list[str]
    blocks: Iterator[Block]


def _scan(
    source: _Source, spec: FileSpec, ignore_unknown: bool, log: ProblemLog, progress: bool
) -> _Scan:
    """Check the header now; rows are checked as the returned blocks are read."""
    parquet = None
    if source.is_parquet:
        try:
            parquet = pq.ParquetFile(source.path)
        except (pa.ArrowInvalid, OSError) as exc:
            log.add(source, 1, "-", f"cannot be read as Parquet ({exc})")
            return _Scan(source, [], iter(()))
        header = parquet.schema_arrow.names
    else:
        header = _csv_header(source, log)
    columns = _check_header(source, spec, header, ignore_unknown, log) if header else None
    if columns is None:
        return _Scan(source, [], iter(()))
    reader = (
        _parquet_blocks(source, parquet, columns, log)
        if parquet is not None
        else _csv_blocks(source, header, columns, log)  # type: ignore[arg-type]
    )
    return _Scan(source, columns, _checked(source, spec, columns, reader, log, progress))


def _checked(
    source: _Source,
    spec: FileSpec,
    columns: list[str],
    reader: Iterator[Block],
    log: ProblemLog,
    progress: bool,
) -> Iterator[Block]:
    keys = _KeyIndex(spec.key)
    size = source.path.stat().st_size
    with tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        desc=source.name,
        # None: only on a terminal, so logs and captured output stay clean.
        disable=True if not progress or size < PROGRESS_MIN_BYTES else None,
    ) as bar:
        for raw in reader:
            block = _without_blank_rows(raw)
            _check_block(source, spec, columns, block, log)
            keys.add(block)
            bar.update(min(raw.source_bytes, size - bar.n))
            yield block
        bar.update(size - bar.n)
    keys.report(source, log)


def _check_block(
    source: _Source, spec: FileSpec, columns: list[str], block: Block, log: ProblemLog
) -> None:
    for order, name in enumerate(columns):
        rule = spec.rule(name)
        values = block.batch.column(name)
        bad = np.flatnonzero(~rule.ok(values))
        if len(bad):
            log.add_many(source, block.lines[bad], name, partial(_reason, rule, values, bad), order)


def _reason(rule: Rule, values: pa.Array, bad: np.ndarray, i: int) -> str:
    return rule.reason(values[int(bad[i])].as_py())


def _read_whole(scan: _Scan) -> pa.Table:
    batches = [block.batch for block in scan.blocks]
    schema = pa.schema([(name, pa.string()) for name in scan.columns])
    return pa.Table.from_batches(batches, schema=schema)


# --- Loading scenarios and advertisers (small reference tables) ---------------------------------


def _counts(codes: pa.ChunkedArray, stored: CodeMap) -> TableCounts:
    updated = int(stored.contains(codes).sum())
    return TableCounts(inserted=len(codes) - updated, updated=updated)


def _scenarios_upsert(table: pa.Table, stored: CodeMap) -> TableCounts:
    attributes = [name for name in table.column_names if name.startswith("attr_")]
    rows = [
        Scenario(
            code=row["code"],
            name=row["name"],
            kind=row["kind"],
            launched_on=date.fromisoformat(row["launched_on"]),
            attributes={name: float(row[name]) for name in attributes},
        )
        for row in table.to_pylist()
    ]
    Scenario.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["code"],
        update_fields=["name", "kind", "launched_on", "attributes"],
    )
    return _counts(table.column("code"), stored)


def _advertisers_upsert(table: pa.Table, stored: CodeMap) -> TableCounts:
    rows = [
        Advertiser(
            advertiser_id=row["advertiser_id"],
            name=row["name"],
            registered_on=date.fromisoformat(row["registered_on"]),
            business_scale=int(row["business_scale"]),
            main_category=row["main_category"],
            star_level=int(row["star_level"]),
        )
        for row in table.to_pylist()
    ]
    Advertiser.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["advertiser_id"],
        update_fields=["name", "registered_on", "business_scale", "main_category", "star_level"],
    )
    return _counts(table.column("advertiser_id"), stored)


# --- Loading daily stats -------------------------------------------------------------------------

STAT_KEY = ("advertiser_id", "scenario_id", "date")
UNIX_EPOCH = date(1970, 1, 1)


def _stat_fields() -> list[models.Field]:
    names = ["advertiser", "scenario", "date", *DailyStat.COUNTERS]
    return [DailyStat._meta.get_field(name) for name in names]


def _stat_columns() -> list[str]:
    return [field.column for field in _stat_fields()]


def _stats_rows(batch: pa.RecordBatch, maps: _Maps) -> pa.Table:
    """A checked block as DailyStat columns: codes become foreign keys, the rest stays text."""
    arrays = [
        maps.advertisers.ids_for(batch.column("advertiser_id")),
        maps.scenarios.ids_for(batch.column("scenario")),
        batch.column("date"),
        *[batch.column(name) for name in DailyStat.COUNTERS],
    ]
    return pa.Table.from_arrays(arrays, names=_stat_columns())


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


def _unscaled(values: pa.ChunkedArray, scale: int) -> np.ndarray:
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
    rest = _unscaled(values, scale) * 10 ** (4 - scale)
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


class _Sink:
    """Where checked daily-stat rows go; `counts` is set once the rows are merged."""

    def __init__(self, send: Callable[[pa.Table], None], strategy: str) -> None:
        self._send = send
        self.strategy = strategy
        self.rows = 0
        self.counts: TableCounts | None = None
        # The scenario statistics' figures, where the sink knows them without a query.
        self.activity: WindowActivity | None = None

    def write(self, table: pa.Table) -> None:
        self._send(table)
        self.rows += table.num_rows


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _stage_create(cursor) -> None:
    columns = ", ".join(f"{_q(f.column)} {f.db_type(connection)}" for f in _stat_fields())
    cursor.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")
    on_commit = " ON COMMIT DROP" if connection.vendor == "postgresql" else ""
    cursor.execute(f"CREATE TEMPORARY TABLE {STAGE_TABLE} ({columns}){on_commit}")


def _stage_merge(cursor, rows: int) -> TableCounts:
    """Upsert the staged rows into DailyStat in one statement; count the replaced ones first."""
    table = _q(DailyStat._meta.db_table)
    columns = ", ".join(_q(c) for c in _stat_columns())
    match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in STAT_KEY)
    cursor.execute(f"SELECT count(*) FROM {STAGE_TABLE} s JOIN {table} t ON {match}")
    updated = cursor.fetchone()[0]
    updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in _stat_columns() if c not in STAT_KEY)
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {STAGE_TABLE} WHERE true "
        f"ON CONFLICT ({', '.join(_q(k) for k in STAT_KEY)}) DO UPDATE SET {updates}"
    )
    cursor.execute(f"DROP TABLE {STAGE_TABLE}")
    return TableCounts(inserted=rows - updated, updated=updated)


@contextmanager
def _binary_copy(
    cursor, table: str, fields: list[models.Field], options: str = ""
) -> Iterator[Callable[[pa.Table], None]]:
    """COPY FROM STDIN in binary format; yields the function that sends one block of rows.

    A worker thread sends the data, so the server loads one block while this thread reads,
    checks and encodes the next (pyarrow and numpy release the GIL).
    """
    rows = BinaryRows(fields)
    columns = ", ".join(_q(field.column) for field in fields)
    raw = cursor.cursor  # Django's debug wrapper of copy() takes no writer
    statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT binary{options})"
    with raw.copy(statement, writer=QueuedLibpqWriter(raw)) as copy:
        copy.write(COPY_SIGNATURE)
        yield lambda block: copy.write(rows.encode(block))
        copy.write(COPY_TRAILER)


@contextmanager
def _pg_staging() -> Iterator[_Sink]:
    with connection.cursor() as cursor:
        _stage_create(cursor)
        with _binary_copy(cursor, STAGE_TABLE, _stat_fields()) as send:
            sink = _Sink(send, "staging")
            yield sink
        with _phase("staging: upsert into the table"):
            sink.counts = _stage_merge(cursor, sink.rows)


@contextmanager
def _executemany_staging() -> Iterator[_Sink]:
    columns = _stat_columns()
    insert = (
        f"INSERT INTO {STAGE_TABLE} ({', '.join(_q(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    with connection.cursor() as cursor:
        _stage_create(cursor)

        def send(table: pa.Table) -> None:
            cursor.executemany(insert, zip(*(c.to_pylist() for c in table.columns), strict=True))

        sink = _Sink(send, "staging")
        yield sink
        with _phase("staging: upsert into the table"):
            sink.counts = _stage_merge(cursor, sink.rows)


@dataclass(frozen=True)
class _SavedDdl:
    referenced: bool  # another table's foreign key points at this one
    drops: list[str]
    indexes: list[tuple[str, str]]  # (name, statement): keys and indexes
    foreign: list[tuple[str, str, str]]  # (name, statement, column)


def _droppable_ddl(cursor, db_table: str) -> _SavedDdl:
    """DDL to drop, then recreate, the table's foreign keys and indexes.

    Primary key and unique constraints stay when another table's foreign key points at them.
    Check constraints stay: they are cheap per row.
    """
    table = _q(db_table)
    cursor.execute(
        "SELECT EXISTS "
        "(SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass)",
        [db_table],
    )
    referenced = cursor.fetchone()[0]
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), "
        "(SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1]) "
        "FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY conname",
        [db_table],
    )
    constraints = [row for row in cursor.fetchall() if row[1] == "f" or not referenced]
    cursor.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass AND indexrelid NOT IN "
        "(SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass) ORDER BY 1",
        [db_table, db_table],
    )
    indexes = cursor.fetchall()
    foreign = [(name, ddl, column) for name, kind, ddl, column in constraints if kind == "f"]
    keys = [(name, ddl) for name, kind, ddl, _ in constraints if kind != "f"]

    def add(name: str, ddl: str) -> tuple[str, str]:
        return name, f"ALTER TABLE {table} ADD CONSTRAINT {_q(name)} {ddl}"

    return _SavedDdl(
        referenced=referenced,
        drops=[f"ALTER TABLE {table} DROP CONSTRAINT {_q(name)}" for name, *_ in foreign + keys]
        + [f"DROP INDEX {name}" for name, _ in indexes],
        indexes=[add(*key) for key in keys] + indexes,
        foreign=[
            (*add(name, ddl.removesuffix(" NOT VALID")), column) for name, ddl, column in foreign
        ],
    )


def _bulk_start(cursor, db_table: str) -> tuple[bool, int]:
    """Lock the table; return whether it is empty and the first id for new rows."""
    table = _q(db_table)
    # ALTER TABLE refuses a table with pending deferred trigger events: fire them now and
    # defer again, as Django's check_constraints() does.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(
        f"SELECT max(id), nextval(pg_get_serial_sequence(%s, 'id')) FROM {table}", [db_table]
    )
    old_max, next_id = cursor.fetchone()
    # New rows get ids from `start` on, so the rows they replace are told apart by id.
    return old_max is None, max((old_max or 0) + 1, next_id)


def _bulk_copy_options(cursor, table: str, empty: bool, ddl: _SavedDdl) -> str:
    """FREEZE for a load into an empty table (after the TRUNCATE that COPY FREEZE requires).

    Frozen rows go in with their pages marked all-visible: the rebuilds, the foreign-key checks
    and every later reader skip per-row visibility work, and no vacuum has to freeze them later.
    The usual caveat of TRUNCATE and FREEZE holds: a transaction whose snapshot predates the
    commit sees the rows once it is committed. A table other tables reference is not truncated.
    """
    if not empty or ddl.referenced:
        return ""
    cursor.execute(f"TRUNCATE {table}")
    return ", FREEZE"


def _bulk_delete_replaced(cursor, table: str, start: int) -> int:
    """Delete the older rows of the keys just loaded (ids below `start`); return how many."""
    match = " AND ".join(f"old.{_q(k)} = new.{_q(k)}" for k in STAT_KEY)
    with _phase("bulk: delete the replaced rows"):
        cursor.execute(
            f"DELETE FROM {table} AS old USING {table} AS new "
            f"WHERE new.id >= %s AND old.id < %s AND {match}",
            [start, start],
        )
    return cursor.rowcount


def _bulk_rebuild(cursor, table: str, ddl: _SavedDdl, checked: frozenset[str]) -> None:
    """Rebuild keys and indexes, analyse, then add the foreign keys back.

    A foreign key on a column in `checked` goes back NOT VALID: every value the load put there
    was checked to exist under lock (`_referenced_keys_check`), so re-reading the table would
    only repeat that; PostgreSQL enforces it on every later write all the same. Any other
    foreign key is checked by one join. Analysing first records the visibility map a frozen
    load set, so such a check may read a narrow index instead of the whole table.
    """
    for name, statement in ddl.indexes:
        with _phase(f"bulk: rebuild {name}"):
            cursor.execute(statement)
    # Planner statistics for the new contents, or the next queries plan for an empty table.
    with _phase("bulk: analyze"):
        cursor.execute(f"ANALYZE {table}")
    for name, statement, column in ddl.foreign:
        if column in checked:
            cursor.execute(f"{statement} NOT VALID")
            continue
        with _phase(f"bulk: check {name}"):
            cursor.execute(statement)


class _LoadedRows:
    """What a bulk load keeps of the rows it sends: the foreign keys they use and, for a load
    into an empty table (whose rows are then the whole table), what the scenario statistics
    are made of, so neither needs another pass over the table."""

    def __init__(self, maps: _Maps, whole_table: bool) -> None:
        self.whole_table = whole_table
        # Every key the rows may use, sorted, and a flag per key: marking a block is a binary
        # search, with no sort of the block.
        self._known = {
            "advertiser_id": np.sort(maps.advertisers.ids),
            "scenario_id": np.sort(maps.scenarios.ids),
        }
        self._used = {column: np.zeros(len(keys), bool) for column, keys in self._known.items()}
        self._activity: list[tuple[np.ndarray, ...]] = []

    def add(self, rows: pa.Table) -> None:
        """Note a block of rows whose dates are date32 and expenditure decimal128 (cents)."""
        keys = {column: rows.column(column).to_numpy() for column in self._used}
        for column, values in keys.items():
            self._used[column][np.searchsorted(self._known[column], values)] = True
        if self.whole_table:
            days = pc.cast(rows.column("date"), pa.int32()).to_numpy()
            cents = _unscaled(rows.column("expenditure"), 2)
            self._activity.append((keys["scenario_id"], keys["advertiser_id"], days, cents))

    def keys(self, column: str) -> np.ndarray:
        return self._known[column][self._used[column]]

    def activity(self) -> WindowActivity | None:
        """`advertisers.services.window_activity` of these rows (None unless whole_table)."""
        if not self.whole_table:
            return None
        if not self._activity:
            return WindowActivity(None, {})
        columns = zip(*self._activity, strict=True)
        scenario, advertiser, day, cents = (np.concatenate(c) for c in columns)
        last = int(day.max())
        active = (day > last - STATS_WINDOW_DAYS) & (cents > 0)
        by_scenario = {}
        for pk in np.unique(scenario[active]):
            mine = active & (scenario == pk)
            by_scenario[int(pk)] = (
                len(np.unique(advertiser[mine])),
                Decimal(int(cents[mine].sum())) / 100,
                int(mine.sum()),
            )
        return WindowActivity(UNIX_EPOCH + timedelta(days=last), by_scenario)


def _referenced_keys_check(cursor, loaded: _LoadedRows, maps: _Maps, source: str) -> frozenset[str]:
    """Check that every advertiser and scenario the rows point at still exists, and keep it so:
    the codes were mapped to keys before the lock, and a concurrent delete could have removed
    one since. Returns the columns checked."""
    for column, model, codes in (
        ("advertiser_id", Advertiser, maps.advertisers),
        ("scenario_id", Scenario, maps.scenarios),
    ):
        table = _q(model._meta.db_table)
        keys = loaded.keys(column)
        cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")  # no delete until this commits
        cursor.execute(
            f"SELECT k FROM unnest(%s::bigint[]) AS k WHERE NOT EXISTS "
            f"(SELECT 1 FROM {table} WHERE {_q(model._meta.pk.column)} = k) LIMIT 1",
            [keys.tolist()],
        )
        gone = cursor.fetchone()
        if gone:
            code = codes.codes[int(np.flatnonzero(codes.ids == gone[0])[0])].as_py()
            raise IngestError(
                [
                    f"{source}:0: {column}: {model._meta.verbose_name} {_show(code)} was deleted "
                    "while this load ran; load again"
                ]
            )
    return frozenset(("advertiser_id", "scenario_id"))


def _typed(rows: pa.Table) -> pa.Table:
    """Dates as date32 and money as decimals, converted once for every use of the block."""
    for i, field in enumerate(_stat_fields()):
        if isinstance(field, models.DecimalField):
            kind = pa.decimal128(38, field.decimal_places)
        elif isinstance(field, models.DateField):
            kind = pa.date32()
        else:
            continue
        rows = rows.set_column(i, field.column, pc.cast(rows.column(i), kind))
    return rows


@contextmanager
def _pg_bulk(maps: _Maps, source: str) -> Iterator[_Sink]:
    db_table = DailyStat._meta.db_table
    table = _q(db_table)
    with connection.cursor() as cursor:
        empty, start = _bulk_start(cursor, db_table)
        ddl = _droppable_ddl(cursor, db_table)
        for statement in ddl.drops:
            cursor.execute(statement)
        # Sorting and hashing a million rows: give this transaction room to do it in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        options = _bulk_copy_options(cursor, table, empty, ddl)
        fields = [DailyStat._meta.pk, *_stat_fields()]
        loaded = _LoadedRows(maps, whole_table=empty)
        with _binary_copy(cursor, table, fields, options) as send_rows:

            def send(rows: pa.Table) -> None:
                rows = _typed(rows)
                first = start + sink.rows
                ids = pa.array(np.arange(first, first + rows.num_rows, dtype=np.int64))
                send_rows(rows.add_column(0, DailyStat._meta.pk.column, ids))
                loaded.add(rows)

            sink = _Sink(send, "bulk")
            yield sink
            finishing = time.perf_counter()
        _log_since("bulk: wait for the server to end the COPY", finishing)
        checked = _referenced_keys_check(cursor, loaded, maps, source)
        replaced = 0 if empty else _bulk_delete_replaced(cursor, table, start)
        if sink.rows:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                [db_table, start + sink.rows - 1],
            )
        _bulk_rebuild(cursor, table, ddl, checked)
        sink.counts = TableCounts(inserted=sink.rows - replaced, updated=replaced)
        sink.activity = loaded.activity()


def _estimated_rows(source: _Source) -> int:
    if source.is_parquet:
        return pq.ParquetFile(source.path).metadata.num_rows
    size = source.path.stat().st_size
    with source.path.open("rb") as fh:
        sample = fh.read(1 << 20)
    return size * max(sample.count(b"\n"), 1) // max(len(sample), 1)


def _bulk_worthwhile(source: _Source) -> bool:
    """A large load into a table not much larger than the load: rebuilding beats upkeep."""
    rows = _estimated_rows(source)
    if rows < getattr(settings, "INGEST_BULK_MIN_ROWS", BULK_MIN_ROWS):
        return False
    limit = BULK_MAX_TABLE_RATIO * rows
    with connection.cursor() as cursor:
        table = _q(DailyStat._meta.db_table)
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) AS existing", [limit + 1]
        )
        return cursor.fetchone()[0] <= limit


def _stats_sink(source: _Source, maps: _Maps):
    if connection.vendor != "postgresql":
        return _executemany_staging()
    return _pg_bulk(maps, source.name) if _bulk_worthwhile(source) else _pg_staging()


def _stats_load(scan: _Scan, maps: _Maps, log: ProblemLog) -> _Sink | None:
    """Stream checked blocks into the database; raise IngestError (inside the sink) on a problem.

    Returns the sink, which holds the counts, or None when there were problems before."""
    if not log.clean:
        for _ in scan.blocks:  # nothing will be stored: only check
            pass
        return None
    try:
        with _stats_sink(scan.source, maps) as sink:
            with _phase(f"daily stats: read, check and send ({sink.strategy})"):
                for block in scan.blocks:
                    if log.clean:
                        sink.write(_stats_rows(block.batch, maps))
            # Raising here aborts the COPY; the caller's transaction then rolls everything back.
            log.raise_if_any()
    except (DatabaseError, psycopg.Error) as error:
        # The checks should leave the database nothing to refuse; if it does, say so plainly.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise IngestError(
            [f"{scan.source.name}:0: -: the database refused the rows ({reason}); please report it"]
        ) from error
    return sink


# --- Entry points --------------------------------------------------------------------------------


def contract_files(directory: FileArg) -> dict[str, Path]:
    """The contract files found in a directory, keyed scenarios / advertisers / stats.

    Looks for scenarios, advertisers and daily_stats, each as .csv or .parquet.
    """
    folder = Path(directory or ".")
    if not folder.is_dir():
        raise IngestError([f"{folder}: not a directory"])
    found: dict[str, Path] = {}
    for kind, stem in FILE_KINDS.items():
        matches = [
            folder / f"{stem}{suffix}"
            for suffix in SUFFIXES
            if (folder / f"{stem}{suffix}").is_file()
        ]
        if len(matches) > 1:
            raise IngestError(
                [f"{folder}: both {stem}.csv and {stem}.parquet; keep one or name the file to load"]
            )
        if matches:
            found[kind] = matches[0]
    if not found:
        raise IngestError(
            [f"{folder}: no scenarios, advertisers or daily_stats file (.csv or .parquet) in it"]
        )
    return found


def _sources(paths: dict[str, FileArg]) -> dict[str, _Source]:
    sources: dict[str, _Source] = {}
    problems: list[str] = []
    for order, (kind, given) in enumerate(paths.items()):
        if given is None:
            continue
        path = Path(given)
        if path.suffix.lower() not in SUFFIXES:
            problems.append(f"{path.name}:0: -: unsupported file type; use .csv or .parquet")
        elif not path.is_file():
            problems.append(f"{path.name}:0: -: file not found ({path})")
        else:
            sources[kind] = _Source(path, order)
    if problems:
        raise IngestError(problems)
    if not sources:
        raise IngestError(["nothing to load: give a scenarios, advertisers or daily stats file"])
    return sources


def ingest_files(
    *,
    scenarios: FileArg = None,
    advertisers: FileArg = None,
    stats: FileArg = None,
    ignore_unknown_columns: bool = False,
    progress: bool = False,
) -> IngestReport:
    """Check and load contract files, all or nothing; raise IngestError listing every problem.

    Loading the same files again leaves the same rows (rows are keyed by scenario code,
    advertiser id, and advertiser + scenario + date). Scenario statistics are refreshed after.
    """
    started = time.perf_counter()
    sources = _sources({"scenarios": scenarios, "advertisers": advertisers, "stats": stats})
    log = ProblemLog()
    counts: dict[str, TableCounts | None] = {}
    activity: WindowActivity | None = None
    with transaction.atomic():
        stored = _Maps(
            CodeMap.stored(Scenario, "code"), CodeMap.stored(Advertiser, "advertiser_id")
        )
        tables = {
            kind: _read_whole(_scan(sources[kind], spec, ignore_unknown_columns, log, progress))
            for kind, spec in (
                ("scenarios", _scenarios_spec()),
                ("advertisers", _advertisers_spec()),
            )
            if kind in sources
        }
        maps = _reference_load(tables, stored, log, counts)
        if "stats" in sources:
            scan = _scan(sources["stats"], _stats_spec(maps), ignore_unknown_columns, log, progress)
            sink = _stats_load(scan, maps, log)
            counts["stats"], activity = (sink.counts, sink.activity) if sink else (None, None)
        log.raise_if_any()
        with _phase("scenario statistics"):
            scenario_stats_refresh(activity)
    return IngestReport(
        scenarios=counts.get("scenarios"),
        advertisers=counts.get("advertisers"),
        daily_stats=counts.get("stats"),
        seconds=time.perf_counter() - started,
    )


def _with_file_codes(stored: CodeMap, table: pa.Table | None, key: str) -> CodeMap:
    if table is None or key not in table.column_names:
        return stored
    return stored.with_codes(table.column(key))


def _reference_load(
    tables: dict[str, pa.Table], stored: _Maps, log: ProblemLog, counts: dict
) -> _Maps:
    """Upsert checked reference files; return the codes daily stats may use."""
    if not log.clean:
        # Nothing will be stored, but daily stats are still checked against these codes.
        return _Maps(
            _with_file_codes(stored.scenarios, tables.get("scenarios"), "code"),
            _with_file_codes(stored.advertisers, tables.get("advertisers"), "advertiser_id"),
        )
    scenarios, advertisers = stored.scenarios, stored.advertisers
    if "scenarios" in tables:
        counts["scenarios"] = _scenarios_upsert(tables["scenarios"], stored.scenarios)
        scenarios = CodeMap.stored(Scenario, "code")
    if "advertisers" in tables:
        counts["advertisers"] = _advertisers_upsert(tables["advertisers"], stored.advertisers)
        advertisers = CodeMap.stored(Advertiser, "advertiser_id")
    return _Maps(scenarios, advertisers)
