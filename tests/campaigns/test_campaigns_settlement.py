"""Settlement: progress by kind, completion (once), expiry with release, the data clock."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from advertisers.models import DailyStat
from campaigns.models import BudgetLedgerEntry, Campaign, IncentiveTask, TaskState
from campaigns.selectors import tasks_progress
from campaigns.services import campaign_produce, task_advance, tasks_settle

from .conftest import AS_OF

DAY1 = AS_OF + timedelta(days=1)


def _task(advertiser_id: str) -> IncentiveTask:
    return IncentiveTask.objects.get(advertiser__advertiser_id=advertiser_id)


def _spend(
    world, advertiser_id: str, amount: str, day=DAY1, scenario=None, logins: int = 0
) -> None:
    advertiser = next(a for a in world.advertisers if a.advertiser_id == advertiser_id)
    DailyStat.objects.create(
        advertiser=advertiser,
        scenario=scenario or world.search,
        date=day,
        expenditure=Decimal(amount),
        logins=logins,
    )


def _accept(advertiser_id: str) -> IncentiveTask:
    return task_advance(task_id=_task(advertiser_id).pk, to=TaskState.ACCEPTED, actor="test")


def test_it_measures_spend_over_the_window_in_any_scenario(produced, world) -> None:
    _spend(world, "A003", "150")
    _spend(world, "A003", "100", scenario=world.display)
    _spend(world, "A003", "999", day=AS_OF)  # before the window
    assert tasks_progress(task_ids=[_task("A003").pk])[_task("A003").pk].progress == Decimal("250")


def test_it_counts_login_days(produced, world) -> None:
    _spend(world, "A000", "0", logins=2)
    _spend(world, "A000", "0", day=DAY1 + timedelta(days=1), logins=1)
    _spend(world, "A000", "0", day=DAY1 + timedelta(days=2), logins=0)
    assert tasks_progress(task_ids=[_task("A000").pk])[_task("A000").pk].progress == Decimal("2")


def test_it_counts_only_the_task_scenario(make_campaign, world) -> None:
    campaign_produce(campaign=make_campaign(scenarios=[world.search], top_n=6))
    _spend(world, "A003", "100")
    _spend(world, "A003", "500", scenario=world.display)
    task = _task("A003")
    assert task.scenario_id == world.search.pk
    assert tasks_progress(task_ids=[task.pk])[task.pk].progress == Decimal("100")


def test_it_completes_an_accepted_task_that_reached_its_target(produced, world) -> None:
    _accept("A003")
    _spend(world, "A003", "400")
    result = tasks_settle()
    produced.refresh_from_db()
    assert (result.completed, result.settled_amount) == (1, Decimal("40.00"))
    assert _task("A003").state == TaskState.COMPLETED
    assert (produced.reserved, produced.settled) == (Decimal("155.00"), Decimal("40.00"))


def test_a_second_run_pays_nothing_more(produced, world) -> None:
    _accept("A003")
    _spend(world, "A003", "400")
    tasks_settle()
    again = tasks_settle()
    produced.refresh_from_db()
    assert (again.completed, again.settled_amount) == (0, Decimal("0"))
    assert produced.settled == Decimal("40.00")
    assert BudgetLedgerEntry.objects.filter(kind="settle").count() == 1


def test_it_leaves_a_task_that_was_not_accepted(produced, world) -> None:
    task_advance(task_id=_task("A003").pk, to=TaskState.DELIVERED, actor="test")
    _spend(world, "A003", "400")
    assert tasks_settle().completed == 0
    assert _task("A003").state == TaskState.DELIVERED


def test_it_stores_the_measured_progress(produced, world) -> None:
    _spend(world, "A003", "120")
    tasks_settle()
    assert _task("A003").progress == Decimal("120.00")


def test_it_expires_overdue_tasks_and_releases_their_reservations(produced, world) -> None:
    _accept("A003")
    _spend(world, "A003", "10", day=AS_OF + timedelta(days=7))  # data now covers the window
    result = tasks_settle()
    produced.refresh_from_db()
    assert (result.expired, result.released_amount) == (6, Decimal("195.00"))
    assert produced.reserved == Decimal("0")
    assert set(IncentiveTask.objects.values_list("state", flat=True)) == {TaskState.EXPIRED}


def test_it_waits_for_the_window_data_before_expiring(produced, world) -> None:
    _spend(world, "A003", "10", day=AS_OF + timedelta(days=6))
    assert tasks_settle().expired == 0


def test_the_settle_command_reports_the_run(produced, world, capsys) -> None:
    _accept("A003")
    _spend(world, "A003", "400")
    call_command("settle")
    assert "1 completed (paid 40.00)" in capsys.readouterr().out


def _unreserve(campaign) -> None:
    """Break a campaign's books: its tasks lose their reservations."""
    BudgetLedgerEntry.objects.filter(campaign=campaign).delete()
    Campaign.objects.filter(pk=campaign.pk).update(reserved=0)


def test_a_campaign_without_reservations_is_skipped_and_the_others_settle(
    make_campaign, world
) -> None:
    bad, good = make_campaign(top_n=3, name="broken"), make_campaign(name="sound")
    campaign_produce(campaign=bad)
    campaign_produce(campaign=good)
    _unreserve(bad)
    _spend(world, "A003", "10", day=AS_OF + timedelta(days=7))  # every window has passed

    result = tasks_settle()

    (skipped,) = result.skipped
    assert (skipped.campaign_id, skipped.name) == (bad.pk, "broken")
    assert "no budget reservation" in skipped.reason
    good.refresh_from_db()
    assert (result.expired, good.reserved) == (3, Decimal("0"))
    assert set(IncentiveTask.objects.filter(campaign=bad).values_list("state", flat=True)) == {
        TaskState.CREATED
    }
    assert not BudgetLedgerEntry.objects.filter(campaign=bad).exists()


def test_a_campaign_whose_reservation_falls_short_is_skipped(make_campaign, world) -> None:
    bad, good = make_campaign(top_n=3, name="short"), make_campaign(name="sound")
    campaign_produce(campaign=bad)
    campaign_produce(campaign=good)
    Campaign.objects.filter(pk=bad.pk).update(reserved=Decimal("1.00"))
    _spend(world, "A003", "10", day=AS_OF + timedelta(days=7))

    result = tasks_settle()

    assert [s.campaign_id for s in result.skipped] == [bad.pk]
    assert "more than is reserved" in result.skipped[0].reason
    assert result.expired == 3
    assert IncentiveTask.objects.filter(campaign=bad, state=TaskState.EXPIRED).count() == 0
    # The skipped campaign's money and tasks are untouched; a rerun tries it again.
    bad.refresh_from_db()
    assert bad.reserved == Decimal("1.00")
    assert [s.campaign_id for s in tasks_settle().skipped] == [bad.pk]


def test_the_settle_command_reports_a_skipped_campaign_and_fails(
    make_campaign, world, capsys
) -> None:
    bad, good = make_campaign(top_n=3, name="broken"), make_campaign(name="sound")
    campaign_produce(campaign=bad)
    campaign_produce(campaign=good)
    _unreserve(bad)
    _spend(world, "A003", "10", day=AS_OF + timedelta(days=7))

    with pytest.raises(CommandError, match="1 campaign"):
        call_command("settle")

    captured = capsys.readouterr()
    assert "3 expired" in captured.out
    assert f"campaign {bad.pk} (broken) skipped" in captured.err
