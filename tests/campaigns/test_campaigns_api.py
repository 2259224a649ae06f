"""The push-message API: keys and scopes, feed, leases, idempotent events, reads, limits."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from advertisers.models import DailyStat
from campaigns.models import (
    ApiConsumer,
    ApiKey,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTransition,
)
from campaigns.services import api_key_create, api_key_revoke, campaign_produce, messages_lease
from predictor.models import Prediction

from .conftest import AS_OF

FEED = "/api/v1/messages"
LEASE = "/api/v1/messages/lease"


def _events(message_id: int) -> str:
    return f"/api/v1/messages/{message_id}/events"


def _first_message() -> PushMessage:
    return PushMessage.objects.order_by("id").first()


def _consumer_id(name: str) -> int:
    return ApiConsumer.objects.get_or_create(name=name)[0].pk


def _lease_first(client) -> PushMessage:
    """Lease the oldest message to the client's consumer (events need the lease)."""
    (leased,) = client.post(LEASE, {"max": 1}, format="json").json()["messages"]
    return PushMessage.objects.get(pk=leased["id"])


# (method, url, the key that has the wrong scope for it)
ENDPOINTS = [
    ("get", lambda: FEED, "none"),
    ("post", lambda: LEASE, "ops"),
    ("post", lambda: _events(_first_message().pk), "ops"),
    ("get", lambda: "/api/v1/advertisers/A001/tasks", "push"),
    ("get", lambda: "/api/v1/advertisers/A001/predictions", "push"),
]


def _call(client, method: str, url: str, **extra):
    if method == "post":
        extra.setdefault("HTTP_IDEMPOTENCY_KEY", str(uuid.uuid4()))
        return client.post(url, {"type": "delivered"}, format="json", **extra)
    return client.get(url, **extra)


@pytest.mark.parametrize(("method", "url", "_wrong"), ENDPOINTS)
def test_it_answers_401_without_a_key(produced, client_for, method, url, _wrong) -> None:
    response = _call(client_for(None), method, url())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(("method", "url", "_wrong"), ENDPOINTS)
def test_it_answers_401_for_an_unknown_key(produced, client_for, method, url, _wrong) -> None:
    assert _call(client_for("ipk_nope_nope"), method, url()).status_code == 401


@pytest.mark.parametrize(("method", "url", "_wrong"), ENDPOINTS)
def test_it_answers_401_for_a_revoked_key(produced, client_for, method, url, _wrong) -> None:
    api_key, secret = api_key_create(name="old", scopes=["push", "ops"])
    api_key_revoke(api_key=api_key)
    assert _call(client_for(secret), method, url()).status_code == 401


@pytest.mark.parametrize(("method", "url", "wrong"), ENDPOINTS)
def test_it_answers_403_for_the_wrong_scope(produced, keys, client_for, method, url, wrong) -> None:
    response = _call(client_for(getattr(keys, wrong)), method, url())
    assert response.status_code == 403
    assert "scope" in response.json()["detail"]


def test_an_ops_key_reads_the_feed(produced, keys, client_for) -> None:
    assert client_for(keys.ops).get(FEED).status_code == 200


def test_it_stores_only_the_hash_of_a_secret(keys) -> None:
    assert not ApiKey.objects.filter(secret_hash=keys.push).exists()
    assert ApiKey.objects.get(name="pusher").secret_hash != keys.push


# --- feed --------------------------------------------------------------------------------------


def test_the_feed_lists_pending_messages_with_their_terms(produced, keys, client_for) -> None:
    body = client_for(keys.push).get(FEED).json()
    first = body["results"][0]
    assert len(body["results"]) == 6
    assert (first["advertiser_id"], first["kind"], first["target"]) == (
        "A000",
        "login_days",
        "3.00",
    )
    assert body["has_more"] is False


def test_the_last_next_link_finds_messages_added_later(make_campaign, keys, client_for) -> None:
    campaign_produce(campaign=make_campaign(top_n=2))
    client = client_for(keys.push)
    page = client.get(FEED).json()
    assert (len(page["results"]), page["has_more"]) == (2, False)
    campaign_produce(campaign=make_campaign())
    later = client.get(page["next"]).json()
    assert [m["advertiser_id"] for m in later["results"]] == ["A002", "A003", "A004", "A005"]


def test_the_feed_walks_everything_once_while_messages_are_added(
    make_campaign, world, keys, client_for
) -> None:
    campaign_produce(campaign=make_campaign(top_n=3))
    client, seen = client_for(keys.push), []
    page = client.get(FEED, {"page_size": 2}).json()
    seen += [m["id"] for m in page["results"]]
    campaign_produce(campaign=make_campaign())  # three more arrive mid-walk
    while page["has_more"]:
        page = client.get(page["next"]).json()
        seen += [m["id"] for m in page["results"]]
    assert seen == sorted(PushMessage.objects.values_list("id", flat=True))
    assert len(seen) == len(set(seen)) == 6


