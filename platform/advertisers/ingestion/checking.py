"""Checking a file: its header, then each block by the rules, then duplicate keys over all rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from advertisers.ingestion.contract import FileSpec
from advertisers.ingestion.plausibility import RowCheck, Values
from advertisers.ingestion.problems import ProblemLog, Source
from advertisers.ingestion.reading import (
    Block,
    csv_blocks,
    csv_header,
    parquet_blocks,
    without_blank_rows,
)
from advertisers.ingestion.rules import Rule

PROGRESS_MIN_BYTES = 4 << 20


def _check_header(
    source: Source, spec: FileSpec, header: list[str], ignore_unknown: bool, log: ProblemLog
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

    def report(self, source: Source, log: ProblemLog) -> None:
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
class Scan:
    """A file's checked blocks; iterate it to the end to run the checks over all rows."""

    source: Source
    columns: list[str]
    blocks: Iterator[Block]


def scan_file(
    source: Source,
    spec: FileSpec,
    ignore_unknown: bool,
    log: ProblemLog,
    progress: bool,
    *,
    doubts: ProblemLog | None = None,
) -> Scan:
    """Check the header now; rows are checked as the returned blocks are read.

    Implausible values go to `doubts` (by default `log`, where they reject the load)."""
    parquet = None
    if source.is_parquet:
        try:
            parquet = pq.ParquetFile(source.path)
        except (pa.ArrowInvalid, OSError) as exc:
            log.add(source, 1, "-", f"cannot be read as Parquet ({exc})")
            return Scan(source, [], iter(()))
        header = parquet.schema_arrow.names
    else:
        header = csv_header(source, log)
    columns = _check_header(source, spec, header, ignore_unknown, log) if header else None
    if columns is None:
        return Scan(source, [], iter(()))
    reader = (
        parquet_blocks(source, parquet, columns, log)
        if parquet is not None
        else csv_blocks(source, header, columns, log)  # type: ignore[arg-type]
    )
    checked = _checked(source, spec, columns, reader, (log, doubts or log), progress)
    return Scan(source, columns, checked)


def _checked(
    source: Source,
    spec: FileSpec,
    columns: list[str],
    reader: Iterator[Block],
    logs: tuple[ProblemLog, ProblemLog],
    progress: bool,
) -> Iterator[Block]:
    log, doubts = logs
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
            block = without_blank_rows(raw)
            ok = _check_block(source, spec, columns, block, log)
            _check_plausible(source, spec, columns, block, ok, doubts)
            keys.add(block)
            bar.update(min(raw.source_bytes, size - bar.n))
            yield block
        bar.update(size - bar.n)
    keys.report(source, log)


def _check_block(
    source: Source, spec: FileSpec, columns: list[str], block: Block, log: ProblemLog
) -> dict[str, np.ndarray]:
    """Check each column by its rule; return which rows passed, per column."""
    passed = {}
    for order, name in enumerate(columns):
        rule = spec.rule(name)
        values = block.batch.column(name)
        passed[name] = ok = rule.ok(values)
        bad = np.flatnonzero(~ok)
        if len(bad):
            log.add_many(source, block.lines[bad], name, partial(_reason, rule, values, bad), order)
    return passed


def _check_plausible(
    source: Source,
    spec: FileSpec,
    columns: list[str],
    block: Block,
    passed: dict[str, np.ndarray],
    doubts: ProblemLog,
) -> None:
    """Run the file's plausibility checks over the block's well-formed values."""
    values = Values(block.batch, passed)
    for check in spec.checks:
        bad = np.flatnonzero(check.bad(values))
        if len(bad):
            reason_of = partial(_row_reason, check, block.batch, bad)
            order = columns.index(check.column)
            doubts.add_implausible(source, block.lines[bad], check.column, reason_of, order)


def _row_reason(check: RowCheck, batch: pa.RecordBatch, bad: np.ndarray, i: int) -> str:
    return check.reason(batch, int(bad[i]))


def _reason(rule: Rule, values: pa.Array, bad: np.ndarray, i: int) -> str:
    return rule.reason(values[int(bad[i])].as_py())


def read_whole(scan: Scan) -> pa.Table:
    batches = [block.batch for block in scan.blocks]
    schema = pa.schema([(name, pa.string()) for name in scan.columns])
    return pa.Table.from_batches(batches, schema=schema)
