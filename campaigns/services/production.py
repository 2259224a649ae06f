"""Task production: select advertisers, personalise each task, reserve the budget, create the
tasks and their push messages, all in one transaction.

Personalisation, for every selected advertiser at once (numpy over the selection):
- template: the first of the campaign's templates (spend, clicks, active days, login days
  order) whose predicted level over the task's window reaches REACH_FACTOR x its minimum
  target; an advertiser no template fits gets the last, easiest one.
- target: predicted level x (1 + stretch), rounded up to a friendly number (`round_nice`) for
  money and clicks, up to whole days (at most the validity) for day targets; never below the
  template's minimum.
- reward: the fixed amount or the percentage of the target, capped by what is left of the
  campaign's per-advertiser reward cap.
- budget: tasks are taken in selection order (least predicted activity first) while they fit;
  the rest are skipped and counted.

Productions run one at a time (a PostgreSQL advisory lock): that keeps "at most one open task
per advertiser" true across campaigns, and makes push-message ids grow in commit order, which
the id-ordered feed relies on to never skip a message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from advertisers.models import Scenario
from campaigns.models import (
    Campaign,
    IncentiveTask,
    PushMessage,
    TaskKind,
    TaskState,
    TaskTemplate,
    TaskTransition,
    json_datetime,
)
from campaigns.selectors import (
    Candidate,
    advertisers_selectable,
    campaign_model_version,
    campaign_scope_ids,
    campaign_templates_current,
    predictions_horizon_days,
    predictions_in_scenario,
    predictions_latest_as_of,
)
from campaigns.services.budget import budget_reserve
from predictor.models import ModelVersion

# A target more than 1 / REACH_FACTOR times the predicted level is out of reach.
REACH_FACTOR = 0.5
# Friendly mantissas: 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, ...
NICE_STEPS = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0])
SAMPLE_SIZE = 10
PRODUCTION_LOCK_KEY = 7_301_001
# Which predicted quantity each task kind stretches (logins are not predicted: active days
# are the closest proxy).
PREDICTED_QUANTITY = {
    TaskKind.SPEND: "expenditure",
    TaskKind.CLICKS: "clicks",
    TaskKind.ACTIVE_DAYS: "active_days",
    TaskKind.LOGIN_DAYS: "active_days",
}


class ProductionError(Exception):
    """A campaign that cannot produce tasks now; the message says why and what to do."""


@dataclass
class ProductionResult:
    campaign_id: int
    dry_run: bool
    model_version_id: int | None = None
    as_of: date | None = None
    selected: int = 0
    produced: int = 0
    skipped_budget: int = 0
    budget_needed: Decimal = Decimal("0")
    budget_reserved: Decimal = Decimal("0")
    budget_remaining: Decimal = Decimal("0")
    by_template: dict[str, int] = field(default_factory=dict)
    sample: list[dict] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready (Celery results, logs)."""
        data = asdict(self)
        for key in ("budget_needed", "budget_reserved", "budget_remaining"):
            data[key] = str(data[key])
        data["as_of"] = self.as_of.isoformat() if self.as_of else None
        return data


def round_nice(values: np.ndarray) -> np.ndarray:
    """Round each positive value up to 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten."""
    values = np.asarray(values, dtype=float)
    out = np.zeros_like(values)
    positive = values > 0
    exponent = np.floor(np.log10(values[positive]))
    mantissa = values[positive] / 10.0**exponent
    # The tolerance keeps 150.0000001 (float noise) at 150 rather than 200.
    out[positive] = NICE_STEPS[np.searchsorted(NICE_STEPS, mantissa * (1 - 1e-9))] * 10.0**exponent
    return out


@dataclass
class _Plan:
    candidates: list[Candidate]
    templates: list[TaskTemplate]
    chosen: np.ndarray  # [N] template index
    base: np.ndarray  # [N] predicted level the target stretches
    target_cents: np.ndarray  # [N] int64
    reward_cents: np.ndarray  # [N] int64

    def fitting(self, remaining: Decimal) -> int:
        """How many tasks, taken in order, fit into `remaining`."""
        spent = np.cumsum(self.reward_cents)
        return int(np.count_nonzero(spent <= int(remaining * 100)))


