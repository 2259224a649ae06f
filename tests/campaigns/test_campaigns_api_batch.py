"""The batch events endpoint: many events per request, each idempotent, per-event results."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from campaigns import api
from campaigns.models import ApiScope, IncentiveTask, PushMessage, TaskState, TaskTransition
from campaigns.services import api_key_create, campaign_produce, task_transition

BATCH = "/api/v1/messages/events"
LEASE = "/api/v1/messages/lease"


@pytest.fixture
def push(db: None, client_for):
    return client_for(api_key_create(name="push", scopes=[ApiScope.PUSH], consumer="A")[1])


@pytest.fixture
def leased(produced, push) -> list[int]:
    response = push.post(LEASE, {"max": 6}, format="json")
    return [m["id"] for m in response.json()["messages"]]


def _batch(client, *events: dict):
    return client.post(BATCH, {"events": list(events)}, format="json")


def _ev(message_id: int, event_type: str, key: str | None = None, **extra: object) -> dict:
    return {
        "message_id": message_id,
        "type": event_type,
        "idempotency_key": key or uuid.uuid4().hex,
        **extra,
    }


def _state(message_id: int) -> str:
    return IncentiveTask.objects.get(message__pk=message_id).state


def test_it_applies_several_events_per_message_in_order(leased, push) -> None:
    first, second = leased[:2]
    response = _batch(
        push,
        _ev(first, "delivered"),
        _ev(first, "opened"),
        _ev(first, "accepted"),
        _ev(second, "delivered"),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200] * 4
    assert [r["body"]["task_state"] for r in results] == [
        "delivered",
        "delivered",
        "accepted",
        "delivered",
    ]
    assert (_state(first), _state(second)) == (TaskState.ACCEPTED, TaskState.DELIVERED)
    steps = TaskTransition.objects.filter(task__message__pk=first).values_list(
        "to_state", flat=True
    )
    assert list(steps) == ["created", "pushed", "delivered", "accepted"]
    message = PushMessage.objects.get(pk=first)
    assert message.status == PushMessage.Status.SENT
    assert None not in (message.sent_at, message.opened_at, message.accepted_at)


def test_a_retried_batch_replays_every_answer(leased, push) -> None:
    events = [_ev(leased[0], "delivered", "k1"), _ev(leased[1], "accepted", "k2")]
    first = _batch(push, *events).json()["results"]
    again = _batch(push, *events).json()["results"]
    assert [r["replayed"] for r in again] == [True, True]
    assert [r["body"] for r in again] == [r["body"] for r in first]
    assert TaskTransition.objects.filter(to_state="accepted").count() == 1


def test_a_key_reused_for_another_event_is_a_422_and_the_rest_apply(leased, push) -> None:
    _batch(push, _ev(leased[0], "delivered", "used"))
    results = _batch(push, _ev(leased[0], "accepted", "used"), _ev(leased[1], "delivered"))
    assert [r["status"] for r in results.json()["results"]] == [422, 200]
    assert (_state(leased[0]), _state(leased[1])) == (TaskState.DELIVERED, TaskState.DELIVERED)


def test_a_single_event_retried_in_a_batch_is_replayed(leased, push) -> None:
    single = push.post(
        f"/api/v1/messages/{leased[0]}/events",
        {"type": "delivered"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="either-way",
    )
    (result,) = _batch(push, _ev(leased[0], "delivered", "either-way")).json()["results"]
    assert (result["status"], result["replayed"], result["body"]) == (200, True, single.json())


def test_each_refused_event_gets_its_own_answer(leased, push, client_for) -> None:
    other = client_for(api_key_create(name="other", scopes=[ApiScope.PUSH], consumer="B")[1])
    foreign = other.post(LEASE, {"max": 1}, format="json")
    assert foreign.json()["messages"] == []  # A leased all six; B's lease comes from later ones
    withdrawn = PushMessage.objects.get(pk=leased[1])
    task_transition(task=withdrawn.task, to=TaskState.CANCELLED, actor="ops")

    results = _batch(
        push,
        _ev(leased[0], "delivered"),
        _ev(leased[1], "delivered"),
        _ev(10**12, "delivered"),
        _ev(leased[2], "delivered", occurred_at="1970-01-01T00:00:00Z"),
        _ev(leased[3], "accepted"),
    ).json()["results"]

    assert [r["status"] for r in results] == [200, 409, 404, 400, 200]
    assert "withdrawn" in results[1]["body"]["detail"]
    assert list(results[3]["body"]) == ["occurred_at"]
    assert _state(leased[2]) == TaskState.PUSHED
    forged = _batch(other, _ev(leased[4], "accepted")).json()["results"]
    assert forged[0]["status"] == 403
    assert _state(leased[4]) == TaskState.PUSHED


def test_a_batch_with_an_invalid_event_is_refused_whole(leased, push) -> None:
    response = _batch(push, _ev(leased[0], "delivered"), _ev(leased[1], "clicked"))
    assert response.status_code == 400
    assert list(response.json()["events"]) == ["1"]
    assert "type" in response.json()["events"]["1"]
    assert _state(leased[0]) == TaskState.PUSHED


@pytest.mark.parametrize(
    "events",
    [[], [{"message_id": 1, "type": "delivered", "idempotency_key": f"k{i}"} for i in range(501)]],
)
def test_it_takes_1_to_500_events(leased, push, events) -> None:
    response = push.post(BATCH, {"events": events}, format="json")
    assert response.status_code == 400
    assert "1 to 500" in response.json()["events"][0]


def test_repeated_keys_in_one_batch_are_refused(leased, push) -> None:
    response = _batch(push, _ev(leased[0], "delivered", "twice"), _ev(leased[1], "opened", "twice"))
    assert response.status_code == 400
    assert "twice" in response.json()["events"][0]


def test_its_queries_do_not_grow_with_the_number_of_events(make_campaign, push) -> None:
    campaign_produce(campaign=make_campaign())
    leased = [m["id"] for m in push.post(LEASE, {"max": 6}, format="json").json()["messages"]]

    def queries(events: list[dict]) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert _batch(push, *events).status_code == 200
        return len(captured)

    small = queries([_ev(leased[0], "delivered")])
    large = queries([_ev(m, t) for m in leased[1:] for t in ("delivered", "opened", "accepted")])
    assert large == small


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_batch_apply_each_event_once(produced, client_for) -> None:
    secret = api_key_create(name="push", scopes=[ApiScope.PUSH], consumer="A")[1]
    lease = client_for(secret).post(LEASE, {"max": 6}, format="json")
    leased = [m["id"] for m in lease.json()["messages"]]
    events = [_ev(m, "accepted", f"race-{m}") for m in leased]
    barrier, answers = threading.Barrier(3), []

    def send() -> None:
        barrier.wait()
        answers.append(_batch(client_for(secret), *events).json()["results"])
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 3
    assert all(r["status"] == 200 for results in answers for r in results)
    replayed = sorted(sum(r["replayed"] for r in results) for results in answers)
    assert replayed == [0, 6, 6]
    assert TaskTransition.objects.filter(to_state="accepted").count() == 6


_odd = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=4))
_events = st.fixed_dictionaries(
    {
        "message_id": st.one_of(
            st.integers(min_value=1, max_value=10**6),
            st.sampled_from([-1, 0, 10**18 - 1, 10**18]),
            _odd,
        ),
        "type": st.one_of(
            st.sampled_from(["delivered", "opened", "accepted"]),
            st.sampled_from([" opened", "Opened", "sent"]),
            _odd,
        ),
        "idempotency_key": st.one_of(
            st.sampled_from([uuid.uuid4().hex, "k" * 200, "~!"]),
            st.sampled_from([" key", "key ", "k" * 201, "ké", ""]),
            st.text(max_size=8),
            _odd,
        ),
    },
    optional={"occurred_at": st.just("2024-04-02T10:00:00Z"), "extra": _odd},
)


_well_formed = st.fixed_dictionaries(
    {
        "message_id": st.integers(min_value=1, max_value=10**18 - 1),
        "type": st.sampled_from(["delivered", "opened", "accepted"]),
        "idempotency_key": st.from_regex(r"\A[!-~]{1,200}\Z"),
    }
)


@given(event=st.one_of(_events, _well_formed))
def test_the_plain_event_check_agrees_with_the_serializer_fields(event: dict) -> None:
    """The fast path takes only events the DRF fields take, with the same values."""
    fields = api._query_fields(api.BatchEventInputSerializer)
    plain = api._batch_event_plain(event)
    if plain is not None:
        assert api._batch_event_validate(event, fields) == (plain, {})
        serializer = api.BatchEventInputSerializer(data=event)
        assert serializer.is_valid(), serializer.errors
        assert (plain.message_id, plain.event_type) == (
            serializer.validated_data["message_id"],
            serializer.validated_data["type"],
        )
        assert serializer.validated_data["idempotency_key"] == event["idempotency_key"]
