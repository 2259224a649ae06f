"""The demo's commands and the Celery tasks (eager)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Campaign, IncentiveTask, TaskTemplate
from campaigns.tasks import campaign_produce_task, tasks_settle_task


def test_campaign_run_produces_and_reports(world, capsys) -> None:
    call_command(
        "campaign_run",
        "--name",
        "Demo",
        "--kind",
        "m2m",
        "--top",
        "3",
        "--budget",
        "30",
        "--holdout",
        "0",
    )
    out = capsys.readouterr().out
    assert "produced 2 tasks of 3 selected; budget reserved 20.00 of 30.00" in out
    assert "(1 skipped for budget)" in out
    assert Campaign.objects.get(name="Demo").status == Campaign.Status.RUNNING


def test_campaign_run_scopes_to_a_scenario(world, capsys) -> None:
    call_command(
        "campaign_run", "--name", "S", "--top", "6", "--budget", "1000", "--scenario", "search"
    )
    assert set(IncentiveTask.objects.values_list("scenario__code", flat=True)) == {"search"}


def test_campaign_run_creates_the_default_templates_once(world) -> None:
    for name in ("One", "Two"):
        call_command("campaign_run", "--name", name, "--top", "1", "--budget", "100")
    assert TaskTemplate.objects.count() == 3


def test_campaign_run_names_an_unknown_scenario(world) -> None:
    with pytest.raises(
        CommandError, match=r"Unknown scenario\(s\) \['nope'\]; known: display, search"
    ):
        call_command(
            "campaign_run", "--name", "X", "--top", "1", "--budget", "1", "--scenario", "nope"
        )


def test_campaign_run_rejects_a_bad_budget(world) -> None:
    with pytest.raises(CommandError, match="at most 2 decimals"):
        call_command("campaign_run", "--name", "X", "--top", "1", "--budget", "1.234")


def test_campaign_run_explains_missing_predictions(world) -> None:
    with pytest.raises(CommandError, match="no active or ready mmoe model version"):
        call_command("campaign_run", "--name", "X", "--kind", "mmoe", "--top", "1", "--budget", "9")


def test_the_celery_tasks_run_production_and_settlement(make_campaign) -> None:
    campaign = make_campaign()
    produced = campaign_produce_task.delay(campaign.pk).get()
    assert (produced["produced"], produced["budget_reserved"]) == (6, "195.00")
    assert tasks_settle_task.delay().get()["open_tasks"] == 6
    campaign.refresh_from_db()
    assert campaign.reserved == Decimal("195.00")


def test_campaign_run_holds_out_a_share_and_says_so(world, capsys) -> None:
    call_command(
        "campaign_run", "--name", "H", "--top", "6", "--budget", "1000", "--holdout", "0.5"
    )
    out = capsys.readouterr().out
    campaign = Campaign.objects.get(name="H")
    held = campaign.holdouts.count()
    assert held and f"{held} held out without a task" in out
    assert campaign.tasks.count() + held <= 6


def test_campaign_run_refuses_a_holdout_outside_0_1(world) -> None:
    with pytest.raises(CommandError, match=r"--holdout must be in \[0, 1\), got 1.5"):
        call_command(
            "campaign_run", "--name", "X", "--top", "1", "--budget", "1", "--holdout", "1.5"
        )
