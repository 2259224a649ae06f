"""The budget ledger: the one home of "reserved + settled never exceeds the budget".

Each function moves money for one campaign and a batch of its tasks with a single conditional
UPDATE of the campaign row, then writes one ledger entry per task. The WHERE clause carries the
invariant, so two transactions racing on the same campaign cannot both pass it: PostgreSQL
re-checks the condition against the row the first one committed. A check constraint on
Campaign backs this up, and a unique (task, kind) ledger constraint stops a task's money from
moving twice.

Lock order (to stay free of deadlocks): callers lock task rows first, the campaign row second.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from campaigns.models import BudgetLedgerEntry, Campaign

# (task id, amount) pairs of one campaign.
TaskAmounts = Sequence[tuple[int, Decimal]]


class BudgetExceeded(Exception):
    """A reservation that does not fit into what is left of the campaign's budget."""


class BudgetInconsistent(Exception):
    """A release or settlement of more than is reserved: a bug, never a user error."""


def _total(amounts: TaskAmounts) -> Decimal:
    return sum((amount for _, amount in amounts), Decimal("0"))


def _ledger_write(*, campaign_id: int, kind: str, amounts: TaskAmounts) -> None:
    BudgetLedgerEntry.objects.bulk_create(
        BudgetLedgerEntry(campaign_id=campaign_id, task_id=task_id, kind=kind, amount=amount)
        for task_id, amount in amounts
    )


def budget_reserve(*, campaign_id: int, amounts: TaskAmounts) -> Decimal:
    """Reserve the rewards of newly assigned tasks; all or nothing. Returns the total."""
    total = _total(amounts)
    if not amounts:
        return total
    with transaction.atomic():
        updated = Campaign.objects.filter(
            pk=campaign_id, reserved__lte=F("budget") - F("settled") - total
        ).update(reserved=F("reserved") + total)
        if updated != 1:
            remaining = Campaign.objects.get(pk=campaign_id).remaining
            raise BudgetExceeded(
                f"Campaign {campaign_id} cannot reserve {total}: only {remaining} of its "
                "budget is left. Raise the budget or produce fewer tasks."
            )
        _ledger_write(campaign_id=campaign_id, kind=BudgetLedgerEntry.Kind.RESERVE, amounts=amounts)
    return total


def budget_release(*, campaign_id: int, amounts: TaskAmounts) -> Decimal:
    """Give back the reservations of expired or cancelled tasks."""
    return _move(campaign_id=campaign_id, amounts=amounts, kind=BudgetLedgerEntry.Kind.RELEASE)


def budget_settle(*, campaign_id: int, amounts: TaskAmounts) -> Decimal:
    """Turn the reservations of completed tasks into paid money (reserved -> settled)."""
    return _move(campaign_id=campaign_id, amounts=amounts, kind=BudgetLedgerEntry.Kind.SETTLE)


def _move(*, campaign_id: int, amounts: TaskAmounts, kind: str) -> Decimal:
    total = _total(amounts)
    if not amounts:
        return total
    changes = {"reserved": F("reserved") - total}
    if kind == BudgetLedgerEntry.Kind.SETTLE:
        changes["settled"] = F("settled") + total
    with transaction.atomic():
        updated = Campaign.objects.filter(pk=campaign_id, reserved__gte=total).update(**changes)
        if updated != 1:
            raise BudgetInconsistent(
                f"Campaign {campaign_id}: cannot {kind} {total}, more than is reserved."
            )
        _ledger_write(campaign_id=campaign_id, kind=kind, amounts=amounts)
    return total
