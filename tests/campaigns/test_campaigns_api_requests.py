"""Request checks of the push API: event times within a sane window, JSON bodies only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import ApiScope, IncentiveTask, PushMessage, TaskState
from campaigns.services import api_key_create

LEASE = "/api/v1/messages/lease"


@pytest.fixture
def push(db: None, client_for):
    return client_for(api_key_create(name="push", scopes=[ApiScope.PUSH])[1])


@pytest.fixture
def leased(produced, push) -> PushMessage:
    (message,) = push.post(LEASE, {"max": 1}, format="json").json()["messages"]
    return PushMessage.objects.get(pk=message["id"])


def _event(client, message_id: int, body: object, key: str, **extra):
    return client.post(
        f"/api/v1/messages/{message_id}/events", body, HTTP_IDEMPOTENCY_KEY=key, **extra
    )


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
    ],
)
def test_it_rejects_an_occurred_at_outside_the_window(leased, push, occurred_at) -> None:
    body = {"type": "delivered", "occurred_at": occurred_at}
    response = _event(push, leased.pk, body, f"t-{occurred_at}", format="json")
    assert response.status_code == 400
    (message,) = response.json()["occurred_at"]
    assert "outside the accepted window" in message or "out of range" in message
    assert IncentiveTask.objects.get(pk=leased.task_id).state == TaskState.PUSHED


def test_it_accepts_a_recent_occurred_at_and_stores_it(leased, push) -> None:
    at = (timezone.now() - timedelta(days=2)).replace(microsecond=0)
    body = {"type": "delivered", "occurred_at": at.isoformat()}
    response = _event(push, leased.pk, body, "recent", format="json")
    assert response.status_code == 200, response.content
    leased.refresh_from_db()
    assert leased.sent_at == at


def test_it_rejects_an_occurred_at_a_little_too_far_ahead(leased, push) -> None:
    ahead = timezone.now() + timedelta(minutes=10)
    body = {"type": "delivered", "occurred_at": ahead.isoformat()}
    response = _event(push, leased.pk, body, "ahead", format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["occurred_at"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", "type=delivered"), ("application/x-www-form-urlencoded", "type=delivered")],
)
def test_a_body_that_is_not_json_is_a_415(leased, push, content_type, body) -> None:
    event = _event(push, leased.pk, body, "not-json", content_type=content_type)
    lease = push.post(LEASE, "max=1", content_type=content_type)
    assert (event.status_code, lease.status_code) == (415, 415)
    assert content_type in event.json()["detail"]
    assert IncentiveTask.objects.get(pk=leased.task_id).state == TaskState.PUSHED


def test_a_json_media_type_with_a_charset_is_accepted(leased, push) -> None:
    response = _event(
        push,
        leased.pk,
        '{"type": "delivered"}',
        "charset",
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200
