"""Idempotent requests: the first request with a key runs and its response is stored; a retry
with the same key and the same request gets the stored response; the same key with a different
request is a conflict.

The record is inserted (INSERT ... ON CONFLICT DO NOTHING) before the work runs, in the same
transaction. A concurrent retry's insert waits on the unique index until the first commits, then
finds the record and replays it: the work runs once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from campaigns.models import ApiKey, IdempotencyRecord


class IdempotencyConflict(Exception):
    """The key was used before with a different request."""


@dataclass(frozen=True)
class IdempotentResponse:
    status: int
    body: dict
    replayed: bool


def request_fingerprint(*, method: str, path: str, data: Any) -> str:
    """SHA-256 of the request; the body is canonical JSON, so key order and spacing do not count."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method}\n{path}\n{body}".encode()).hexdigest()


def idempotent_execute(
    *,
    api_key: ApiKey,
    key: str,
    fingerprint: str,
    operation: Callable[[], tuple[int, dict]],
) -> IdempotentResponse:
    """Run `operation` (returning status and body) once per (api_key, key)."""
    with transaction.atomic():
        IdempotencyRecord.objects.bulk_create(
            [IdempotencyRecord(api_key=api_key, key=key, fingerprint=fingerprint)],
            ignore_conflicts=True,
        )
        record = IdempotencyRecord.objects.get(api_key=api_key, key=key)
        # Records commit with their response, so status 0 means the row this call inserted.
        if record.response_status != 0:
            return _replay(record=record, fingerprint=fingerprint)
        status, body = operation()
        record.response_status, record.response_body = status, body
        record.save(update_fields=["response_status", "response_body"])
    return IdempotentResponse(status=status, body=body, replayed=False)


def _conflict(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"Idempotency-Key {key!r} was already used with a different request; "
        "send a new key for a new request."
    )


def _replay(*, record: IdempotencyRecord, fingerprint: str) -> IdempotentResponse:
    if record.fingerprint != fingerprint:
        raise _conflict(record.key)
    return IdempotentResponse(
        status=record.response_status, body=record.response_body, replayed=True
    )


def idempotency_records_purge(*, older_than: datetime) -> int:
    """Forget records older than the retry horizon; returns how many were deleted."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=older_than).delete()
    return deleted


@dataclass(frozen=True)
class IdempotentClaim:
    """The outcome of claiming keys for a batch: records to fill, and stored answers."""

    fresh: dict[str, IdempotencyRecord]  # key -> the record this batch inserted
    replayed: dict[str, IdempotentResponse]  # key -> the stored answer, same request
    conflicts: dict[str, str]  # key -> why it cannot be used (another request)


def idempotency_claim_many(*, api_key: ApiKey, fingerprints: dict[str, str]) -> IdempotentClaim:
    """idempotent_execute for many keys at once, inside the caller's transaction.

    Inserts a record for every key (ON CONFLICT DO NOTHING; a concurrent batch with one of the
    keys waits on the unique index until it commits) and sorts the keys: fresh ones for the
    caller to run and fill with `idempotency_records_fill`, replays, and conflicts.
    """
    IdempotencyRecord.objects.bulk_create(
        [IdempotencyRecord(api_key=api_key, key=k, fingerprint=f) for k, f in fingerprints.items()],
        ignore_conflicts=True,
    )
    records = IdempotencyRecord.objects.filter(api_key=api_key, key__in=list(fingerprints))
    fresh, replayed, conflicts = {}, {}, {}
    for record in records:
        if record.response_status == 0:
            fresh[record.key] = record
        elif record.fingerprint != fingerprints[record.key]:
            conflicts[record.key] = str(_conflict(record.key))
        else:
            replayed[record.key] = IdempotentResponse(
                status=record.response_status, body=record.response_body, replayed=True
            )
    return IdempotentClaim(fresh=fresh, replayed=replayed, conflicts=conflicts)


def idempotency_records_fill(
    *, records: dict[str, IdempotencyRecord], outcomes: dict[str, tuple[int, dict]]
) -> None:
    """Store the answers of the fresh records of a batch, in one statement."""
    for key, record in records.items():
        record.response_status, record.response_body = outcomes[key]
    IdempotencyRecord.objects.bulk_update(
        list(records.values()), ["response_status", "response_body"], batch_size=500
    )
