"""Set-based row updates: many rows, each with its own values, in one statement.

Django's bulk_update builds a CASE WHEN per field and row; for a batch of 500 that costs more
than the whole rest of the request. On PostgreSQL this sends one array per column instead:

    UPDATE t SET a = v.a, ... FROM unnest(%s::bigint[], %s::<type of a>[], ...) AS v(id, a, ...)
    WHERE t.id = v.id

Other databases (the embedded SQLite) fall back to bulk_update.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection, models


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
    arrays, casts, sets = [[o.pk for o in objects]], ["%s::bigint[]"], []
    for field in columns:
        values = [getattr(o, field.attname) for o in objects]
        if isinstance(field, models.JSONField):  # sent as text, parsed by the server
            arrays.append([json.dumps(v) for v in values])
            casts.append("%s::text[]")
            sets.append(f'"{field.column}" = v."{field.column}"::jsonb')
            continue
        arrays.append(values)
        casts.append(f"%s::{field.db_type(connection)}[]")
        sets.append(f'"{field.column}" = v."{field.column}"')
    names = ", ".join(['"id"', *(f'"{f.column}"' for f in columns)])
    sql = (
        f'UPDATE "{meta.db_table}" AS t SET {", ".join(sets)} '
        f'FROM unnest({", ".join(casts)}) AS v({names}) WHERE t."{meta.pk.column}" = v."id"'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)
