"""The push system's writes: leasing messages to consumers and recording delivery events.

Lock order (every writer of these rows follows it): task rows, then message rows, then the
campaign row (services.budget). Leasing takes task and message rows together with SKIP LOCKED,
so it never waits on either.

Only a message of an open task is leased; a cancelled or expired task's message is withdrawn
(services.tasks) and never handed out again. Events count only from the consumer that holds, or
last held, the message's lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import OPEN_STATES, IncentiveTask, PushMessage, TaskState
from campaigns.services.tasks import task_advance_locked, tasks_transition_bulk

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
            .filter(free, task__state__in=OPEN_STATES)
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
    at = occurred_at or timezone.now()
    with transaction.atomic():
        task_id = PushMessage.objects.filter(pk=message_id).values_list("task_id", flat=True)
        task = IncentiveTask.objects.select_for_update().filter(pk__in=task_id).first()
        if task is None:
            raise PushMessage.DoesNotExist(f"No message {message_id}.")
        message = PushMessage.objects.select_for_update().get(pk=message_id)
        _event_check(message=message, task=task, consumer_id=consumer_id)
        task = task_advance_locked(
            task=task, to=EVENT_STATES[event_type], actor=actor, note=event_type
        )
        message.status = PushMessage.Status.SENT
        message.lease_expires_at = None
        message.sent_at = message.sent_at or at
        if event_type in ("opened", "accepted"):
            message.opened_at = message.opened_at or at
        if event_type == "accepted":
            message.accepted_at = message.accepted_at or at
        message.save(
            update_fields=["status", "lease_expires_at", "sent_at", "opened_at", "accepted_at"]
        )
    return {
        "message_id": message.pk,
        "type": event_type,
        "task_id": task.pk,
        "task_state": task.state,
    }


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
