"""Production: selection, eligibility, personalisation, budget cut-off, preview, templates."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from advertisers.models import DailyStat
from campaigns.models import (
    BudgetLedgerEntry,
    Campaign,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTemplate,
    TaskTransition,
)
from campaigns.selectors import NoModelVersion
from campaigns.services import (
    ProductionError,
    campaign_close,
    campaign_launch,
    campaign_produce,
    campaigns_schedule_tick,
    round_nice,
    template_create,
    template_update,
)
from predictor.models import ModelVersion

from .conftest import AS_OF


def _targets(campaign: Campaign) -> dict[str, tuple[str, Decimal, Decimal]]:
    tasks = IncentiveTask.objects.filter(campaign=campaign).select_related("advertiser")
    return {t.advertiser.advertiser_id: (t.kind, t.target, t.reward) for t in tasks}


def test_it_rounds_up_to_friendly_numbers() -> None:
    values = np.array([0.0, 1.0, 101.0, 120.0, 150.0, 151.0, 240.0, 360.0, 480.0, 999.0, 1234.0])
    expected = [0, 1, 150, 150, 150, 200, 250, 400, 500, 1000, 1500]
    assert round_nice(values).tolist() == expected


def test_it_personalises_targets_and_rewards(make_campaign) -> None:
    campaign = make_campaign()
    campaign_produce(campaign=campaign)
    assert _targets(campaign) == {
        "A000": ("login_days", Decimal("3.00"), Decimal("5.00")),
        "A001": ("spend_target", Decimal("150.00"), Decimal("15.00")),
        "A002": ("spend_target", Decimal("250.00"), Decimal("25.00")),
        "A003": ("spend_target", Decimal("400.00"), Decimal("40.00")),
        "A004": ("spend_target", Decimal("500.00"), Decimal("50.00")),
        "A005": ("spend_target", Decimal("600.00"), Decimal("60.00")),
    }


def test_it_reserves_the_budget_and_writes_messages_and_audit(make_campaign) -> None:
    campaign = make_campaign()
    result = campaign_produce(campaign=campaign)
    campaign.refresh_from_db()
    assert (result.produced, result.budget_reserved) == (6, Decimal("195.00"))
    assert campaign.reserved == Decimal("195.00")
    assert campaign.status == Campaign.Status.RUNNING
    assert BudgetLedgerEntry.objects.filter(campaign=campaign, kind="reserve").count() == 6
    assert PushMessage.objects.filter(task__campaign=campaign).count() == 6
    assert TaskTransition.objects.filter(to_state=TaskState.CREATED).count() == 6


def test_it_renders_the_message_text(make_campaign) -> None:
    campaign = make_campaign()
    campaign_produce(campaign=campaign)
    message = PushMessage.objects.get(advertiser__advertiser_id="A003")
    valid_until = (AS_OF + timedelta(days=7)).isoformat()
    assert message.body == (f"Spend 400 in any scenario by {valid_until} and earn a 40 coupon.")
    assert json.loads(message.content)["target"] == "400.00"


def test_it_picks_the_bottom_n_least_active(make_campaign) -> None:
    campaign = make_campaign(top_n=2)
    campaign_produce(campaign=campaign)
    assert sorted(_targets(campaign)) == ["A000", "A001"]


def test_it_picks_by_threshold(make_campaign) -> None:
    campaign = make_campaign(
        policy=Campaign.Policy.THRESHOLD, threshold=Decimal("2.25"), top_n=None
    )
    campaign_produce(campaign=campaign)
    assert sorted(_targets(campaign)) == ["A000", "A001", "A002"]


def test_it_restricts_to_candidates(make_campaign, world) -> None:
    campaign = make_campaign()
    arm = [world.advertisers[4].pk, world.advertisers[1].pk]
    campaign_produce(campaign=campaign, candidate_advertiser_ids=arm)
    assert sorted(_targets(campaign)) == ["A001", "A004"]


def test_it_skips_advertisers_inactive_in_the_lookback(make_campaign, world) -> None:
    DailyStat.objects.filter(advertiser=world.advertisers[0]).update(
        date=AS_OF - timedelta(days=28)
    )
    campaign = make_campaign()
    campaign_produce(campaign=campaign)
    assert "A000" not in _targets(campaign)


def test_it_skips_advertisers_inactive_in_the_scope(make_campaign, world) -> None:
    campaign = make_campaign(scenarios=[world.display])
    result = campaign_produce(campaign=campaign)
    assert result.selected == 0


def test_it_skips_advertisers_with_an_open_task(make_campaign) -> None:
    first = make_campaign(top_n=1)
    campaign_produce(campaign=first)
    second = make_campaign()
    campaign_produce(campaign=second)
    assert "A000" not in _targets(second)
    assert len(_targets(second)) == 5


def test_it_skips_advertisers_in_cooldown(make_campaign) -> None:
    first = make_campaign(top_n=1)
    campaign_produce(campaign=first)
    campaign_close(campaign=first)  # the task is cancelled, no longer open
    second = make_campaign(cooldown_days=14)
    campaign_produce(campaign=second)
    assert "A000" not in _targets(second)


def test_it_stops_at_the_budget_and_reports_the_skipped(make_campaign) -> None:
    campaign = make_campaign(budget=Decimal("50"))
    result = campaign_produce(campaign=campaign)
    campaign.refresh_from_db()
    # 5 + 15 + 25 = 45 fits; the next (40) does not.
    assert (result.produced, result.skipped_budget) == (3, 3)
    assert result.budget_needed == Decimal("195.00")
    assert campaign.reserved == Decimal("45.00")


def test_it_caps_rewards_per_advertiser(make_campaign) -> None:
    campaign = make_campaign(reward_cap=Decimal("30"))
    campaign_produce(campaign=campaign)
    rewards = {a: r for a, (_, _, r) in _targets(campaign).items()}
    assert rewards["A005"] == Decimal("30.00")
    assert rewards["A001"] == Decimal("15.00")


def test_it_previews_without_writing(make_campaign) -> None:
    campaign = make_campaign(budget=Decimal("50"))
    result = campaign_produce(campaign=campaign, dry_run=True)
    campaign.refresh_from_db()
    assert (result.produced, result.skipped_budget, result.budget_needed) == (
        3,
        3,
        Decimal("195.00"),
    )
    assert result.sample[0]["advertiser_id"] == "A000"
    assert IncentiveTask.objects.count() == 0
    assert (campaign.reserved, campaign.status) == (Decimal("0"), Campaign.Status.DRAFT)


def test_it_refuses_a_closed_campaign(make_campaign) -> None:
    campaign = make_campaign()
    campaign_close(campaign=campaign)
    with pytest.raises(ProductionError, match="closed"):
        campaign_produce(campaign=campaign)


def test_it_names_a_missing_model_version(make_campaign, world) -> None:
    campaign = make_campaign(model_kind="mmoe")
    with pytest.raises(NoModelVersion, match="mmoe"):
        campaign_produce(campaign=campaign)


def test_it_uses_the_newest_ready_version_when_none_is_active(make_campaign, world) -> None:
    ModelVersion.objects.filter(pk=world.version.pk).update(status=ModelVersion.Status.READY)
    result = campaign_produce(campaign=make_campaign(), dry_run=True)
    assert result.model_version_id == world.version.pk


def test_it_schedules_a_campaign_that_starts_later(make_campaign) -> None:
    campaign = make_campaign(starts_at=timezone.now() + timedelta(days=1))
    assert campaign_launch(campaign=campaign) is None
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert IncentiveTask.objects.count() == 0


def test_it_rejects_templates_outside_the_scope(make_campaign, world) -> None:
    display_only = template_create(
        name="Display spend",
        kind="spend_target",
        scenario=world.display,
        reward_value=Decimal("5"),
        minimum_target=Decimal("10"),
        message_text="Spend {target}.",
    )
    with pytest.raises(ValidationError, match="outside"):
        make_campaign(scenarios=[world.search], templates=[display_only])


def test_it_rejects_unknown_placeholders(world) -> None:
    with pytest.raises(ValidationError, match=r"\{coupon\}"):
        template_create(
            name="Bad",
            kind="login_days",
            reward_value=Decimal("5"),
            minimum_target=Decimal("3"),
            message_text="Earn {coupon}",
        )


def test_it_edits_an_unused_template_in_place(world) -> None:
    template = world.templates[0]
    edited = template_update(template=template, changes={"reward_value": Decimal("12")})
    assert (edited.pk, edited.version) == (template.pk, 1)


def test_it_versions_a_used_template_and_the_task_keeps_its_terms(make_campaign, world) -> None:
    campaign = make_campaign()
    campaign_produce(campaign=campaign)
    spend = world.templates[0]
    edited = template_update(template=spend, changes={"reward_value": Decimal("20")})
    spend.refresh_from_db()
    assert (edited.version, edited.is_current, spend.is_current) == (2, True, False)
    assert spend.reward_value == Decimal("10.00")
    task = IncentiveTask.objects.get(advertiser__advertiser_id="A001")
    assert (task.template_id, task.reward) == (spend.pk, Decimal("15.00"))


def test_new_tasks_use_the_new_template_version(make_campaign, world) -> None:
    campaign_produce(campaign=make_campaign(top_n=2))
    edited = template_update(template=world.templates[0], changes={"reward_value": Decimal("20")})
    later = make_campaign(top_n=1)
    campaign_produce(campaign=later)
    new_task = IncentiveTask.objects.get(campaign=later)
    assert new_task.advertiser.advertiser_id == "A002"
    assert (new_task.template_id, new_task.reward) == (edited.pk, Decimal("50.00"))


def test_it_rejects_a_percent_reward_for_a_day_target(world) -> None:
    with pytest.raises(ValidationError, match="percentage"):
        template_create(
            name="Bad",
            kind="active_days_target",
            reward_type=TaskTemplate.RewardType.PERCENT,
            reward_value=Decimal("5"),
            minimum_target=Decimal("3"),
            message_text="x",
        )


def test_the_schedule_tick_starts_due_campaigns_and_closes_ended_ones(make_campaign) -> None:
    now = timezone.now()
    due = make_campaign(starts_at=now - timedelta(hours=1))
    Campaign.objects.filter(pk=due.pk).update(status=Campaign.Status.SCHEDULED)
    ended = make_campaign(starts_at=now - timedelta(days=2), ends_at=now - timedelta(days=1))
    result = campaigns_schedule_tick(now=now)
    assert (result.started, result.closed) == ([due.pk], [ended.pk])
    assert IncentiveTask.objects.filter(campaign=due).count() == 6
