"""The PostgreSQL bulk load of daily stats.

Used for at least INGEST_BULK_MIN_ROWS rows into a table holding at most BULK_MAX_TABLE_RATIO
times as many (a first load, a backfill, a full reload): the table's indexes and foreign keys
are dropped, rows are COPYed straight in, the rows they replace are deleted with one join, the
keys and indexes are rebuilt from their saved definitions, the table is analysed and the
foreign keys are added back: NOT VALID for the advertiser and the scenario, whose every used key
was checked under lock (`_referenced_keys_check`), any other checked by one join. Per-row index
upkeep and per-row foreign-key triggers make the staging path cost ten times a plain COPY or
more; a rebuild is one sort per index. The table is locked (ACCESS EXCLUSIVE) meanwhile, and it
is the same transaction, so a failure restores the table as it was. Replaced rows get new ids.
Into an empty table the rows are COPYed frozen (`_bulk_copy_options`), and the scenario
statistics are gathered while the rows stream (`LoadedRows`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.conf import settings
from django.db import connection, models

from advertisers.ingestion.contract import Maps
from advertisers.ingestion.loading import STAT_KEY, UNIX_EPOCH, Sink, quote, stat_fields
from advertisers.ingestion.pg_copy import binary_copy, unscaled
from advertisers.ingestion.problems import IngestError, Source
from advertisers.ingestion.report import TableCounts
from advertisers.ingestion.rules import show
from advertisers.ingestion.timing import log_since, phase
from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.services import STATS_WINDOW_DAYS, WindowActivity

# Overridable with settings.INGEST_BULK_MIN_ROWS (tests lower it to exercise the bulk path).
BULK_MIN_ROWS = 100_000
# Bulk loads while the table holds at most this many times the load's rows: staging costs about
# 35 us per inserted and 85 us per replaced row, a rebuild about 5 us per row already there.
BULK_MAX_TABLE_RATIO = 4


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
    table = quote(db_table)
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
        return name, f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {ddl}"

    return _SavedDdl(
        referenced=referenced,
        drops=[f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}" for name, *_ in foreign + keys]
        + [f"DROP INDEX {name}" for name, _ in indexes],
        indexes=[add(*key) for key in keys] + indexes,
        foreign=[
            (*add(name, ddl.removesuffix(" NOT VALID")), column) for name, ddl, column in foreign
        ],
    )


def _bulk_start(cursor, db_table: str) -> tuple[bool, int]:
    """Lock the table; return whether it is empty and the first id for new rows."""
    table = quote(db_table)
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
    match = " AND ".join(f"old.{quote(k)} = new.{quote(k)}" for k in STAT_KEY)
    with phase("bulk: delete the replaced rows"):
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
        with phase(f"bulk: rebuild {name}"):
            cursor.execute(statement)
    # Planner statistics for the new contents, or the next queries plan for an empty table.
    with phase("bulk: analyze"):
        cursor.execute(f"ANALYZE {table}")
    for name, statement, column in ddl.foreign:
        if column in checked:
            cursor.execute(f"{statement} NOT VALID")
            continue
        with phase(f"bulk: check {name}"):
            cursor.execute(statement)


class LoadedRows:
    """What a bulk load keeps of the rows it sends: the foreign keys they use and, for a load
    into an empty table (whose rows are then the whole table), what the scenario statistics
    are made of, so neither needs another pass over the table."""

    def __init__(self, maps: Maps, whole_table: bool) -> None:
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
            cents = unscaled(rows.column("expenditure"), 2)
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


def _referenced_keys_check(cursor, loaded: LoadedRows, maps: Maps, source: str) -> frozenset[str]:
    """Check that every advertiser and scenario the rows point at still exists, and keep it so:
    the codes were mapped to keys before the lock, and a concurrent delete could have removed
    one since. Returns the columns checked."""
    for column, model, codes in (
        ("advertiser_id", Advertiser, maps.advertisers),
        ("scenario_id", Scenario, maps.scenarios),
    ):
        table = quote(model._meta.db_table)
        keys = loaded.keys(column)
        cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")  # no delete until this commits
        cursor.execute(
            f"SELECT k FROM unnest(%s::bigint[]) AS k WHERE NOT EXISTS "
            f"(SELECT 1 FROM {table} WHERE {quote(model._meta.pk.column)} = k) LIMIT 1",
            [keys.tolist()],
        )
        gone = cursor.fetchone()
        if gone:
            code = codes.codes[int(np.flatnonzero(codes.ids == gone[0])[0])].as_py()
            raise IngestError(
                [
                    f"{source}:0: {column}: {model._meta.verbose_name} {show(code)} was deleted "
                    "while this load ran; load again"
                ]
            )
    return frozenset(("advertiser_id", "scenario_id"))


def _typed(rows: pa.Table) -> pa.Table:
    """Dates as date32 and money as decimals, converted once for every use of the block."""
    for i, field in enumerate(stat_fields()):
        if isinstance(field, models.DecimalField):
            kind = pa.decimal128(38, field.decimal_places)
        elif isinstance(field, models.DateField):
            kind = pa.date32()
        else:
            continue
        rows = rows.set_column(i, field.column, pc.cast(rows.column(i), kind))
    return rows


@contextmanager
def bulk_sink(maps: Maps, source: str) -> Iterator[Sink]:
    db_table = DailyStat._meta.db_table
    table = quote(db_table)
    with connection.cursor() as cursor:
        empty, start = _bulk_start(cursor, db_table)
        ddl = _droppable_ddl(cursor, db_table)
        for statement in ddl.drops:
            cursor.execute(statement)
        # Sorting and hashing a million rows: give this transaction room to do it in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        options = _bulk_copy_options(cursor, table, empty, ddl)
        fields = [DailyStat._meta.pk, *stat_fields()]
        loaded = LoadedRows(maps, whole_table=empty)
        with binary_copy(cursor, table, fields, options) as send_rows:

            def send(rows: pa.Table) -> None:
                rows = _typed(rows)
                first = start + sink.rows
                ids = pa.array(np.arange(first, first + rows.num_rows, dtype=np.int64))
                send_rows(rows.add_column(0, DailyStat._meta.pk.column, ids))
                loaded.add(rows)

            sink = Sink(send, "bulk")
            yield sink
            finishing = time.perf_counter()
        log_since("bulk: wait for the server to end the COPY", finishing)
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


def _estimated_rows(source: Source) -> int:
    if source.is_parquet:
        return pq.ParquetFile(source.path).metadata.num_rows
    size = source.path.stat().st_size
    with source.path.open("rb") as fh:
        sample = fh.read(1 << 20)
    return size * max(sample.count(b"\n"), 1) // max(len(sample), 1)


def bulk_worthwhile(source: Source) -> bool:
    """A large load into a table not much larger than the load: rebuilding beats upkeep."""
    rows = _estimated_rows(source)
    if rows < getattr(settings, "INGEST_BULK_MIN_ROWS", BULK_MIN_ROWS):
        return False
    limit = BULK_MAX_TABLE_RATIO * rows
    with connection.cursor() as cursor:
        table = quote(DailyStat._meta.db_table)
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) AS existing", [limit + 1]
        )
        return cursor.fetchone()[0] <= limit
