"""Set-based row writes: many rows, each with its own values, in one statement.

Django's bulk_update builds a CASE WHEN per field and row, and bulk_create a model instance per
row; for a batch of 500 events that costs more than the whole rest of the request. On
PostgreSQL the rows travel instead as one JSON document, unpacked by json_to_recordset:

    UPDATE t SET a = v.a, ... FROM json_to_recordset(%s) AS v(id bigint, a <type>, ...)
    WHERE t.id = v.id

Other databases (the embedded SQLite) fall back to bulk_update and bulk_create.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from django.db import connection, models


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _document(rows: Sequence[dict]) -> str:
    return json.dumps(rows, default=_json_default, separators=(",", ":"))


def _recordset(fields: Sequence[models.Field]) -> str:
    return ", ".join(f'"{f.column}" {f.db_type(connection)}' for f in fields)


def rows_update(*, objects: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write `fields` of every object (by primary key) in one statement."""
    if not objects:
        return
    model = type(objects[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_update(objects, list(fields), batch_size=500)
        return
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    rows = [
        {meta.pk.column: o.pk, **{f.column: getattr(o, f.attname) for f in columns}}
        for o in objects
    ]
    sets = ", ".join(f'"{f.column}" = v."{f.column}"' for f in columns)
    sql = (
        f'UPDATE "{meta.db_table}" AS t SET {sets} '
        f"FROM json_to_recordset(%s::json) AS v({_recordset([meta.pk, *columns])}) "
        f'WHERE t."{meta.pk.column}" = v."{meta.pk.column}"'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_document(rows)])


def rows_insert(
    *,
    model: type[models.Model],
    rows: Sequence[dict],
    skip_conflicts: bool = False,
    returning: str | None = None,
) -> list:
    """Insert rows (dicts of field name -> value, the same names in every row) at once.

    `skip_conflicts`: ON CONFLICT DO NOTHING. `returning`: a field whose values of the rows
    actually inserted are returned (PostgreSQL only; elsewhere every row's value).
    """
    if not rows:
        return []
    meta = model._meta
    keys = list(rows[0])  # field names or attnames ("task_id")
    columns = [meta.get_field(key) for key in keys]
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            [model(**row) for row in rows], ignore_conflicts=skip_conflicts, batch_size=500
        )
        return [row[returning] for row in rows] if returning else []
    names = ", ".join(f'"{f.column}"' for f in columns)
    sql = (
        f'INSERT INTO "{meta.db_table}" ({names}) SELECT {names} '
        f"FROM json_to_recordset(%s::json) AS v({_recordset(columns)})"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f' RETURNING "{meta.get_field(returning).column}"'
    document = _document(
        [{f.column: row[key] for key, f in zip(keys, columns, strict=True)} for row in rows]
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [document])
        return [value for (value,) in cursor.fetchall()] if returning else []