def test_the_feed_rejects_a_bad_status_page_size_or_cursor(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    assert "status" in client.get(FEED, {"status": "lost"}).json()
    for cursor in ("YQ", "YWZ0ZXI6eA=="):  # bad padding; decodes to "after:x"
        response = client.get(FEED, {"cursor": cursor})
        assert response.status_code == 404
        assert "Invalid cursor" in response.json()["detail"]
    assert client.get(FEED, {"page_size": 0}).status_code == 400


# --- leases ------------------------------------------------------------------------------------


def test_two_consumers_lease_disjoint_messages(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    first = client.post(LEASE, {"max": 4, "consumer": "a"}, format="json").json()
    second = client.post(LEASE, {"max": 4, "consumer": "b"}, format="json").json()
    ids_a = {m["id"] for m in first["messages"]}
    ids_b = {m["id"] for m in second["messages"]}
    assert (len(ids_a), len(ids_b), ids_a & ids_b) == (4, 2, set())
    assert second["lease_owner"] == "pusher/b"


def test_a_lease_marks_tasks_pushed(produced, keys, client_for) -> None:
    client_for(keys.push).post(LEASE, {"max": 1}, format="json")
    assert IncentiveTask.objects.filter(state=TaskState.PUSHED).count() == 1


def test_an_expired_lease_goes_to_another_consumer(produced) -> None:
    a, b = _consumer_id("a"), _consumer_id("b")
    taken = messages_lease(consumer_id=a, owner="a", limit=6, lease_seconds=30)
    assert messages_lease(consumer_id=b, owner="b", limit=6, lease_seconds=30) == []
    later = timezone.now() + timedelta(seconds=31)
    again = messages_lease(consumer_id=b, owner="b", limit=6, lease_seconds=30, now=later)
    assert [m.pk for m in again] == [m.pk for m in taken]


def test_a_delivered_message_is_not_leased_again(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    message = client.post(LEASE, {"max": 1}, format="json").json()["messages"][0]
    client.post(
        _events(message["id"]), {"type": "delivered"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    later = timezone.now() + timedelta(hours=2)
    assert message["id"] not in [
        m.pk
        for m in messages_lease(
            consumer_id=_consumer_id("b"), owner="b", limit=9, lease_seconds=5, now=later
        )
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_consumers_never_share_a_message(produced) -> None:
    results: dict[str, list[int]] = {}
    consumers = {owner: _consumer_id(owner) for owner in ("a", "b")}
    barrier = threading.Barrier(2)

    def consume(owner: str) -> None:
        barrier.wait()
        leased = messages_lease(
            consumer_id=consumers[owner], owner=owner, limit=3, lease_seconds=60
        )
        results[owner] = [m.pk for m in leased]
        connection.close()

    threads = [threading.Thread(target=consume, args=(o,)) for o in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not set(results["a"]) & set(results["b"])
    assert len(results["a"]) + len(results["b"]) == 6


def test_lease_validates_its_input(produced, keys, client_for) -> None:
    response = client_for(keys.push).post(LEASE, {"max": 0, "lease_seconds": "x"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"max", "lease_seconds"}


def test_lease_refuses_a_nul_character_as_its_schema_says(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    response = client.post(LEASE, {"consumer": "a\x00b"}, format="json")
    schema = client.get("/api/schema/?format=json").json()

    assert response.status_code == 400
    assert response.json() == {"consumer": ["Null characters are not allowed."]}
    consumer = schema["components"]["schemas"]["LeaseInput"]["properties"]["consumer"]
    assert consumer["oneOf"][0]["pattern"] == "^[^\\u0000]+$"
    assert client.post(LEASE, {"consumer": ""}, format="json").status_code == 200


def test_malformed_json_is_a_400(produced, keys, client_for) -> None:
    response = client_for(keys.push).post(LEASE, "{", content_type="application/json")
    assert response.status_code == 400


# --- events ------------------------------------------------------------------------------------


def _post_event(client, message_id: int, body: dict, key: str | None):
    extra = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(_events(message_id), body, format="json", **extra)


def test_an_accepted_event_moves_the_task_to_accepted(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    message = _lease_first(client)
    response = _post_event(client, message.pk, {"type": "accepted"}, "e1")
    assert response.status_code == 200
    assert response.json()["task_state"] == "accepted"
    message.refresh_from_db()
    assert (message.status, message.accepted_at is not None) == ("sent", True)


def test_it_replays_the_same_key_and_body(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    message = _lease_first(client)
    first = _post_event(client, message.pk, {"type": "delivered"}, "same")
    again = _post_event(client, message.pk, {"type": "delivered"}, "same")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again["Idempotent-Replayed"] == "true"
    assert TaskTransition.objects.filter(task=message.task, to_state="delivered").count() == 1


def test_it_answers_422_for_the_same_key_with_another_body(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    message = _lease_first(client)
    _post_event(client, message.pk, {"type": "delivered"}, "same")
    response = _post_event(client, message.pk, {"type": "accepted"}, "same")
    assert response.status_code == 422
    assert message.task.__class__.objects.get(pk=message.task_id).state == "delivered"


def test_it_requires_an_idempotency_key(produced, keys, client_for) -> None:
    response = _post_event(client_for(keys.push), _first_message().pk, {"type": "opened"}, None)
    assert (response.status_code, list(response.json())) == (400, ["Idempotency-Key"])


def test_it_answers_409_for_an_event_on_a_final_task(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    message = _lease_first(client)
    IncentiveTask.objects.filter(pk=message.task_id).update(state=TaskState.EXPIRED)
    response = _post_event(client, message.pk, {"type": "delivered"}, "late")
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]


def test_it_answers_404_for_an_unknown_or_malformed_message(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    assert _post_event(client, 10**12, {"type": "delivered"}, "x").status_code == 404
    response = client.post(
        "/api/v1/messages/abc/events", {}, format="json", HTTP_IDEMPOTENCY_KEY="y"
    )
    assert (response.status_code, response["Content-Type"]) == (404, "application/json")


def test_it_rejects_an_unknown_event_type(produced, keys, client_for) -> None:
    response = _post_event(client_for(keys.push), _first_message().pk, {"type": "clicked"}, "t")
    assert (response.status_code, list(response.json())) == (400, ["type"])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_run_the_event_once(produced, keys, client_for) -> None:
    message, responses = _lease_first(client_for(keys.push)), []
    barrier = threading.Barrier(4)

    def retry() -> None:
        barrier.wait()
        responses.append(_post_event(client_for(keys.push), message.pk, {"type": "accepted"}, "r"))
        connection.close()

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in responses] == [200] * 4
    assert TaskTransition.objects.filter(task_id=message.task_id, to_state="accepted").count() == 1


# --- advertisers -------------------------------------------------------------------------------


def test_it_lists_an_advertisers_tasks_with_live_progress(
    produced, world, keys, client_for
) -> None:
    DailyStat.objects.create(
        advertiser=world.advertisers[3],
        scenario=world.search,
        date=AS_OF + timedelta(days=2),
        expenditure=Decimal("123.45"),
    )
    body = client_for(keys.ops).get("/api/v1/advertisers/A003/tasks").json()
    (task,) = body["results"]
    assert (task["state"], task["target"], task["progress"]) == ("created", "400.00", "123.45")


def test_it_filters_tasks_by_state(produced, keys, client_for) -> None:
    response = client_for(keys.ops).get("/api/v1/advertisers/A003/tasks", {"state": "completed"})
    assert response.json()["results"] == []


def test_it_answers_404_for_an_unknown_advertiser(produced, keys, client_for) -> None:
    assert client_for(keys.ops).get("/api/v1/advertisers/ZZZ/tasks").status_code == 404


def test_it_returns_the_latest_predictions(world, keys, client_for) -> None:
    Prediction.objects.filter(advertiser__advertiser_id="A002", scenario=world.search).update(
        p_inactive=0.125, expenditure_p10=20.0, expenditure_p90=380.0
    )
    body = client_for(keys.ops).get("/api/v1/advertisers/A002/predictions").json()
    rows = {row["scenario"]: row for row in body["predictions"]}
    assert set(rows) == {"search", "display"}
    assert (rows["search"]["expenditure"], rows["search"]["model_kind"]) == (200.0, "m2m")
    assert rows["search"]["as_of"] == AS_OF.isoformat()
    search, display = rows["search"], rows["display"]
    assert (search["p_inactive"], search["expenditure_p10"], search["expenditure_p90"]) == (
        0.125,
        20.0,
        380.0,
    )
    assert (display["p_inactive"], display["clicks_p90"]) == (None, None)
    assert body["inactivity"] == [
        {
            "model_version": world.version.pk,
            "model_kind": "m2m",
            "as_of": AS_OF.isoformat(),
            "scenarios": 2,
            "p_inactive_all": None,  # display has no P(inactive)
        }
    ]
    Prediction.objects.filter(advertiser__advertiser_id="A002", scenario=world.display).update(
        p_inactive=0.5
    )
    body = client_for(keys.ops).get("/api/v1/advertisers/A002/predictions").json()
    assert body["inactivity"][0]["p_inactive_all"] == 0.0625


def test_predictions_reject_an_unknown_kind(world, keys, client_for) -> None:
    response = client_for(keys.ops).get("/api/v1/advertisers/A002/predictions", {"kind": "x"})
    assert (response.status_code, list(response.json())) == (400, ["kind"])


# --- throttling --------------------------------------------------------------------------------


def test_it_throttles_per_key(produced, keys, client_for) -> None:
    rates = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "2/day"}}
    with override_settings(REST_FRAMEWORK=rates):
        limited = client_for(keys.push)
        assert [limited.get(FEED).status_code for _ in range(3)] == [200, 200, 429]
        assert int(limited.get(FEED)["Retry-After"]) > 0
        assert client_for(keys.ops).get(FEED).status_code == 200  # another key, its own count


def test_a_key_deactivated_by_saving_it_is_refused_at_once(produced, keys, client_for) -> None:
    client = client_for(keys.push)
    assert client.get(FEED).status_code == 200  # the key is now cached
    api_key = ApiKey.objects.get(name="pusher")
    api_key.is_active = False
    api_key.save()
    assert client.get(FEED).status_code == 401
