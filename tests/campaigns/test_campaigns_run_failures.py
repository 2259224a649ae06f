"""`campaign_run` is all or nothing: a failed run and a dry run leave no campaign behind."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Campaign, IncentiveTask, TaskTemplate


def test_it_leaves_no_draft_when_production_fails(world) -> None:
    with pytest.raises(CommandError, match=r"no active or ready mmoe model version.*Nothing was"):
        call_command("campaign_run", "--name", "X", "--kind", "mmoe", "--top", "1", "--budget", "9")
    assert (Campaign.objects.count(), TaskTemplate.objects.count()) == (0, len(world.templates))


def test_it_leaves_nothing_after_a_dry_run(world, capsys) -> None:
    call_command(
        "campaign_run",
        "--name",
        "D",
        "--top",
        "3",
        "--budget",
        "100",
        "--dry-run",
        "--holdout",
        "0",
    )
    out = capsys.readouterr().out
    assert "Dry run (nothing stored) 'D'" in out
    assert "would produce 3 tasks of 3 selected" in out
    assert (Campaign.objects.count(), IncentiveTask.objects.count()) == (0, 0)


def test_it_keeps_a_successful_run(world) -> None:
    call_command("campaign_run", "--name", "Kept", "--top", "2", "--budget", "100")
    campaign = Campaign.objects.get(name="Kept")
    assert (campaign.status, campaign.tasks.count()) == (Campaign.Status.RUNNING, 2)
