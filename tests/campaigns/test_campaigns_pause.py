"""Pausing a campaign stops its production and the feed's new leases; its tasks keep their
terms; resuming lifts it; closing, unlike pausing, is final."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from advertisers.models import DailyStat
from campaigns.models import ApiConsumer, Campaign, IncentiveTask, PushMessage, TaskState
from campaigns.selectors import messages_feed_page
from campaigns.services import (
    CampaignStateError,
    ProductionError,
    campaign_close,
    campaign_launch,
    campaign_pause,
    campaign_produce,
    campaign_resume,
    campaigns_schedule_tick,
    messages_lease,
    task_advance,
    tasks_settle,
)

from .conftest import AS_OF

FEED = "/api/v1/messages"
LEASE = "/api/v1/messages/lease"


def _consumer(name: str) -> int:
    """A push consumer by name (events and leases belong to one)."""
    return ApiConsumer.objects.get_or_create(name=name)[0].pk


def _terms(campaign: Campaign) -> list[tuple]:
    return list(
        IncentiveTask.objects.filter(campaign=campaign)
        .order_by("pk")
        .values_list("pk", "target", "reward", "valid_from", "valid_until", "state")
    )


def test_it_stops_production_while_paused_and_resumes_it(make_campaign, world) -> None:
    campaign = make_campaign(top_n=3)
    campaign_produce(campaign=campaign)
    assert campaign_pause(campaign=campaign) is True
    assert campaign.is_paused
    with pytest.raises(CampaignStateError, match="is paused; resume it to launch it"):
        campaign_launch(campaign=campaign)
    with pytest.raises(ProductionError, match="is paused"):
        campaign_produce(campaign=campaign)
    campaign.top_n = 6
    campaign.save(update_fields=["top_n"])
    assert campaign_resume(campaign=campaign) is True
    result = campaign_launch(campaign=campaign)
    assert (result.produced, campaign.tasks.count()) == (3, 6)


def test_it_keeps_the_terms_and_reservation_of_open_tasks(produced: Campaign) -> None:
    before, reserved = _terms(produced), produced.reserved
    campaign_pause(campaign=produced)
    produced.refresh_from_db()
    assert (_terms(produced), produced.reserved) == (before, reserved)
    assert produced.status == Campaign.Status.RUNNING


def test_it_holds_back_new_leases_but_not_the_events_of_leased_messages(
    make_campaign: Callable[..., Campaign], world
) -> None:
    paused, other = make_campaign(top_n=3), make_campaign(name="Other", top_n=6)
    campaign_produce(campaign=paused)
    first = messages_lease(consumer_id=_consumer("a"), owner="a", limit=1, lease_seconds=30)
    campaign_produce(campaign=other)
    campaign_pause(campaign=paused)
    leased = messages_lease(consumer_id=_consumer("b"), owner="b", limit=50, lease_seconds=30)
    assert {m.task.campaign_id for m in leased} == {other.pk}
    assert len(leased) == IncentiveTask.objects.filter(campaign=other).count()
    # An expired lease of a paused campaign is not handed out again either.
    PushMessage.objects.filter(pk=first[0].pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert messages_lease(consumer_id=_consumer("c"), owner="c", limit=50, lease_seconds=30) == []
    campaign_resume(campaign=paused)
    again = messages_lease(consumer_id=_consumer("d"), owner="d", limit=50, lease_seconds=30)
    assert {m.task.campaign_id for m in again} == {paused.pk}
    assert len(again) == 3


def test_it_hides_the_unsent_messages_of_a_paused_campaign_from_the_feed(
    produced: Campaign, keys, client_for
) -> None:
    leased = messages_lease(consumer_id=_consumer("a"), owner="a", limit=2, lease_seconds=30)
    campaign_pause(campaign=produced)
    assert messages_feed_page(status="pending", after_id=0, limit=100) == []
    shown = [row[0] for row in messages_feed_page(status=None, after_id=0, limit=100)]
    assert shown == sorted(m.pk for m in leased)
    body = client_for(keys.push).get(FEED).json()
    assert body["results"] == []
    lease = client_for(keys.push).post(LEASE, {"max": 10}, format="json").json()
    assert lease["messages"] == []
    campaign_resume(campaign=produced)
    assert len(client_for(keys.push).get(FEED).json()["results"]) == 4


def test_it_does_not_start_a_paused_scheduled_campaign(make_campaign) -> None:
    later = timezone.now() + timedelta(days=1)
    campaign = make_campaign(starts_at=later)
    campaign_launch(campaign=campaign)
    campaign_pause(campaign=campaign)
    tick = campaigns_schedule_tick(now=later + timedelta(minutes=1))
    campaign.refresh_from_db()
    assert (tick.started, campaign.status, campaign.tasks.count()) == (
        [],
        Campaign.Status.SCHEDULED,
        0,
    )
    campaign_resume(campaign=campaign)
    assert campaigns_schedule_tick(now=later + timedelta(minutes=2)).started == [campaign.pk]


def test_it_is_idempotent_and_separate_from_closing(produced: Campaign) -> None:
    assert (campaign_pause(campaign=produced), campaign_pause(campaign=produced)) == (True, False)
    assert campaign_resume(campaign=produced) is True
    assert campaign_resume(campaign=produced) is False
    campaign_pause(campaign=produced)
    cancelled = campaign_close(campaign=produced)
    assert (cancelled, produced.status, produced.paused_at) == (6, Campaign.Status.CLOSED, None)
    with pytest.raises(CampaignStateError, match="closed; closing is final"):
        campaign_pause(campaign=produced)
    assert campaign_resume(campaign=produced) is False


def test_it_lets_accepted_tasks_of_a_paused_campaign_settle(produced: Campaign, world) -> None:
    task = IncentiveTask.objects.get(campaign=produced, advertiser__advertiser_id="A003")
    task_advance(task_id=task.pk, to=TaskState.ACCEPTED, actor="test")
    campaign_pause(campaign=produced)
    DailyStat.objects.create(
        advertiser=task.advertiser,
        scenario=world.search,
        date=AS_OF + timedelta(days=1),
        expenditure=task.target * 2,
        clicks=10_000,
        logins=1,
    )
    result = tasks_settle()
    task.refresh_from_db()
    produced.refresh_from_db()
    assert (result.completed, task.state, produced.settled) == (1, TaskState.COMPLETED, task.reward)


def test_it_pauses_and_resumes_from_the_admin(produced: Campaign, admin_client) -> None:
    url = reverse("admin:campaigns_campaign_changelist")
    selected = {"_selected_action": [produced.pk]}
    response = admin_client.post(url, {"action": "pause_campaigns", **selected}, follow=True)
    assert f"{produced.name}: paused" in response.content.decode()
    produced.refresh_from_db()
    assert produced.is_paused
    paused_list = admin_client.get(url, {"paused": "yes"})
    assert [c.pk for c in paused_list.context["cl"].result_list] == [produced.pk]
    response = admin_client.post(url, {"action": "resume_campaigns", **selected}, follow=True)
    assert f"{produced.name}: resumed" in response.content.decode()
    produced.refresh_from_db()
    assert not produced.is_paused
    assert produced.reserved == Decimal("195.00")
