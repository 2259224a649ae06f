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
from django.utils import timezone

from campaigns.models import ApiKey, IdempotencyRecord
from campaigns.services.bulk import rows_insert


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
class StoredAnswers:
    """What the records say about a batch's keys: stored answers, and keys of other requests."""

    replayed: dict[str, IdempotentResponse]  # key -> the stored answer, same request
    conflicts: dict[str, str]  # key -> why it cannot be used (another request)


class IdempotencyRace(Exception):
    """A concurrent request stored an answer for one of the keys first: run the batch again."""


def idempotency_answers_stored(*, api_key: ApiKey, fingerprints: dict[str, str]) -> StoredAnswers:
    """The committed records of these keys: replays of the same request, or conflicts."""
    records = IdempotencyRecord.objects.filter(api_key=api_key, key__in=list(fingerprints)).only(
        "key", "fingerprint", "response_status", "response_body"
    )
    replayed, conflicts = {}, {}
    for record in records:
        if record.fingerprint != fingerprints[record.key]:
            conflicts[record.key] = str(_conflict(record.key))
        else:
            replayed[record.key] = IdempotentResponse(
                status=record.response_status, body=record.response_body, replayed=True
            )
    return StoredAnswers(replayed=replayed, conflicts=conflicts)


def idempotency_answers_store(
    *, api_key: ApiKey, answers: dict[str, tuple[str, int, dict]]
) -> None:
    """Store key -> (fingerprint, status, body) in one statement, inside the caller's transaction.

    A key another request stored meanwhile (its insert commits first; ours waits on the unique
    index, then skips the row) raises IdempotencyRace: the caller rolls back and runs again,
    and then replays that answer. So every key's work is kept once.
    """
    now = timezone.now()
    rows = [
        {
            "api_key_id": api_key.pk,
            "key": key,
            "fingerprint": fingerprint,
            "response_status": status,
            "response_body": body,
            "created_at": now,
        }
        for key, (fingerprint, status, body) in answers.items()
    ]
    inserted = rows_insert(model=IdempotencyRecord, rows=rows, skip_conflicts=True, returning="key")
    if len(inserted) != len(rows):
        raise IdempotencyRace(f"{len(rows) - len(inserted)} key(s) were stored concurrently.")
