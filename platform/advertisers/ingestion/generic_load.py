"""The generic daily-stats load (any backend but PostgreSQL): batched executemany into the
staging table, then the shared upsert."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
from django.db import connection

from advertisers.ingestion.loading import (
    STAGE_TABLE,
    Sink,
    quote,
    stage_create,
    stage_merge,
    stat_columns,
)
from advertisers.ingestion.timing import phase


@contextmanager
def executemany_staging() -> Iterator[Sink]:
    columns = stat_columns()
    insert = (
        f"INSERT INTO {STAGE_TABLE} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    with connection.cursor() as cursor:
        stage_create(cursor)

        def send(table: pa.Table) -> None:
            cursor.executemany(insert, zip(*(c.to_pylist() for c in table.columns), strict=True))

        sink = Sink(send, "staging")
        yield sink
        with phase("staging: upsert into the table"):
            sink.counts = stage_merge(cursor, sink.rows)
