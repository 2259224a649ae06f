"""Campaign lifecycle: draft -> scheduled -> running -> closed.

Launching a draft whose start lies ahead schedules it; launching a due campaign (draft,
scheduled, or running for a top-up) runs production. Closing cancels the tasks not yet
accepted (their reservations come back); accepted tasks run on to settlement.

Pausing is separate from the status and can be undone: a paused campaign produces no tasks
(launch, schedule, top-up) and the push feed hands out no new leases of its messages, while
the tasks it already gave keep their terms, progress and settlement. Resuming lifts it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from advertisers.models import Scenario
from campaigns.models import Campaign, IncentiveTask, TaskState, TaskTemplate
from campaigns.selectors import NoModelVersion
from campaigns.services.production import ProductionError, ProductionResult, campaign_produce
from campaigns.services.tasks import tasks_transition_bulk
from predictor.models import ModelVersion

logger = logging.getLogger(__name__)


class CampaignStateError(Exception):
    """An action the campaign's status does not allow; the message says which and why."""


def campaign_templates_validate(
    *, scenario_ids: Iterable[int], templates: Iterable[TaskTemplate]
) -> None:
    """Every template with a scenario must lie in the campaign's scope (an empty scope is all)."""
    scope = set(scenario_ids)
    outside = [str(t) for t in templates if scope and t.scenario_id and t.scenario_id not in scope]
    if outside:
        raise ValidationError(
            {
                "templates": f"Template(s) {', '.join(outside)} target a scenario outside the "
                "campaign's scope; add that scenario to the scope or pick other templates."
            }
        )


def campaign_create(
    *,
    name: str,
    budget: Decimal,
    reward_cap: Decimal,
    templates: Iterable[TaskTemplate],
    model_kind: str = "",
    model_version: ModelVersion | None = None,
    policy: str = Campaign.Policy.BOTTOM_N,
    targeting: str = Campaign.Targeting.LEAST_ACTIVITY,
    top_n: int | None = None,
    threshold: Decimal | None = None,
    scenarios: Iterable[Scenario] = (),
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    cooldown_days: int = 14,
    lookback_days: int = 28,
    holdout_share: float = 0.05,
    objective: str = Campaign.Objective.ACTIVES,
) -> Campaign:
    templates, scenarios = list(templates), list(scenarios)
    if not templates:
        raise ValidationError({"templates": "A campaign needs at least one task template."})
    campaign_templates_validate(scenario_ids=[s.pk for s in scenarios], templates=templates)
    campaign = Campaign(
        name=name,
        budget=budget,
        reward_cap=reward_cap,
        model_kind=model_kind,
        model_version=model_version,
        policy=policy,
        targeting=targeting,
        top_n=top_n,
        threshold=threshold,
        starts_at=starts_at or timezone.now(),
        ends_at=ends_at,
        cooldown_days=cooldown_days,
        lookback_days=lookback_days,
        holdout_share=holdout_share,
        objective=objective,
    )
    campaign.full_clean()
    with transaction.atomic():
        campaign.save()
        campaign.templates.set(templates)
        campaign.scenarios.set(scenarios)
    return campaign


def campaign_launch(
    *, campaign: Campaign, now: datetime | None = None, actor: str = "launch"
) -> ProductionResult | None:
    """Schedule a draft that starts later, or produce tasks now. None when only scheduled."""
    now = now or timezone.now()
    campaign.refresh_from_db()
    if campaign.status == Campaign.Status.CLOSED:
        raise CampaignStateError(f"Campaign {campaign.pk} ({campaign.name}) is closed.")
    if campaign.is_paused:
        raise CampaignStateError(
            f"Campaign {campaign.pk} ({campaign.name}) is paused; resume it to launch it."
        )
    if campaign.starts_at > now:
        if campaign.status == Campaign.Status.DRAFT:
            Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.DRAFT).update(
                status=Campaign.Status.SCHEDULED
            )
            campaign.refresh_from_db()
        return None
    return campaign_produce(campaign=campaign, actor=actor)


def campaign_close(*, campaign: Campaign, actor: str = "close") -> int:
    """Close the campaign; returns how many tasks were cancelled."""
    # Tasks first, the campaign row last: the lock order of services.budget.
    waiting = IncentiveTask.objects.filter(
        campaign=campaign,
        state__in=[TaskState.CREATED, TaskState.PUSHED, TaskState.DELIVERED],
    ).values_list("pk", flat=True)
    with transaction.atomic():
        cancelled = tasks_transition_bulk(
            task_ids=waiting, to=TaskState.CANCELLED, actor=actor, note="campaign closed"
        )
        Campaign.objects.filter(pk=campaign.pk).exclude(status=Campaign.Status.CLOSED).update(
            status=Campaign.Status.CLOSED, closed_at=timezone.now(), paused_at=None
        )
    campaign.refresh_from_db()
    return len(cancelled.ids)


def campaign_pause(*, campaign: Campaign, actor: str = "pause") -> bool:
    """Pause the campaign; False when it already was. A closed campaign cannot be paused.

    One conditional UPDATE: production holds the campaign row locked while it runs, so a pause
    waits for a running production and every later one sees it.
    """
    paused = (
        Campaign.objects.filter(pk=campaign.pk, paused_at__isnull=True)
        .exclude(status=Campaign.Status.CLOSED)
        .update(paused_at=timezone.now())
    )
    campaign.refresh_from_db()
    if not paused and campaign.status == Campaign.Status.CLOSED:
        raise CampaignStateError(
            f"Campaign {campaign.pk} ({campaign.name}) is closed; closing is final, there is "
            "nothing to pause."
        )
    if paused:
        logger.info("Campaign %s paused by %s", campaign.pk, actor)
    return bool(paused)


def campaign_resume(*, campaign: Campaign, actor: str = "resume") -> bool:
    """Lift a pause; False when the campaign was not paused. Production resumes at the next
    launch or schedule tick, leases at the feed's next request."""
    resumed = Campaign.objects.filter(pk=campaign.pk, paused_at__isnull=False).update(
        paused_at=None
    )
    campaign.refresh_from_db()
    if resumed:
        logger.info("Campaign %s resumed by %s", campaign.pk, actor)
    return bool(resumed)


@dataclass(frozen=True)
class TickResult:
    started: list[int]
    closed: list[int]


def campaigns_schedule_tick(*, now: datetime | None = None) -> TickResult:
    """Start scheduled campaigns whose start has come; close those whose end has passed."""
    now = now or timezone.now()
    ended = Campaign.objects.exclude(status=Campaign.Status.CLOSED).filter(ends_at__lte=now)
    closed = []
    for campaign in ended:
        campaign_close(campaign=campaign, actor="schedule")
        closed.append(campaign.pk)
    due = Campaign.objects.filter(
        status=Campaign.Status.SCHEDULED, starts_at__lte=now, paused_at__isnull=True
    )
    started = []
    for campaign in due:
        try:
            campaign_produce(campaign=campaign, actor="schedule")
        except (ProductionError, NoModelVersion) as exc:  # one bad campaign must not stop the rest
            logger.warning("Scheduled campaign %s did not start: %s", campaign.pk, exc)
            continue
        started.append(campaign.pk)
    return TickResult(started=started, closed=closed)