def campaign_produce(
    *,
    campaign: Campaign,
    candidate_advertiser_ids: Iterable[int] | None = None,
    dry_run: bool = False,
    actor: str = "production",
) -> ProductionResult:
    """Produce the campaign's tasks now. dry_run=True is the preview: it writes nothing.

    `candidate_advertiser_ids` (Advertiser primary keys, a list or a queryset) restricts who may
    be selected; the A/B module passes one arm.
    """
    if dry_run:
        campaign = Campaign.objects.get(pk=campaign.pk)
        _check_producible(campaign)
        templates = campaign_templates_current(campaign=campaign)
        plan, version, as_of = _plan_build(campaign, templates, candidate_advertiser_ids)
        return _result(campaign, plan, version, as_of, fitting=plan.fitting(campaign.remaining))
    with transaction.atomic():
        _production_lock()
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        _check_producible(campaign)
        templates = campaign_templates_current(campaign=campaign, lock=True)
        plan, version, as_of = _plan_build(campaign, templates, candidate_advertiser_ids)
        fitting = plan.fitting(campaign.remaining)
        task_ids = _tasks_create(campaign, plan, version, as_of, fitting, actor)
        Campaign.objects.filter(pk=campaign.pk).update(
            status=Campaign.Status.RUNNING, launched_at=Coalesce(F("launched_at"), timezone.now())
        )
        campaign.refresh_from_db()
        result = _result(campaign, plan, version, as_of, fitting=fitting, dry_run=False)
        result.task_ids = task_ids
        return result


def _production_lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PRODUCTION_LOCK_KEY])


def _check_producible(campaign: Campaign) -> None:
    if campaign.status == Campaign.Status.CLOSED:
        raise ProductionError(f"Campaign {campaign.pk} ({campaign.name}) is closed.")
    if campaign.paused_at is not None:
        raise ProductionError(f"Campaign {campaign.pk} ({campaign.name}) is paused; resume it.")
    if campaign.ends_at is not None and campaign.ends_at <= timezone.now():
        raise ProductionError(
            f"Campaign {campaign.pk} ({campaign.name}) ended at {campaign.ends_at:%Y-%m-%d %H:%M}; "
            "extend its end to produce more tasks."
        )
    if not campaign.templates.exists():
        raise ProductionError(
            f"Campaign {campaign.pk} ({campaign.name}) has no task templates; add at least one."
        )


def _plan_build(
    campaign: Campaign, templates: list[TaskTemplate], candidate_ids: Iterable[int] | None
) -> tuple[_Plan, ModelVersion, date]:
    version = campaign_model_version(campaign=campaign)
    as_of = predictions_latest_as_of(model_version=version)
    candidates = advertisers_selectable(
        campaign=campaign,
        model_version=version,
        as_of=as_of,
        candidate_advertiser_ids=candidate_ids,
    )
    horizon = predictions_horizon_days(model_version=version, as_of=as_of)
    return _personalise(campaign, templates, candidates, version, as_of, horizon), version, as_of


