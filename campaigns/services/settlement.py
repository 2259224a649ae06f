"""Settlement: measure every open task's progress, complete the accepted tasks that reached
their target (their reward is settled) and expire the tasks whose window has passed (their
reservation is released).

The clock is the data: a window has passed when the ingested DailyStat rows reach its last
day, so a task is never expired before the data that could complete it has arrived.
Runs are idempotent (state checks under row locks) and one at a time (an advisory lock).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import IncentiveTask, TaskState
from campaigns.selectors import TaskProgress, stats_latest_date, tasks_overdue, tasks_progress
from campaigns.services.tasks import tasks_transition_bulk

SETTLEMENT_LOCK_KEY = 7_301_002


@dataclass(frozen=True)
class SettlementResult:
    through: date | None
    open_tasks: int
    completed: int
    expired: int
    settled_amount: Decimal
    released_amount: Decimal

    def as_dict(self) -> dict:
        data = asdict(self)
        data["through"] = self.through.isoformat() if self.through else None
        data["settled_amount"] = str(self.settled_amount)
        data["released_amount"] = str(self.released_amount)
        return data


def tasks_settle(*, through: date | None = None, actor: str = "settlement") -> SettlementResult:
    """Settle open tasks with the data up to `through` (default: the last ingested day)."""
    with transaction.atomic():
        _settlement_lock()
        through = through or stats_latest_date()
        progress = tasks_progress(open_only=True)
        _progress_store(progress)
        reached = [pk for pk, p in progress.items() if p.state == TaskState.ACCEPTED and p.reached]
        completed = tasks_transition_bulk(
            task_ids=reached, to=TaskState.COMPLETED, actor=actor, note="target reached"
        )
        overdue = (
            [] if through is None else tasks_overdue(through=through).values_list("pk", flat=True)
        )
        expired = tasks_transition_bulk(
            task_ids=overdue, to=TaskState.EXPIRED, actor=actor, note=f"window ended by {through}"
        )
    return SettlementResult(
        through=through,
        open_tasks=len(progress),
        completed=len(completed.ids),
        expired=len(expired.ids),
        settled_amount=completed.amount,
        released_amount=expired.amount,
    )


def _settlement_lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SETTLEMENT_LOCK_KEY])


def _progress_store(progress: dict[int, TaskProgress]) -> None:
    now = timezone.now()
    IncentiveTask.objects.bulk_update(
        [
            IncentiveTask(pk=pk, progress=p.progress, progress_updated_at=now)
            for pk, p in progress.items()
        ],
        ["progress", "progress_updated_at"],
        batch_size=1000,
    )
