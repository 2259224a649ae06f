"""The push system's writes: leasing messages to consumers and recording delivery events.

Lock order: message rows, then task rows, then the campaign row (services.budget).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import PushMessage, TaskState
from campaigns.services.tasks import task_advance_locked, tasks_transition_bulk

# Event type -> the task state it implies.
EVENT_STATES = {
    "delivered": TaskState.DELIVERED,
    "opened": TaskState.DELIVERED,
    "accepted": TaskState.ACCEPTED,
}


def messages_lease(
    *, owner: str, limit: int, lease_seconds: int, now: datetime | None = None
) -> list[PushMessage]:
    """Hand up to `limit` unsent messages to `owner` for `lease_seconds`.

    A message is free when pending or when its lease has run out. SKIP LOCKED lets concurrent
    consumers take disjoint sets without waiting on each other; a leased message goes to no one
    else until its lease expires. Their tasks become pushed.
    """
    now = now or timezone.now()
    expires = now + timedelta(seconds=lease_seconds)
    with transaction.atomic():
        free = Q(status=PushMessage.Status.PENDING) | Q(
            status=PushMessage.Status.LEASED, lease_expires_at__lte=now
        )
        messages = list(
            PushMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(free, task__campaign__paused_at__isnull=True)
            .order_by("id")[:limit]
        )
        if not messages:
            return []
        PushMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
            status=PushMessage.Status.LEASED, lease_owner=owner, lease_expires_at=expires
        )
        tasks_transition_bulk(
            task_ids=[m.task_id for m in messages], to=TaskState.PUSHED, actor=owner, note="leased"
        )
    for message in messages:
        message.status = PushMessage.Status.LEASED
        message.lease_owner, message.lease_expires_at = owner, expires
    return messages


def message_event_record(
    *, message_id: int, event_type: str, actor: str, occurred_at: datetime | None = None
) -> dict:
    """Record a delivered / opened / accepted event and move the task along.

    Returns the response body. Raises PushMessage.DoesNotExist, or
    lifecycle.TransitionNotAllowed for a task that is already final.
    """
    at = occurred_at or timezone.now()
    with transaction.atomic():
        message = (
            PushMessage.objects.select_related("task")
            .select_for_update(of=("self", "task"))
            .get(pk=message_id)
        )
        task = task_advance_locked(
            task=message.task, to=EVENT_STATES[event_type], actor=actor, note=event_type
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
