"""The incentive task state machine: the one table of allowed transitions.

    created -> pushed -> delivered -> accepted -> completed
    any open state -> expired | cancelled

Only an accepted task can be completed: the advertiser has to take the offer. Events may skip
ahead (a delivery report for a task nobody marked pushed); `forward_path` spells out the
intermediate steps so each one is still checked and audited.
Every write goes through `campaigns.services.tasks`, which applies this table.
"""

from __future__ import annotations

from campaigns.models import OPEN_STATES, BudgetLedgerEntry, TaskState

ALLOWED: dict[str, frozenset[str]] = {
    TaskState.CREATED: frozenset({TaskState.PUSHED, TaskState.EXPIRED, TaskState.CANCELLED}),
    TaskState.PUSHED: frozenset({TaskState.DELIVERED, TaskState.EXPIRED, TaskState.CANCELLED}),
    TaskState.DELIVERED: frozenset({TaskState.ACCEPTED, TaskState.EXPIRED, TaskState.CANCELLED}),
    TaskState.ACCEPTED: frozenset({TaskState.COMPLETED, TaskState.EXPIRED, TaskState.CANCELLED}),
    TaskState.COMPLETED: frozenset(),
    TaskState.EXPIRED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}

# The happy path in order; events move a task along it.
FORWARD = (TaskState.CREATED, TaskState.PUSHED, TaskState.DELIVERED, TaskState.ACCEPTED)

# The timestamp field each state stamps on entry.
TIMESTAMP_FIELD: dict[str, str] = {
    TaskState.PUSHED: "pushed_at",
    TaskState.DELIVERED: "delivered_at",
    TaskState.ACCEPTED: "accepted_at",
    TaskState.COMPLETED: "completed_at",
    TaskState.EXPIRED: "expired_at",
    TaskState.CANCELLED: "cancelled_at",
}

# What happens to the task's reserved reward on entering a state.
BUDGET_EFFECT: dict[str, str] = {
    TaskState.COMPLETED: BudgetLedgerEntry.Kind.SETTLE,
    TaskState.EXPIRED: BudgetLedgerEntry.Kind.RELEASE,
    TaskState.CANCELLED: BudgetLedgerEntry.Kind.RELEASE,
}


class TransitionNotAllowed(Exception):
    """A requested state change that the table refuses; the message names both states."""


def transition_check(*, task_id: int, from_state: str, to_state: str) -> None:
    if to_state not in ALLOWED.get(from_state, frozenset()):
        allowed = ", ".join(sorted(ALLOWED.get(from_state, ()))) or "none (a final state)"
        raise TransitionNotAllowed(
            f"Task {task_id} is {from_state}; {from_state} -> {to_state} is not allowed "
            f"(allowed from {from_state}: {allowed})."
        )


def sources_of(to_state: str) -> list[str]:
    """States from which `to_state` may be entered (for conditional bulk updates)."""
    return [source for source, targets in ALLOWED.items() if to_state in targets]


def forward_path(*, task_id: int, from_state: str, to_state: str) -> list[str]:
    """The steps from `from_state` up to `to_state` along FORWARD; [] when already there or past.

    A final task cannot move: that raises TransitionNotAllowed.
    """
    if from_state not in OPEN_STATES:
        transition_check(task_id=task_id, from_state=from_state, to_state=to_state)
    start, end = FORWARD.index(from_state), FORWARD.index(to_state)
    return list(FORWARD[start + 1 : end + 1])