def _personalise(
    campaign: Campaign,
    templates: list[TaskTemplate],
    candidates: list[Candidate],
    version: ModelVersion,
    as_of: date,
    horizon: int,
) -> _Plan:
    n, k = len(candidates), len(templates)
    base = np.zeros((n, k))
    target = np.zeros((n, k), dtype=np.int64)
    reward = np.zeros((n, k), dtype=np.int64)
    scope = campaign_scope_ids(campaign=campaign)
    for j, template in enumerate(templates):
        # Predictions cover `horizon` days; the task's window may be longer or shorter.
        level = _predicted_level(template, candidates, scope, version, as_of)
        base[:, j] = level * template.validity_days / horizon
        target[:, j] = _targets_cents(template, base[:, j])
        reward[:, j] = _rewards_cents(template, target[:, j])
    minimum = np.array([float(t.minimum_target) for t in templates])
    fits = base >= REACH_FACTOR * minimum  # [N, k]
    chosen = np.where(fits.any(axis=1), fits.argmax(axis=1), k - 1)
    rows = np.arange(n)
    cap_left = np.array(
        [int((campaign.reward_cap - c.awarded) * 100) for c in candidates], dtype=np.int64
    )
    rewards = np.clip(np.minimum(reward[rows, chosen], cap_left), 1, None)
    return _Plan(candidates, templates, chosen, base[rows, chosen], target[rows, chosen], rewards)


def _predicted_level(
    template: TaskTemplate,
    candidates: list[Candidate],
    scope: list[int],
    version: ModelVersion,
    as_of: date,
) -> np.ndarray:
    quantity = PREDICTED_QUANTITY[template.kind]
    if template.scenario_id is None or scope == [template.scenario_id]:
        attr = "activity" if quantity == "active_days" else quantity
        return np.array([getattr(c, attr) for c in candidates], dtype=float)
    per_scenario = predictions_in_scenario(
        model_version=version,
        as_of=as_of,
        scenario_id=template.scenario_id,
        advertiser_pks=[c.advertiser_pk for c in candidates],
    )
    column = ("expenditure", "clicks", "active_days").index(quantity)
    return np.array(
        [per_scenario.get(c.advertiser_pk, (0.0, 0.0, 0.0))[column] for c in candidates],
        dtype=float,
    )


def _targets_cents(template: TaskTemplate, base: np.ndarray) -> np.ndarray:
    stretched = base * (1 + float(template.stretch))
    minimum = float(template.minimum_target)
    if template.kind == TaskKind.SPEND:
        value = np.maximum(round_nice(stretched), minimum)
    elif template.kind == TaskKind.CLICKS:
        value = np.maximum(np.ceil(round_nice(stretched)), np.ceil(minimum))
    else:  # days: whole days, and never more days than the window has
        days = np.maximum(np.ceil(stretched - 1e-9), np.ceil(minimum))
        value = np.minimum(days, template.validity_days)
    return np.round(value * 100).astype(np.int64)


def _rewards_cents(template: TaskTemplate, target_cents: np.ndarray) -> np.ndarray:
    value_cents = int(template.reward_value * 100)
    if template.reward_type == TaskTemplate.RewardType.FIXED:
        return np.full_like(target_cents, value_cents)
    # value_cents is the percentage x 100; round half up in integer cents.
    return (target_cents * value_cents + 5000) // 10000


def _cents(value: int | np.integer) -> Decimal:
    return Decimal(int(value)).scaleb(-2)


def _human(amount: Decimal) -> str:
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


@dataclass(frozen=True)
class _Draft:
    """One planned task, with everything its rows need."""

    candidate: Candidate
    template: TaskTemplate
    scenario: Scenario | None
    base: float
    target: Decimal
    reward: Decimal
    valid_from: date
    valid_until: date

    @property
    def message(self) -> str:
        return self.template.message_text.format(
            target=_human(self.target),
            reward=_human(self.reward),
            scenario=self.scenario.name if self.scenario else "any scenario",
            valid_from=self.valid_from.isoformat(),
            valid_until=self.valid_until.isoformat(),
            days=self.template.validity_days,
            advertiser=self.candidate.advertiser_name,
        )

    @property
    def terms(self) -> dict:
        return {
            "advertiser_id": self.candidate.advertiser_id,
            "kind": self.template.kind,
            "scenario": self.scenario.code if self.scenario else None,
            "target": str(self.target),
            "reward": str(self.reward),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
        }


