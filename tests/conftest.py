"""Shared test set-up: which real services are here, and fixtures every area uses.

The suite runs against the real PostgreSQL and Redis (`make test` points DATABASE_URL and
TEST_REDIS_URL at the local servers). Outside CI a machine without them may fall back to
SQLite; tests marked `postgres` or `redis` are then skipped with the reason printed. With
CI=true a missing service stops the run instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _tcp_reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def redis_available() -> bool:
    return _tcp_reachable(TEST_REDIS_URL, 6379)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing: dict[str, str] = {}
    if not on_postgres():
        missing["postgres"] = "DATABASE_URL is not PostgreSQL"
    if not redis_available():
        missing["redis"] = f"no Redis at {TEST_REDIS_URL}"
    if IN_CI and missing:
        raise pytest.UsageError(f"CI=true and a required service is missing: {missing}")
    for item in items:
        for marker, reason in missing.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def redis_url() -> str:
    return TEST_REDIS_URL
