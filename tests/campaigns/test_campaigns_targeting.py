"""Targeting policies of task production: P(inactive) first, random, exploration, uplift
allocation under the budget, and every campaign's random holdout."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from campaigns.models import Campaign, CampaignHoldout, IncentiveTask
from campaigns.services import ProductionError, campaign_produce
from campaigns.services.production import REWARD_LEVELS
from predictor.models import Prediction


def _ids(campaign: Campaign) -> list[str]:
    return list(
        IncentiveTask.objects.filter(campaign=campaign)
        .order_by("pk")
        .values_list("advertiser__advertiser_id", flat=True)
    )


def test_it_targets_the_most_likely_inactive_first_when_the_model_gives_p_inactive(
    world, make_campaign
):
    # P(inactive) ranks against predicted active days: A005 is the most likely to go quiet.
    for i, a in enumerate(world.advertisers):
        Prediction.objects.filter(advertiser=a).update(p_inactive=0.1 + 0.1 * i)
    campaign = make_campaign(top_n=2)
    result = campaign_produce(campaign=campaign)
    assert _ids(campaign) == ["A005", "A004"]
    task = IncentiveTask.objects.filter(campaign=campaign).order_by("pk").first()
    # per advertiser: the product over its scope's scenarios (search 0.6 x display 0.6)
    assert task.selection_kind == "p_inactive"
    assert task.selection_score == pytest.approx(0.6 * 0.6)
    assert result.note == ""


def test_it_falls_back_to_least_predicted_active_days_and_says_so(world, make_campaign):
    campaign = make_campaign(top_n=2)
    result = campaign_produce(campaign=campaign)
    assert _ids(campaign) == ["A000", "A001"]
    assert "no P(inactive)" in result.note
    assert set(IncentiveTask.objects.values_list("selection_kind", flat=True)) == {"active_days"}


def test_it_picks_random_advertisers_reproducibly(world, make_campaign):
    campaign = make_campaign(top_n=3, targeting=Campaign.Targeting.RANDOM)
    preview = campaign_produce(campaign=campaign, dry_run=True)
    campaign_produce(campaign=campaign)
    chosen = _ids(campaign)
    assert len(chosen) == 3 and len(set(chosen)) == 3
    assert [s["advertiser_id"] for s in preview.sample] == chosen


def test_it_randomises_exploration_offers_within_the_reward_levels(world, make_campaign):
    campaign = make_campaign(
        top_n=6, targeting=Campaign.Targeting.EXPLORATION, budget=Decimal(10_000)
    )
    campaign_produce(campaign=campaign)
    tasks = list(IncentiveTask.objects.filter(campaign=campaign))
    assert len(tasks) == 6
    assert {t.selection_kind for t in tasks} == {"exploration"}
    assert {t.selection_score for t in tasks} <= set(REWARD_LEVELS)


class _KnownScorer:
    """Gain 0.5 for advertisers A003..A005 at the highest reward level, nothing otherwise."""

    def __call__(self, candidates, offers):
        responsive = np.array([int(a[1:]) >= 3 for a in candidates.advertiser_id])
        top = offers.reward >= offers.reward.max(axis=1, keepdims=True)
        gain = np.where(responsive[:, None] & top, 0.5, 0.0)
        return gain, gain * 10


def test_it_allocates_by_uplift_under_the_budget(world, make_campaign):
    campaign = make_campaign(top_n=6, targeting=Campaign.Targeting.UPLIFT, budget=Decimal(500))
    result = campaign_produce(campaign=campaign, offer_scorer=_KnownScorer())
    tasks = list(IncentiveTask.objects.filter(campaign=campaign))
    assert {t.advertiser.advertiser_id for t in tasks} <= {"A003", "A004", "A005"}
    assert len(tasks) >= 1
    assert sum(t.reward for t in tasks) <= Decimal(500)
    assert all(t.expected_gain == pytest.approx(0.5) for t in tasks)
    assert result.produced == len(tasks)


def test_it_refuses_uplift_allocation_without_a_trained_model(world, make_campaign):
    campaign = make_campaign(top_n=6, targeting=Campaign.Targeting.UPLIFT)
    with pytest.raises(ProductionError, match="no uplift model"):
        campaign_produce(campaign=campaign)
    assert not IncentiveTask.objects.exists()


def test_it_keeps_a_random_holdout_that_never_gets_a_task(world, make_campaign):
    campaign = make_campaign(top_n=6, holdout_share=0.5, targeting=Campaign.Targeting.RANDOM)
    result = campaign_produce(campaign=campaign)
    held = set(
        CampaignHoldout.objects.filter(campaign=campaign).values_list("advertiser_id", flat=True)
    )
    tasked = set(
        IncentiveTask.objects.filter(campaign=campaign).values_list("advertiser_id", flat=True)
    )
    assert result.held_out == len(held) > 0
    assert not held & tasked
    assert len(held) + len(tasked) == 6
    # a second production never hands the holdout a task either
    IncentiveTask.objects.filter(campaign=campaign).update(state="cancelled")
    campaign_produce(campaign=campaign)
    assert not held & set(
        IncentiveTask.objects.filter(campaign=campaign, state="created").values_list(
            "advertiser_id", flat=True
        )
    )


def test_it_writes_no_holdout_in_a_preview(world, make_campaign):
    campaign = make_campaign(top_n=6, holdout_share=0.5)
    campaign_produce(campaign=campaign, dry_run=True)
    assert not CampaignHoldout.objects.exists()
