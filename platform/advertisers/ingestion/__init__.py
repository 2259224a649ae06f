"""Ingestion of the data contract (DESIGN section 3): check whole files, then load them at once.

Three files, each optional: scenarios, advertisers and daily stats, as UTF-8 CSV with a header
row or as Parquet with the same columns. A load is all or nothing.

Checking (`checking`, with `reading`, `rules` and `contract`). Every file is read block by block
with pyarrow, every column as text, and each block is checked by vectorised rules (`Rule.ok`,
one pass of pyarrow compute per column). A problem is reported as `file:line: column: reason`
(`problems`); the first PROBLEM_LIMIT, in file and line order, are worded and the rest are
counted. Line 1 is the header; Parquet rows are numbered as if the file were that CSV (first
row = line 2). Blank lines are skipped. Duplicate keys are found at the end of a file, over all
its rows. Advertiser and scenario codes in daily stats must be defined in the same load or
already stored.

Loading (`run`). Scenarios and advertisers are small reference files: checked whole, then
upserted by their code (`reference_load`). Daily stats may be millions of rows: each checked
block is mapped to foreign keys (vectorised lookups) and streamed to the database while the next
block is read, inside the same transaction; any problem, found early or late, raises
IngestError inside it, so nothing is stored. Daily stats use one of two strategies:

- staging (both backends, any size): rows go to a temporary table (binary COPY on PostgreSQL,
  `pg_copy`; batched executemany elsewhere, `generic_load`), then one INSERT ... SELECT ...
  ON CONFLICT DO UPDATE replaces the rows of the same (advertiser, scenario, date) and adds the
  others (`loading`).
- bulk (PostgreSQL, a large load into a table not much larger, `pg_bulk`): the table's indexes
  and foreign keys are dropped, rows are COPYed straight in, and the keys and indexes are
  rebuilt in the same transaction.

Scenario statistics are refreshed in the same transaction (`scenario_stats_refresh`); after a
bulk load into an empty table, from the figures gathered while the rows streamed.

Plausibility (`plausibility`). Values that each pass their rule may still be impossible
together: clicks above impressions, a date after the load date, stats before their scenario's
launch or their advertiser's registration. They reject the load like any other problem, unless
the load allows implausible values: then they are loaded and reported as warnings.

Modules import only from those listed before them: timing, problems, rules, plausibility,
contract, reading, checking, report, loading, reference_load, generic_load, pg_copy, pg_bulk, run.
"""

from advertisers.ingestion.problems import PROBLEM_LIMIT, IngestError
from advertisers.ingestion.report import IngestReport, TableCounts
from advertisers.ingestion.run import contract_files, ingest_files

__all__ = [
    "PROBLEM_LIMIT",
    "IngestError",
    "IngestReport",
    "TableCounts",
    "contract_files",
    "ingest_files",
]
