"""The benchmarks' PostgreSQL database: refused unless its name says "bench", created if missing.

The benchmarks truncate and reload tables, so they only ever run against a database reserved
for them. Imported by the scripts in this folder (run as `python bench/NAME.py`, which puts
this folder on sys.path).
"""

from __future__ import annotations

import sys
from urllib.parse import urlparse


def database_ensure(url: str) -> None:
    """Create the benchmark database `url` names when it does not exist yet."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        sys.exit(f"{url!r} is not a PostgreSQL URL: the benchmarks need PostgreSQL.")
    name = parsed.path.lstrip("/")
    if "bench" not in name:
        sys.exit(
            f"refusing to use database {name!r}: a benchmark database name must contain 'bench'."
        )
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
