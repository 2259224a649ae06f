"""Telling an outage of a backing service (database, cache, broker) from a bug.

An outage is worth a short, clear answer: a JSON 503 with Retry-After from the API, one line and
a non-zero exit from a command. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import InterfaceError, OperationalError

# How long a client should wait before retrying during an outage.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Outage:
    service: str  # "database", "cache" or "broker"
    setting: str  # the variable that points at it
    reason: str  # the first line of the driver's message

    def sentence(self) -> str:
        return f"the {self.service} is unavailable ({self.reason}); check {self.setting}."


def _classify(exc: BaseException) -> tuple[str, str] | None:
    if isinstance(exc, OperationalError | InterfaceError):
        return "database", "DATABASE_URL"
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis comes with celery[redis]
        redis = None
    if redis is not None and isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
    ):
        return "cache", "CACHE_URL"
    try:
        import kombu.exceptions
    except ImportError:  # pragma: no cover - kombu comes with celery
        return None
    if isinstance(exc, kombu.exceptions.OperationalError):
        return "broker", "CELERY_BROKER_URL"
    return None


def outage_of(exc: BaseException) -> Outage | None:
    """The outage behind `exc` (or an exception it was raised from); None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify(current)
        if found is not None:
            lines = str(current).strip().splitlines()
            reason = lines[0].strip() if lines else type(current).__name__
            return Outage(service=found[0], setting=found[1], reason=reason[:300])
        current = current.__cause__ or current.__context__
    return None