def _drafts(campaign: Campaign, plan: _Plan, as_of: date, count: int) -> list[_Draft]:
    scope = campaign_scope_ids(campaign=campaign)
    wanted = set(scope) | {t.scenario_id for t in plan.templates if t.scenario_id}
    scenarios = Scenario.objects.in_bulk(wanted)
    drafts = []
    for i in range(count):
        template = plan.templates[plan.chosen[i]]
        scenario_id = template.scenario_id or (scope[0] if len(scope) == 1 else None)
        drafts.append(
            _Draft(
                candidate=plan.candidates[i],
                template=template,
                scenario=scenarios.get(scenario_id) if scenario_id else None,
                base=float(plan.base[i]),
                target=_cents(plan.target_cents[i]),
                reward=_cents(plan.reward_cents[i]),
                valid_from=as_of + timedelta(days=1),
                valid_until=as_of + timedelta(days=template.validity_days),
            )
        )
    return drafts


def _tasks_create(
    campaign: Campaign,
    plan: _Plan,
    version: ModelVersion,
    as_of: date,
    count: int,
    actor: str,
) -> list[int]:
    drafts = _drafts(campaign, plan, as_of, count)
    tasks = IncentiveTask.objects.bulk_create(
        (_task(campaign, d, version, as_of) for d in drafts), batch_size=1000
    )
    budget_reserve(campaign_id=campaign.pk, amounts=[(t.pk, t.reward) for t in tasks])
    now = timezone.now()
    PushMessage.objects.bulk_create(
        (
            PushMessage(
                task=t,
                advertiser_id=t.advertiser_id,
                body=d.message,
                content=_message_content(t, d, now),
                created_at=now,
            )
            for t, d in zip(tasks, drafts, strict=True)
        ),
        batch_size=1000,
    )
    TaskTransition.objects.bulk_create(
        (
            TaskTransition(task=t, from_state="", to_state=TaskState.CREATED, actor=actor)
            for t in tasks
        ),
        batch_size=1000,
    )
    return [t.pk for t in tasks]


def _message_content(task: IncentiveTask, d: _Draft, now: datetime) -> str:
    """The message's fixed fields, as the API serves them (see PushMessage.content)."""
    fields = {
        "task_id": task.pk,
        "created_at": json_datetime(now),
        **d.terms,
        "body": d.message,
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _task(campaign: Campaign, d: _Draft, version: ModelVersion, as_of: date) -> IncentiveTask:
    return IncentiveTask(
        campaign=campaign,
        advertiser_id=d.candidate.advertiser_pk,
        scenario=d.scenario,
        template=d.template,
        model_version=version,
        kind=d.template.kind,
        target=d.target,
        reward=d.reward,
        predicted_activity=d.candidate.activity,
        predicted_base=d.base,
        prediction_as_of=as_of,
        valid_from=d.valid_from,
        valid_until=d.valid_until,
    )


def _result(
    campaign: Campaign,
    plan: _Plan,
    version: ModelVersion,
    as_of: date,
    *,
    fitting: int,
    dry_run: bool = True,
) -> ProductionResult:
    reserved = _cents(plan.reward_cents[:fitting].sum())
    counts = Counter(str(plan.templates[j]) for j in plan.chosen[:fitting])
    return ProductionResult(
        campaign_id=campaign.pk,
        dry_run=dry_run,
        model_version_id=version.pk,
        as_of=as_of,
        selected=len(plan.candidates),
        produced=fitting,
        skipped_budget=len(plan.candidates) - fitting,
        budget_needed=_cents(plan.reward_cents.sum()),
        budget_reserved=reserved,
        budget_remaining=campaign.remaining - reserved if dry_run else campaign.remaining,
        by_template=dict(counts),
        sample=[_sample(d) for d in _drafts(campaign, plan, as_of, min(fitting, SAMPLE_SIZE))],
    )


def _sample(d: _Draft) -> dict:
    return {
        **d.terms,
        "template": str(d.template),
        "predicted_activity": round(d.candidate.activity, 3),
        "predicted_base": round(d.base, 2),
        "message": d.message,
    }
