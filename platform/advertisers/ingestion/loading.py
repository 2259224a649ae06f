"""What both daily-stats loaders share: the DailyStat columns, the sink, the staging table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pyarrow as pa
from django.db import connection, models

from advertisers.ingestion.contract import Maps
from advertisers.ingestion.report import TableCounts
from advertisers.models import DailyStat
from advertisers.services import WindowActivity

STAGE_TABLE = "ingest_daily_stats_stage"

STAT_KEY = ("advertiser_id", "scenario_id", "date")
UNIX_EPOCH = date(1970, 1, 1)


def stat_fields() -> list[models.Field]:
    names = ["advertiser", "scenario", "date", *DailyStat.COUNTERS]
    return [DailyStat._meta.get_field(name) for name in names]


def stat_columns() -> list[str]:
    return [field.column for field in stat_fields()]


def stats_rows(batch: pa.RecordBatch, maps: Maps) -> pa.Table:
    """A checked block as DailyStat columns: codes become foreign keys, the rest stays text."""
    arrays = [
        maps.advertisers.ids_for(batch.column("advertiser_id")),
        maps.scenarios.ids_for(batch.column("scenario")),
        batch.column("date"),
        *[batch.column(name) for name in DailyStat.COUNTERS],
    ]
    return pa.Table.from_arrays(arrays, names=stat_columns())


class Sink:
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


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def stage_create(cursor) -> None:
    columns = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in stat_fields())
    cursor.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")
    on_commit = " ON COMMIT DROP" if connection.vendor == "postgresql" else ""
    cursor.execute(f"CREATE TEMPORARY TABLE {STAGE_TABLE} ({columns}){on_commit}")


def stage_merge(cursor, rows: int) -> TableCounts:
    """Upsert the staged rows into DailyStat in one statement; count the replaced ones first."""
    table = quote(DailyStat._meta.db_table)
    columns = ", ".join(quote(c) for c in stat_columns())
    match = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in STAT_KEY)
    cursor.execute(f"SELECT count(*) FROM {STAGE_TABLE} s JOIN {table} t ON {match}")
    updated = cursor.fetchone()[0]
    updates = ", ".join(
        f"{quote(c)} = excluded.{quote(c)}" for c in stat_columns() if c not in STAT_KEY
    )
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {STAGE_TABLE} WHERE true "
        f"ON CONFLICT ({', '.join(quote(k) for k in STAT_KEY)}) DO UPDATE SET {updates}"
    )
    cursor.execute(f"DROP TABLE {STAGE_TABLE}")
    return TableCounts(inserted=rows - updated, updated=updated)
