"""Probes for orchestration: /healthz (liveness: the process answers, touches nothing) and
/readyz (readiness: the database, the cache and the broker answer). No key needed; they tell
no more than up or down and which service is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from incentive_platform.outages import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

# Seconds a readiness check may wait on one service.
CHECK_TIMEOUT = 2


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _cache() -> str:
    cache.set("readyz:probe", "1", 10)
    if cache.get("readyz:probe") != "1":
        raise RuntimeError("a value written was not read back")
    return "ok"


def _broker() -> str:
    if not settings.CELERY_BROKER_URL:
        return "ok (none: tasks run in-process)"
    from incentive_platform.celery_app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT)
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {"database": _database, "cache": _cache, "broker": _broker}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results, ready = {}, True
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # a probe reports every failure, it does not raise
            logger.warning("readyz: %s is not ready: %s", name, exc)
            results[name] = f"unavailable: {type(exc).__name__}"
            ready = False
    if ready:
        return JsonResponse({"status": "ready", "checks": results})
    return JsonResponse(
        {"status": "not ready", "checks": results},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
