"""The push system's writes: leasing messages to consumers and recording delivery events.

Lock order (every writer of these rows follows it): task rows, then message rows, then the
campaign row (services.budget). Leasing takes task and message rows together with SKIP LOCKED,
so it never waits on either.

Only a message of an open task is leased; a cancelled or expired task's message is withdrawn
(services.tasks) and never handed out again. Events count only from the consumer that holds, or
last held, the message's lease.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.lifecycle import (
    TIMESTAMP_FIELD,
    TransitionNotAllowed,
    forward_path,
    transition_check,
)
from campaigns.models import (
    OPEN_STATES,
    ApiKey,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTransition,
)
from campaigns.services.bulk import rows_insert, rows_update
from campaigns.services.idempotency import (
    IdempotencyRace,
    IdempotentResponse,
    idempotency_answers_store,
    idempotency_answers_stored,
)
from campaigns.services.tasks import tasks_transition_bulk

# Event type -> the task state it implies.
EVENT_STATES = {
    "delivered": TaskState.DELIVERED,
    "opened": TaskState.DELIVERED,
    "accepted": TaskState.ACCEPTED,
}


class EventRefused(Exception):
    """An event the message's state does not allow (never leased, withdrawn): a conflict."""


class NotLeaseHolder(Exception):
    """An event from a consumer that neither holds nor last held the message's lease."""


def messages_lease(
    *,
    consumer_id: int,
    owner: str,
    limit: int,
    lease_seconds: int,
    now: datetime | None = None,
) -> list[PushMessage]:
    """Hand up to `limit` unsent messages of open tasks to the consumer for `lease_seconds`.

    A message is free when pending or when its lease has run out, and its task is still open.
    SKIP LOCKED lets concurrent consumers take disjoint sets without waiting on each other (or on
    a settlement run holding the task); a leased message goes to no one else until its lease
    expires. Their tasks become pushed. `owner` names the lease for people (key/worker).
    """
    now = now or timezone.now()
    expires = now + timedelta(seconds=lease_seconds)
    with transaction.atomic():
        free = Q(status=PushMessage.Status.PENDING) | Q(
            status=PushMessage.Status.LEASED, lease_expires_at__lte=now
        )
        messages = list(
            PushMessage.objects.select_related("task")
            .select_for_update(skip_locked=True, of=("self", "task"))
            .filter(free, task__state__in=OPEN_STATES, task__campaign__paused_at__isnull=True)
            .order_by("id")[:limit]
        )
        if not messages:
            return []
        PushMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            status=PushMessage.Status.LEASED,
            lease_owner=owner,
            lease_consumer_id=consumer_id,
            lease_expires_at=expires,
        )
        tasks_transition_bulk(
            task_ids=[m.task_id for m in messages], to=TaskState.PUSHED, actor=owner, note="leased"
        )
    for message in messages:
        message.status = PushMessage.Status.LEASED
        message.lease_owner, message.lease_expires_at = owner, expires
        message.lease_consumer_id = consumer_id
    return messages


@dataclass(frozen=True)
class EventInput:
    message_id: int
    event_type: str
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class EventOutcome:
    """What one event did: the response body, or the error that refused it."""

    body: dict | None = None
    error: Exception | None = None


def message_event_record(
    *,
    message_id: int,
    event_type: str,
    consumer_id: int,
    actor: str,
    occurred_at: datetime | None = None,
) -> dict:
    """Record a delivered / opened / accepted event and move the task along.

    Returns the response body. Raises PushMessage.DoesNotExist; NotLeaseHolder when another
    consumer holds or last held the lease; EventRefused for a message never leased or withdrawn;
    lifecycle.TransitionNotAllowed for a task that is already final.
    """
    event = EventInput(message_id=message_id, event_type=event_type, occurred_at=occurred_at)
    with transaction.atomic():
        (outcome,) = messages_events_apply(events=[event], consumer_id=consumer_id, actor=actor)
    if outcome.error is not None:
        raise outcome.error
    return outcome.body


def messages_events_apply(
    *, events: Sequence[EventInput], consumer_id: int, actor: str
) -> list[EventOutcome]:
    """Apply events in order, inside the caller's transaction; one outcome per event.

    Set-based: the tasks and then the messages are locked in two statements (id order, the
    lock order of every writer), the states are worked out in memory, event after event, and
    written back in three statements (services.bulk), however many events there are. A refused
    event changes nothing; the others still apply.
    """
    message_ids = sorted({e.message_id for e in events})
    task_ids = PushMessage.objects.filter(pk__in=message_ids).values("task_id")
    tasks = {
        t.pk: t
        for t in IncentiveTask.objects.select_for_update()
        .filter(pk__in=task_ids)
        .only("state", *TASK_EVENT_STAMPS)
        .order_by("pk")
    }
    messages = {
        m.pk: m
        for m in PushMessage.objects.select_for_update()
        .filter(pk__in=message_ids)
        .only(*MESSAGE_EVENT_FIELDS)
        .order_by("pk")
    }
    now = timezone.now()
    transitions: list[dict] = []
    moved: dict[int, IncentiveTask] = {}
    touched: dict[int, PushMessage] = {}
    outcomes = []
    for event in events:
        message = messages.get(event.message_id)
        if message is None:
            outcomes.append(
                EventOutcome(error=PushMessage.DoesNotExist(f"No message {event.message_id}."))
            )
            continue
        task = tasks[message.task_id]
        try:
            _event_check(message=message, task=task, consumer_id=consumer_id)
            steps = _steps(task=task, to=EVENT_STATES[event.event_type])
        except (NotLeaseHolder, EventRefused, TransitionNotAllowed) as exc:
            outcomes.append(EventOutcome(error=exc))
            continue
        for source, step in zip(_sources(task, steps), steps, strict=True):
            setattr(task, TIMESTAMP_FIELD[step], now)
            transitions.append(
                {
                    "task_id": task.pk,
                    "from_state": source,
                    "to_state": step,
                    "actor": actor[:200],
                    "note": event.event_type,
                    "created_at": now,
                }
            )
        if steps:
            task.state = steps[-1]
            moved[task.pk] = task
        _message_mark(message=message, event_type=event.event_type, at=event.occurred_at or now)
        touched[message.pk] = message
        outcomes.append(
            EventOutcome(
                body={
                    "message_id": message.pk,
                    "type": event.event_type,
                    "task_id": task.pk,
                    "task_state": task.state,
                }
            )
        )
    if moved:
        rows_update(objects=list(moved.values()), fields=["state", *TASK_EVENT_STAMPS])
        rows_insert(model=TaskTransition, rows=transitions)
    if touched:
        rows_update(objects=list(touched.values()), fields=MESSAGE_EVENT_WRITES)
    return outcomes  # forward steps never move money: no budget effect to apply


