"""Reading CSV and Parquet files block by block, every column as text, with file lines."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from advertisers.ingestion.problems import ProblemLog, Source
from advertisers.ingestion.rules import bool_mask

CSV_BLOCK_BYTES = 2 << 20  # small enough that the server starts on the first block soon
PARQUET_BATCH_ROWS = 131_072


@dataclass(frozen=True, eq=False)
class Block:
    batch: pa.RecordBatch  # text columns
    lines: np.ndarray  # the file line of each row
    source_bytes: int  # about how much of the file it came from (for the progress bar)


def csv_header(source: Source, log: ProblemLog) -> list[str] | None:
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


def _line_numbers(first_row: int, count: int, skipped_lines: list[int]) -> np.ndarray:
    """File lines of kept rows first_row.., given the lines of rows pyarrow skipped as invalid."""
    rows = np.arange(first_row, first_row + count)
    # The j-th skipped line comes after (line - 2 - j) kept rows: every later row moves down one.
    thresholds = np.asarray(skipped_lines, dtype=np.int64) - 2 - np.arange(len(skipped_lines))
    return rows + 2 + np.searchsorted(thresholds, rows, side="right")


def csv_blocks(
    source: Source, header: list[str], columns: list[str], log: ProblemLog
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


def parquet_blocks(
    source: Source, file: pq.ParquetFile, columns: list[str], log: ProblemLog
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


def without_blank_rows(block: Block) -> Block:
    """Drop rows whose every field is empty (blank lines)."""
    batch = block.batch
    if batch.num_columns == 0 or not pc.any(pc.equal(pc.binary_length(batch.column(0)), 0)).as_py():
        return block
    blank = np.ones(batch.num_rows, dtype=bool)
    for column in batch.columns:
        blank &= bool_mask(pc.equal(pc.binary_length(column), 0))
    if not blank.any():
        return block
    return Block(batch.filter(pa.array(~blank)), block.lines[~blank], block.source_bytes)
