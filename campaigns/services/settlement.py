"""Settlement: measure every open task's progress, complete the accepted tasks that reached
their target (their reward is settled) and expire the tasks whose window has passed (their
reservation is released).

The clock is the data: a window has passed when the ingested DailyStat rows reach its last
day, so a task is never expired before the data that could complete it has arrived.
Runs are idempotent (state checks under row locks) and one at a time (an advisory lock).

Money moves campaign by campaign, each in its own savepoint: a campaign whose books do not add
up (a task to pay or release without a reservation, a reservation that does not cover it) is
reported and skipped, and the other campaigns are settled all the same.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from campaigns.models import BudgetLedgerEntry, Campaign, IncentiveTask, TaskState
from campaigns.selectors import TaskProgress, stats_latest_date, tasks_overdue, tasks_progress
from campaigns.services.budget import BudgetInconsistent
from campaigns.services.tasks import tasks_transition_bulk

logger = logging.getLogger(__name__)

SETTLEMENT_LOCK_KEY = 7_301_002


@dataclass(frozen=True)
class SkippedCampaign:
    campaign_id: int
    name: str
    reason: str

    def line(self) -> str:
        return f"campaign {self.campaign_id} ({self.name}) skipped: {self.reason}"


@dataclass(frozen=True)
class SettlementResult:
    through: date | None
    open_tasks: int
    completed: int
    expired: int
    settled_amount: Decimal
    released_amount: Decimal
    skipped: list[SkippedCampaign] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["through"] = self.through.isoformat() if self.through else None
        data["settled_amount"] = str(self.settled_amount)
        data["released_amount"] = str(self.released_amount)
        return data


@dataclass
class _CampaignWork:
    reached: list[int] = field(default_factory=list)
    overdue: list[int] = field(default_factory=list)


def tasks_settle(*, through: date | None = None, actor: str = "settlement") -> SettlementResult:
    """Settle open tasks with the data up to `through` (default: the last ingested day)."""
    completed = expired = 0
    settled = released = Decimal("0")
    skipped: list[SkippedCampaign] = []
    with transaction.atomic():
        _settlement_lock()
        through = through or stats_latest_date()
        progress = tasks_progress(open_only=True)
        _progress_store(progress)
        reached = [pk for pk, p in progress.items() if p.state == TaskState.ACCEPTED and p.reached]
        work = _work_by_campaign(reached=reached, through=through)
        unreserved = _unreserved(work)
        names = dict(Campaign.objects.filter(pk__in=work).values_list("pk", "name"))
        for campaign_id in sorted(work):  # a fixed order keeps concurrent writers deadlock-free
            todo = work[campaign_id]
            missing = sorted(unreserved.intersection(todo.reached + todo.overdue))
            if missing:
                skipped.append(_skip(campaign_id, names, _no_reservation(missing)))
                continue
            try:
                with transaction.atomic():  # a savepoint: this campaign alone rolls back
                    done = tasks_transition_bulk(
                        task_ids=todo.reached,
                        to=TaskState.COMPLETED,
                        actor=actor,
                        note="target reached",
                    )
                    gone = tasks_transition_bulk(
                        task_ids=todo.overdue,
                        to=TaskState.EXPIRED,
                        actor=actor,
                        note=f"window ended by {through}",
                    )
            except (BudgetInconsistent, IntegrityError) as exc:
                skipped.append(_skip(campaign_id, names, str(exc).splitlines()[0]))
                continue
            completed, settled = completed + len(done.ids), settled + done.amount
            expired, released = expired + len(gone.ids), released + gone.amount
    return SettlementResult(
        through=through,
        open_tasks=len(progress),
        completed=completed,
        expired=expired,
        settled_amount=settled,
        released_amount=released,
        skipped=skipped,
    )


def _work_by_campaign(*, reached: list[int], through: date | None) -> dict[int, _CampaignWork]:
    work: dict[int, _CampaignWork] = defaultdict(_CampaignWork)
    rows = IncentiveTask.objects.filter(pk__in=reached).values_list("pk", "campaign_id")
    for pk, campaign_id in rows:
        work[campaign_id].reached.append(pk)
    if through is not None:
        for pk, campaign_id in tasks_overdue(through=through).values_list("pk", "campaign_id"):
            work[campaign_id].overdue.append(pk)
    return dict(work)


def _unreserved(work: dict[int, _CampaignWork]) -> set[int]:
    """The tasks about to be paid or released whose reward was never reserved."""
    ids = [pk for todo in work.values() for pk in (*todo.reached, *todo.overdue)]
    reserved = BudgetLedgerEntry.objects.filter(
        task_id__in=ids, kind=BudgetLedgerEntry.Kind.RESERVE
    ).values_list("task_id", flat=True)
    return set(ids) - set(reserved)


def _no_reservation(task_ids: list[int]) -> str:
    shown = ", ".join(str(pk) for pk in task_ids[:10])
    more = f" and {len(task_ids) - 10} more" if len(task_ids) > 10 else ""
    return f"task(s) {shown}{more} have no budget reservation; nothing of it was settled"


def _skip(campaign_id: int, names: dict[int, str], reason: str) -> SkippedCampaign:
    skipped = SkippedCampaign(
        campaign_id=campaign_id, name=names.get(campaign_id, "?"), reason=reason
    )
    logger.error("settlement: %s", skipped.line())
    return skipped


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