# The timestamps an event may stamp on a task (the forward states after created).
TASK_EVENT_STAMPS = ("pushed_at", "delivered_at", "accepted_at")
# What an event writes on a message, and what it reads (only these columns are loaded).
MESSAGE_EVENT_WRITES = ["status", "lease_expires_at", "sent_at", "opened_at", "accepted_at"]
MESSAGE_EVENT_FIELDS = ("task_id", "lease_consumer_id", *MESSAGE_EVENT_WRITES)


def _sources(task: IncentiveTask, steps: list[str]) -> list[str]:
    """The state each step starts from."""
    return [task.state, *steps[:-1]] if steps else []


def _steps(*, task: IncentiveTask, to: str) -> list[str]:
    steps = forward_path(task_id=task.pk, from_state=task.state, to_state=to)
    for source, step in zip(_sources(task, steps), steps, strict=True):
        transition_check(task_id=task.pk, from_state=source, to_state=step)
    return steps


def _message_mark(*, message: PushMessage, event_type: str, at: datetime) -> None:
    message.status = PushMessage.Status.SENT
    message.lease_expires_at = None
    message.sent_at = message.sent_at or at
    if event_type in ("opened", "accepted"):
        message.opened_at = message.opened_at or at
    if event_type == "accepted":
        message.accepted_at = message.accepted_at or at


def messages_events_record_batch(
    *,
    api_key: ApiKey,
    events: Sequence[tuple[str, str, EventInput]],
    actor: str,
    answer: Callable[[EventOutcome], tuple[int, dict]],
) -> list[IdempotentResponse]:
    """Record a batch of events, each idempotent under its own key: (key, fingerprint, event).

    One transaction: new keys run (in order), a key seen with the same request replays its
    stored answer, a key seen with another request is a 422. `answer` turns an outcome into
    the (status, body) that is stored and returned. Each answer is written once, with the work;
    a concurrent request that stored one of the keys first makes this run again (and replay).
    """
    for attempt in range(BATCH_ATTEMPTS):
        try:
            return _batch_record(api_key=api_key, events=events, actor=actor, answer=answer)
        except IdempotencyRace:
            if attempt == BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


BATCH_ATTEMPTS = 3


def _batch_record(
    *,
    api_key: ApiKey,
    events: Sequence[tuple[str, str, EventInput]],
    actor: str,
    answer: Callable[[EventOutcome], tuple[int, dict]],
) -> list[IdempotentResponse]:
    fingerprints = {key: fp for key, fp, _ in events}
    with transaction.atomic():
        stored = idempotency_answers_stored(api_key=api_key, fingerprints=fingerprints)
        fresh = [
            (key, event)
            for key, _, event in events
            if key not in stored.replayed and key not in stored.conflicts
        ]
        applied = messages_events_apply(
            events=[event for _, event in fresh], consumer_id=api_key.consumer_id, actor=actor
        )
        outcomes = {key: answer(o) for (key, _), o in zip(fresh, applied, strict=True)}
        idempotency_answers_store(
            api_key=api_key,
            answers={key: (fingerprints[key], *outcomes[key]) for key, _ in fresh},
        )
    results = []
    for key, _, _ in events:
        if key in stored.conflicts:
            results.append(IdempotentResponse(422, {"detail": stored.conflicts[key]}, False))
        elif key in stored.replayed:
            results.append(stored.replayed[key])
        else:
            status, body = outcomes[key]
            results.append(IdempotentResponse(status, body, False))
    return results


def _event_check(*, message: PushMessage, task: IncentiveTask, consumer_id: int) -> None:
    if message.lease_consumer_id is None:
        raise EventRefused(
            f"Message {message.pk} was never leased; lease it (POST messages/lease) before "
            "reporting events for it."
        )
    if message.lease_consumer_id != consumer_id:
        raise NotLeaseHolder(
            f"Message {message.pk} is leased to another consumer; only the consumer that holds "
            "or last held its lease may report events for it."
        )
    if message.status == PushMessage.Status.WITHDRAWN:
        raise EventRefused(
            f"Message {message.pk} is withdrawn: its task {task.pk} is {task.state}. "
            "Do not send it; no event is recorded."
        )
