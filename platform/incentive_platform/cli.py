"""The command line's answer to a database that is not ready: one line naming what is missing
and the command that fixes it, instead of a traceback from deep inside a command."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor


def database_not_ready(exc: DatabaseError) -> str | None:
    """The one-line explanation when `exc` comes from an absent or unmigrated database; None when
    the database is up to date (then `exc` is a real error and its traceback is wanted)."""
    name = settings.DATABASES["default"]["NAME"]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "does not exist" in text and "database" in text and "relation" not in text:
        return (
            f"error: the database {name!r} does not exist ({text}); create it, e.g. "
            f"`createdb {name}`, then run `python manage.py migrate`."
        )
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        return None
    if not pending:
        return None
    first = pending[0][0]
    return (
        f"error: the database {name!r} is not migrated ({len(pending)} migration(s) pending, "
        f"from {first.app_label}.{first.name}; {text}); run `python manage.py migrate` first."
    )
