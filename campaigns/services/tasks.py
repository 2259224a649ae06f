"""Task state changes: single, bulk and event-driven. Every one of them checks the table in
`campaigns.lifecycle`, stamps the state's timestamp, writes a TaskTransition audit row and moves
the reserved reward (release on expiry or cancellation, settle on completion) in the same
transaction.

Each function locks the task rows it changes (SELECT ... FOR UPDATE) and re-reads their state
under the lock, so a second run of the same change finds nothing left to do: settlement and
event handling are idempotent. A task that is cancelled or expires has its push message
withdrawn in the same transaction (lock order: tasks, messages, campaign).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from campaigns.lifecycle import (
    BUDGET_EFFECT,
    TIMESTAMP_FIELD,
    forward_path,
    sources_of,
    transition_check,
)
from campaigns.models import (
    BudgetLedgerEntry,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTransition,
)
from campaigns.services.budget import budget_release, budget_settle

# Bulk changes lock and update at most this many rows per statement.
BULK_CHUNK = 2000

# Entering these states takes the offer back: the task's message must not be sent any more.
WITHDRAWING_STATES = frozenset({TaskState.EXPIRED, TaskState.CANCELLED})


def _messages_withdraw(*, to_state: str, task_ids: list[int]) -> None:
    if to_state not in WITHDRAWING_STATES or not task_ids:
        return
    PushMessage.objects.filter(task_id__in=task_ids).exclude(
        status=PushMessage.Status.WITHDRAWN
    ).update(
        status=PushMessage.Status.WITHDRAWN, lease_expires_at=None, withdrawn_at=timezone.now()
    )


def _budget_apply(*, to_state: str, rows: Iterable[tuple[int, int, Decimal]]) -> None:
    """Move the money of (task id, campaign id, reward) rows that entered `to_state`."""
    effect = BUDGET_EFFECT.get(to_state)
    if effect is None:
        return
    by_campaign: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    for task_id, campaign_id, reward in rows:
        by_campaign[campaign_id].append((task_id, reward))
    move = budget_settle if effect == BudgetLedgerEntry.Kind.SETTLE else budget_release
    for campaign_id in sorted(by_campaign):  # a fixed order keeps concurrent runs deadlock-free
        move(campaign_id=campaign_id, amounts=by_campaign[campaign_id])


def _transition_locked(
    *, task: IncentiveTask, to: str, actor: str, note: str = ""
) -> IncentiveTask:
    """Apply one checked transition to a task the caller has locked."""
    transition_check(task_id=task.pk, from_state=task.state, to_state=to)
    from_state, stamp = task.state, TIMESTAMP_FIELD[to]
    task.state = to
    setattr(task, stamp, timezone.now())
    task.save(update_fields=["state", stamp])
    TaskTransition.objects.create(
        task=task, from_state=from_state, to_state=to, actor=actor, note=note[:500]
    )
    _messages_withdraw(to_state=to, task_ids=[task.pk])
    _budget_apply(to_state=to, rows=[(task.pk, task.campaign_id, task.reward)])
    return task


def task_transition(*, task: IncentiveTask, to: str, actor: str, note: str = "") -> IncentiveTask:
    """Move one task to `to`; raises lifecycle.TransitionNotAllowed when the table refuses."""
    with transaction.atomic():
        locked = IncentiveTask.objects.select_for_update().get(pk=task.pk)
        return _transition_locked(task=locked, to=to, actor=actor, note=note)


def task_advance(*, task_id: int, to: str, actor: str, note: str = "") -> IncentiveTask:
    """Move a task forward along created -> pushed -> delivered -> accepted up to `to`.

    Each intermediate step is checked and audited. A task already at or past `to` is left as it
    is (a late or repeated event); a final task raises TransitionNotAllowed.
    """
    with transaction.atomic():
        task = IncentiveTask.objects.select_for_update().get(pk=task_id)
        return task_advance_locked(task=task, to=to, actor=actor, note=note)


def task_advance_locked(
    *, task: IncentiveTask, to: str, actor: str, note: str = ""
) -> IncentiveTask:
    """task_advance for a task whose row the caller has locked; all steps in two statements."""
    steps = forward_path(task_id=task.pk, from_state=task.state, to_state=to)
    if not steps:
        return task
    sources = [task.state, *steps[:-1]]
    for source, step in zip(sources, steps, strict=True):
        transition_check(task_id=task.pk, from_state=source, to_state=step)
    now = timezone.now()
    stamps = {TIMESTAMP_FIELD[step]: now for step in steps}
    IncentiveTask.objects.filter(pk=task.pk).update(state=steps[-1], **stamps)
    TaskTransition.objects.bulk_create(
        TaskTransition(task=task, from_state=source, to_state=step, actor=actor, note=note[:500])
        for source, step in zip(sources, steps, strict=True)
    )
    task.state = steps[-1]
    for name, value in stamps.items():
        setattr(task, name, value)
    return task  # forward steps never move money: no budget effect to apply


@dataclass
class TransitionBatch:
    """The tasks a bulk change actually moved, and the sum of their rewards."""

    ids: list[int] = field(default_factory=list)
    amount: Decimal = Decimal("0")


def tasks_transition_bulk(
    *, task_ids: Iterable[int], to: str, actor: str, note: str = ""
) -> TransitionBatch:
    """Move every listed task that may enter `to`; the others are skipped, not errors.

    Only the tasks actually moved are returned, so a repeated call moves nothing, no money either.
    """
    ids = sorted(set(task_ids))
    batch = TransitionBatch()
    for start in range(0, len(ids), BULK_CHUNK):
        chunk = _transition_chunk(
            ids=ids[start : start + BULK_CHUNK], to=to, actor=actor, note=note
        )
        batch.ids += chunk.ids
        batch.amount += chunk.amount
    return batch


def _transition_chunk(*, ids: list[int], to: str, actor: str, note: str) -> TransitionBatch:
    stamp = TIMESTAMP_FIELD[to]
    with transaction.atomic():
        rows = list(
            IncentiveTask.objects.select_for_update()
            .filter(pk__in=ids, state__in=sources_of(to))
            .order_by("pk")
            .values_list("pk", "state", "campaign_id", "reward")
        )
        if not rows:
            return TransitionBatch()
        moved = [pk for pk, *_ in rows]
        IncentiveTask.objects.filter(pk__in=moved).update(state=to, **{stamp: timezone.now()})
        TaskTransition.objects.bulk_create(
            TaskTransition(task_id=pk, from_state=state, to_state=to, actor=actor, note=note[:500])
            for pk, state, _, _ in rows
        )
        _messages_withdraw(to_state=to, task_ids=moved)
        _budget_apply(to_state=to, rows=[(pk, cid, reward) for pk, _, cid, reward in rows])
    return TransitionBatch(ids=moved, amount=sum((r for *_, r in rows), Decimal("0")))
