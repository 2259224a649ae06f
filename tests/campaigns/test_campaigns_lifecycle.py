"""The task state machine: allowed transitions pass, the rest are refused, all are audited."""

from __future__ import annotations

from decimal import Decimal

import pytest

from campaigns.lifecycle import ALLOWED, TIMESTAMP_FIELD, TransitionNotAllowed
from campaigns.models import BudgetLedgerEntry, Campaign, IncentiveTask, TaskState, TaskTransition
from campaigns.services import task_advance, task_transition, tasks_transition_bulk

ALLOWED_PAIRS = [(src, dst) for src, targets in ALLOWED.items() for dst in sorted(targets)]
REFUSED_PAIRS = [
    (src, dst) for src in TaskState.values for dst in TaskState.values if dst not in ALLOWED[src]
]


def _task_in(campaign: Campaign, state: str, advertiser_id: str = "A003") -> IncentiveTask:
    task = IncentiveTask.objects.get(campaign=campaign, advertiser__advertiser_id=advertiser_id)
    IncentiveTask.objects.filter(pk=task.pk).update(state=state)
    task.refresh_from_db()
    return task


@pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS)
def test_it_allows_the_transitions_in_the_table(produced, source, target) -> None:
    task = _task_in(produced, source)
    moved = task_transition(task=task, to=target, actor="tester")
    moved.refresh_from_db()
    assert moved.state == target
    assert getattr(moved, TIMESTAMP_FIELD[target]) is not None
    audit = TaskTransition.objects.filter(task=task).last()
    assert (audit.from_state, audit.to_state, audit.actor) == (source, target, "tester")


def test_it_refuses_every_transition_outside_the_table(produced) -> None:
    for source, target in REFUSED_PAIRS:
        task = _task_in(produced, source)
        with pytest.raises(TransitionNotAllowed, match=f"{source} -> {target} is not allowed"):
            task_transition(task=task, to=target, actor="tester")
        task.refresh_from_db()
        assert task.state == source
    assert not TaskTransition.objects.exclude(to_state=TaskState.CREATED).exists()


def test_it_releases_the_reservation_on_cancel(produced) -> None:
    task = _task_in(produced, TaskState.DELIVERED)
    task_transition(task=task, to=TaskState.CANCELLED, actor="tester")
    produced.refresh_from_db()
    assert produced.reserved == Decimal("195.00") - task.reward
    assert BudgetLedgerEntry.objects.get(task=task, kind="release").amount == task.reward


def test_it_settles_the_reward_on_completion(produced) -> None:
    task = _task_in(produced, TaskState.ACCEPTED)
    task_transition(task=task, to=TaskState.COMPLETED, actor="tester")
    produced.refresh_from_db()
    assert (produced.reserved, produced.settled) == (Decimal("155.00"), Decimal("40.00"))


def test_it_walks_events_forward_one_audited_step_at_a_time(produced) -> None:
    task = _task_in(produced, TaskState.CREATED)
    task_advance(task_id=task.pk, to=TaskState.ACCEPTED, actor="push")
    steps = list(
        TaskTransition.objects.filter(task=task, actor="push").values_list("from_state", "to_state")
    )
    assert steps == [("created", "pushed"), ("pushed", "delivered"), ("delivered", "accepted")]


def test_it_ignores_a_late_event_for_a_task_already_past_it(produced) -> None:
    task = _task_in(produced, TaskState.ACCEPTED)
    assert task_advance(task_id=task.pk, to=TaskState.DELIVERED, actor="push").state == "accepted"


def test_it_refuses_an_event_for_a_final_task(produced) -> None:
    task = _task_in(produced, TaskState.EXPIRED)
    with pytest.raises(TransitionNotAllowed, match="expired -> delivered"):
        task_advance(task_id=task.pk, to=TaskState.DELIVERED, actor="push")


def test_bulk_transitions_skip_tasks_that_may_not_move(produced) -> None:
    done = _task_in(produced, TaskState.COMPLETED, "A001")
    waiting = _task_in(produced, TaskState.PUSHED, "A002")
    batch = tasks_transition_bulk(task_ids=[done.pk, waiting.pk], to=TaskState.CANCELLED, actor="t")
    assert (batch.ids, batch.amount) == ([waiting.pk], Decimal("25.00"))
    again = tasks_transition_bulk(task_ids=[done.pk, waiting.pk], to=TaskState.CANCELLED, actor="t")
    assert again.ids == []
