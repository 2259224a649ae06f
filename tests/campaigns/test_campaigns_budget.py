"""The budget ledger: reserved + settled never exceeds the budget, also under concurrency."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from advertisers.models import DailyStat
from campaigns.lifecycle import TransitionNotAllowed
from campaigns.models import BudgetLedgerEntry, Campaign, IncentiveTask, TaskState
from campaigns.services import (
    BudgetExceeded,
    budget_release,
    budget_reserve,
    budget_settle,
    campaign_produce,
    task_advance,
    tasks_settle,
)

from .conftest import AS_OF


def _ledger(campaign: Campaign, kind: str) -> Decimal:
    total = BudgetLedgerEntry.objects.filter(campaign=campaign, kind=kind).aggregate(
        s=Sum("amount")
    )
    return total["s"] or Decimal("0")


def _assert_consistent(campaign: Campaign) -> None:
    campaign.refresh_from_db()
    assert campaign.reserved + campaign.settled <= campaign.budget
    reserve, release, settle = (_ledger(campaign, k) for k in ("reserve", "release", "settle"))
    assert campaign.reserved == reserve - release - settle
    assert campaign.settled == settle


def _spare_tasks(campaign: Campaign, world, n: int) -> list[int]:
    """n closed tasks of one advertiser: ledger rows need a task, the budget does not care."""
    template = world.templates[0]
    tasks = IncentiveTask.objects.bulk_create(
        IncentiveTask(
            campaign=campaign,
            advertiser=world.advertisers[0],
            template=template,
            kind=template.kind,
            target=Decimal("100"),
            reward=Decimal("3"),
            predicted_activity=0,
            predicted_base=0,
            prediction_as_of=AS_OF,
            valid_from=AS_OF,
            valid_until=AS_OF,
            state=TaskState.CANCELLED,
        )
        for _ in range(n)
    )
    return [t.pk for t in tasks]


def _run_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def run(work: Callable[[], None]) -> None:
        try:
            barrier.wait()
            work()
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_it_reserves_releases_and_settles(make_campaign, world) -> None:
    campaign = make_campaign(budget=Decimal("10"))
    a, b = _spare_tasks(campaign, world, 2)
    budget_reserve(campaign_id=campaign.pk, amounts=[(a, Decimal("3")), (b, Decimal("3"))])
    budget_release(campaign_id=campaign.pk, amounts=[(a, Decimal("3"))])
    budget_settle(campaign_id=campaign.pk, amounts=[(b, Decimal("3"))])
    campaign.refresh_from_db()
    assert (campaign.reserved, campaign.settled) == (Decimal("0"), Decimal("3"))
    _assert_consistent(campaign)


def test_it_refuses_a_reservation_over_the_budget(make_campaign, world) -> None:
    campaign = make_campaign(budget=Decimal("5"))
    a, b = _spare_tasks(campaign, world, 2)
    budget_reserve(campaign_id=campaign.pk, amounts=[(a, Decimal("3"))])
    with pytest.raises(BudgetExceeded, match=r"only 2\.00 of its budget is left"):
        budget_reserve(campaign_id=campaign.pk, amounts=[(b, Decimal("3"))])
    assert _ledger(campaign, "reserve") == Decimal("3")


def test_it_refuses_to_move_a_tasks_money_twice(make_campaign, world) -> None:
    campaign = make_campaign()
    (a,) = _spare_tasks(campaign, world, 1)
    budget_reserve(campaign_id=campaign.pk, amounts=[(a, Decimal("3"))])
    with pytest.raises(IntegrityError), transaction.atomic():
        budget_reserve(campaign_id=campaign.pk, amounts=[(a, Decimal("3"))])
    campaign.refresh_from_db()
    assert campaign.reserved == Decimal("3")


def test_the_database_refuses_an_overspent_campaign(make_campaign) -> None:
    campaign = make_campaign(budget=Decimal("5"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(reserved=Decimal("6"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_the_budget(make_campaign, world) -> None:
    campaign = make_campaign(budget=Decimal("100"))
    ids = _spare_tasks(campaign, world, 40)  # 40 x 3 = 120 asked of 100
    granted: list[int] = []

    def reserve_some(chunk: list[int]) -> Callable[[], None]:
        def work() -> None:
            for task_id in chunk:
                try:
                    budget_reserve(campaign_id=campaign.pk, amounts=[(task_id, Decimal("3"))])
                    granted.append(task_id)
                except BudgetExceeded:
                    pass

        return work

    errors = _run_threads([reserve_some(ids[i::8]) for i in range(8)])
    assert errors == []
    campaign.refresh_from_db()
    assert (len(granted), campaign.reserved) == (33, Decimal("99.00"))
    _assert_consistent(campaign)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_production_and_settlement_stay_within_budget(make_campaign, world) -> None:
    # Everyone meets any target on the first day of the window, so settlement pays as it goes.
    DailyStat.objects.bulk_create(
        DailyStat(
            advertiser=a,
            scenario=world.search,
            date=AS_OF + timedelta(days=d),
            expenditure=Decimal("1000"),
            logins=1,
        )
        for a in world.advertisers
        for d in (1, 2, 3)
    )
    campaign = make_campaign(budget=Decimal("100"))  # the six tasks need 195
    arms = [[a.pk for a in world.advertisers[i : i + 2]] for i in (0, 2, 4)]

    def produce(arm: list[int]) -> Callable[[], None]:
        return lambda: campaign_produce(campaign=campaign, candidate_advertiser_ids=arm)

    def accept_and_settle() -> None:
        for _ in range(6):
            for task in IncentiveTask.objects.filter(state__in=["created", "pushed", "delivered"]):
                with contextlib.suppress(TransitionNotAllowed):  # the other thread settled it
                    task_advance(task_id=task.pk, to=TaskState.ACCEPTED, actor="test")
            tasks_settle(through=AS_OF)

    errors = _run_threads([*(produce(arm) for arm in arms), accept_and_settle, accept_and_settle])
    assert errors == []
    accept_and_settle()
    campaign.refresh_from_db()
    assert campaign.settled > 0
    assert IncentiveTask.objects.filter(campaign=campaign).count() < 6  # the budget cut some
    _assert_consistent(campaign)
