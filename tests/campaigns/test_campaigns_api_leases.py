"""Leases and events respect the task's state and the consumer that holds the lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import ApiConsumer, ApiScope, IncentiveTask, PushMessage, TaskState
from campaigns.services import (
    api_key_create,
    messages_lease,
    task_transition,
    tasks_transition_bulk,
)

FEED = "/api/v1/messages"
LEASE = "/api/v1/messages/lease"


def _event(client, message_id: int, event_type: str, key: str):
    return client.post(
        f"/api/v1/messages/{message_id}/events",
        {"type": event_type},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def _lease(client, **body: object) -> list[int]:
    response = client.post(LEASE, {"max": 6, **body}, format="json")
    assert response.status_code == 200, response.content
    return [m["id"] for m in response.json()["messages"]]


@pytest.fixture
def push_clients(db: None, client_for):
    """Two push systems (consumers), the first with two keys (a rotation)."""
    first = api_key_create(name="push-a", scopes=[ApiScope.PUSH], consumer="push system A")[1]
    rotated = api_key_create(name="push-a2", scopes=[ApiScope.PUSH], consumer="push system A")[1]
    other = api_key_create(name="push-b", scopes=[ApiScope.PUSH], consumer="push system B")[1]
    return client_for(first), client_for(rotated), client_for(other)


@pytest.mark.parametrize("final", [TaskState.CANCELLED, TaskState.EXPIRED])
def test_it_never_leases_again_a_message_whose_task_ended(produced, final) -> None:
    consumer = ApiConsumer.objects.create(name="c")
    taken = messages_lease(consumer_id=consumer.pk, owner="c", limit=6, lease_seconds=30)
    ended = taken[0]
    if final == TaskState.CANCELLED:
        task_transition(task=ended.task, to=final, actor="ops")
    else:
        tasks_transition_bulk(task_ids=[ended.task_id], to=final, actor="settlement")

    later = timezone.now() + timedelta(seconds=31)
    again = messages_lease(consumer_id=consumer.pk, owner="c", limit=6, lease_seconds=30, now=later)

    assert [m.pk for m in again] == [m.pk for m in taken[1:]]
    ended.refresh_from_db()
    assert (ended.status, ended.lease_expires_at) == (PushMessage.Status.WITHDRAWN, None)
    assert ended.withdrawn_at is not None


def test_a_pending_message_of_a_cancelled_task_is_never_leased(produced, push_clients) -> None:
    client = push_clients[0]
    task = IncentiveTask.objects.order_by("id").first()
    task_transition(task=task, to=TaskState.CANCELLED, actor="ops")
    leased = _lease(client)
    assert task.message.pk not in leased
    assert len(leased) == 5


def test_the_feed_shows_a_withdrawn_message_as_withdrawn(produced, push_clients) -> None:
    client = push_clients[0]
    task = IncentiveTask.objects.order_by("id").first()
    task_transition(task=task, to=TaskState.CANCELLED, actor="ops")

    pending = client.get(FEED).json()["results"]
    everything = {
        m["id"]: m["status"] for m in client.get(FEED, {"status": "all"}).json()["results"]
    }
    withdrawn = client.get(FEED, {"status": "withdrawn"}).json()["results"]

    assert task.message.pk not in {m["id"] for m in pending}
    assert everything[task.message.pk] == "withdrawn"
    assert [m["id"] for m in withdrawn] == [task.message.pk]


def test_an_event_for_a_withdrawn_message_is_a_409(produced, push_clients) -> None:
    client = push_clients[0]
    message_id = _lease(client, max=1)[0]
    message = PushMessage.objects.get(pk=message_id)
    task_transition(task=message.task, to=TaskState.CANCELLED, actor="ops")

    response = _event(client, message_id, "accepted", "late-accept")

    assert response.status_code == 409
    assert "withdrawn" in response.json()["detail"]
    assert IncentiveTask.objects.get(pk=message.task_id).state == TaskState.CANCELLED
    message.refresh_from_db()
    assert (message.status, message.accepted_at) == (PushMessage.Status.WITHDRAWN, None)


def test_another_consumer_cannot_report_events_for_a_lease(produced, push_clients) -> None:
    holder, _, other = push_clients
    message_id = _lease(holder, max=1)[0]

    response = _event(other, message_id, "accepted", "forged")

    assert response.status_code == 403
    assert "leased to another consumer" in response.json()["detail"]
    message = PushMessage.objects.get(pk=message_id)
    assert (message.task.state, message.status) == (TaskState.PUSHED, PushMessage.Status.LEASED)


def test_an_event_for_a_message_never_leased_is_a_409(produced, push_clients) -> None:
    message = PushMessage.objects.order_by("id").first()
    response = _event(push_clients[0], message.pk, "accepted", "unleased")
    assert response.status_code == 409
    assert "never leased" in response.json()["detail"]
    assert IncentiveTask.objects.get(pk=message.task_id).state == TaskState.CREATED


def test_another_key_of_the_holding_consumer_reports_events(produced, push_clients) -> None:
    first, rotated, _ = push_clients
    message_id = _lease(first, max=1)[0]
    response = _event(rotated, message_id, "delivered", "rotated-key")
    assert (response.status_code, response.json()["task_state"]) == (200, "delivered")


def test_the_last_holder_reports_until_another_consumer_leases(produced, push_clients) -> None:
    holder, _, other = push_clients
    message = PushMessage.objects.get(pk=_lease(holder, max=1)[0])
    PushMessage.objects.filter(pk=message.pk).update(lease_expires_at=timezone.now())

    assert _event(holder, message.pk, "delivered", "after-expiry").status_code == 200
    # Delivered messages are not leased again; a lapsed, unreported one is, to someone else.
    second = PushMessage.objects.get(pk=_lease(holder, max=1)[0])
    PushMessage.objects.filter(pk=second.pk).update(lease_expires_at=timezone.now())
    assert second.pk in _lease(other)
    response = _event(holder, second.pk, "delivered", "superseded")
    assert response.status_code == 403


def test_a_key_that_fails_validation_leaves_no_consumer(db: None) -> None:
    with pytest.raises(ValidationError):
        api_key_create(name="x" * 300, scopes=[ApiScope.PUSH], consumer="fresh consumer")
    assert not ApiConsumer.objects.filter(name="fresh consumer").exists()
