"""Celery tasks: thin wrappers that load ids and call one service.

Beat schedule (settings.CELERY_BEAT_SCHEDULE):
    "campaigns-settle": {"task": "campaigns.settle", "schedule": 3600.0},
    "campaigns-schedule-tick": {"task": "campaigns.schedule_tick", "schedule": 300.0},
    "campaigns-idempotency-purge": {"task": "campaigns.idempotency_purge", "schedule": 86400.0},

All are safe to run twice: production skips advertisers that already hold an open task,
settlement moves only tasks still in the state it expects.
"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import (
    campaign_produce,
    campaigns_schedule_tick,
    idempotency_records_purge,
    tasks_settle,
)


@shared_task(name="campaigns.produce")
def campaign_produce_task(
    campaign_id: int, candidate_advertiser_ids: list[int] | None = None, dry_run: bool = False
) -> dict:
    campaign = Campaign.objects.get(pk=campaign_id)
    result = campaign_produce(
        campaign=campaign, candidate_advertiser_ids=candidate_advertiser_ids, dry_run=dry_run
    )
    data = result.as_dict()
    data.pop("task_ids")  # can be long; the tasks are in the database
    return data


@shared_task(name="campaigns.settle")
def tasks_settle_task() -> dict:
    return tasks_settle().as_dict()


@shared_task(name="campaigns.schedule_tick")
def campaigns_schedule_tick_task() -> dict:
    result = campaigns_schedule_tick()
    return {"started": result.started, "closed": result.closed}


@shared_task(name="campaigns.idempotency_purge")
def idempotency_records_purge_task(days: int = 7) -> int:
    return idempotency_records_purge(older_than=timezone.now() - timedelta(days=days))
