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
from typing import Protocol

import numpy as np
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from advertisers.models import Scenario
from campaigns.allocation import allocate
from campaigns.models import (
    Campaign,
    CampaignHoldout,
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
# Uplift allocation and exploration offer each template at these multiples of its reward.
REWARD_LEVELS = (0.5, 1.0, 1.5)
# Exploration stretches the predicted level by this random factor before the template's own.
EXPLORATION_STRETCH = (0.6, 1.6)
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
    targeting: str = ""
    held_out: int = 0
    note: str = ""

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
    selection_kind: str = ""
    score: np.ndarray | None = None  # [N] the score that selected each
    expected_gain: np.ndarray | None = None  # [N] uplift allocation's expected gain
    holdout: list[Candidate] = field(default_factory=list)
    note: str = ""

    def fitting(self, remaining: Decimal) -> int:
        """How many tasks, taken in order, fit into `remaining`."""
        spent = np.cumsum(self.reward_cents)
        return int(np.count_nonzero(spent <= int(remaining * 100)))


@dataclass(frozen=True)
class CandidateFrame:
    """What an OfferScorer knows of the N candidates (scope sums of the forecasts)."""

    advertiser_pk: np.ndarray  # [N] int64
    advertiser_id: list[str]  # [N] the platform's own ids
    activity: np.ndarray  # [N] predicted active days
    expenditure: np.ndarray  # [N] predicted spend
    clicks: np.ndarray  # [N] predicted clicks
    p_inactive: np.ndarray  # [N] P(no active day in scope); NaN when the model has none


@dataclass(frozen=True)
class OfferFrame:
    """The K offers each candidate may get: template x reward level, personalised per row."""

    template: np.ndarray  # [K] index into the campaign's templates
    kind: list[str]  # [K] task kind
    scenario: list[str | None]  # [K] scenario code, None for "any"
    valid_days: np.ndarray  # [K]
    target: np.ndarray  # [N, K] in the kind's units
    reward: np.ndarray  # [N, K] money
    base: np.ndarray  # [N, K] predicted level over the window the target stretches


class OfferScorer(Protocol):
    """Expected gains of each offer: (gain in P(active) [N, K], gain in net revenue [N, K])."""

    def __call__(
        self, candidates: CandidateFrame, offers: OfferFrame
    ) -> tuple[np.ndarray, np.ndarray]: ...


def campaign_produce(
    *,
    campaign: Campaign,
    candidate_advertiser_ids: Iterable[int] | None = None,
    dry_run: bool = False,
    actor: str = "production",
    offer_scorer: OfferScorer | None = None,
) -> ProductionResult:
    """Produce the campaign's tasks now. dry_run=True is the preview: it writes nothing.

    `candidate_advertiser_ids` (Advertiser primary keys, a list or a queryset) restricts who may
    be selected; the A/B module passes one arm. `offer_scorer` gives uplift allocation its
    expected gains (default: the newest trained uplift model).
    """
    if dry_run:
        campaign = Campaign.objects.get(pk=campaign.pk)
        _check_producible(campaign)
        templates = campaign_templates_current(campaign=campaign)
        plan, version, as_of = _plan_build(
            campaign, templates, candidate_advertiser_ids, offer_scorer
        )
        return _result(campaign, plan, version, as_of, fitting=plan.fitting(campaign.remaining))
    with transaction.atomic():
        _production_lock()
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        _check_producible(campaign)
        templates = campaign_templates_current(campaign=campaign, lock=True)
        plan, version, as_of = _plan_build(
            campaign, templates, candidate_advertiser_ids, offer_scorer
        )
        fitting = plan.fitting(campaign.remaining)
        task_ids = _tasks_create(campaign, plan, version, as_of, fitting, actor)
        _holdout_store(campaign, plan, as_of)
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
    campaign: Campaign,
    templates: list[TaskTemplate],
    candidate_ids: Iterable[int] | None,
    offer_scorer: OfferScorer | None,
) -> tuple[_Plan, ModelVersion, date]:
    version = campaign_model_version(campaign=campaign)
    as_of = predictions_latest_as_of(model_version=version)
    targeting = campaign.targeting
    candidates = advertisers_selectable(
        campaign=campaign,
        model_version=version,
        as_of=as_of,
        candidate_advertiser_ids=candidate_ids,
        # Least activity holds out among those it would target; the others among all eligible.
        cut=targeting == Campaign.Targeting.LEAST_ACTIVITY,
    )
    candidates, holdout = _holdout_split(campaign, candidates, as_of)
    horizon = predictions_horizon_days(model_version=version, as_of=as_of)
    offers = _offers(campaign, templates, candidates, version, as_of, horizon)
    if targeting == Campaign.Targeting.UPLIFT:
        plan = _plan_uplift(campaign, offers, offer_scorer)
    elif targeting in (Campaign.Targeting.RANDOM, Campaign.Targeting.EXPLORATION):
        plan = _plan_random(campaign, offers, as_of)
    else:
        plan = _plan_least_activity(offers)
    plan.holdout = holdout
    return plan, version, as_of


def _rng(campaign: Campaign, as_of: date, stream: int) -> np.random.Generator:
    """Reproducible draws per campaign, production day and purpose."""
    return np.random.default_rng([int(campaign.pk), as_of.toordinal(), stream])


def _holdout_split(
    campaign: Campaign, candidates: list[Candidate], as_of: date
) -> tuple[list[Candidate], list[Candidate]]:
    """A random `holdout_share` of the candidates is kept without a task; advertisers already
    in this campaign's holdout never get one."""
    held_before = set(campaign.holdouts.values_list("advertiser_id", flat=True))
    fresh = [c for c in candidates if c.advertiser_pk not in held_before]
    out = _rng(campaign, as_of, 0).random(len(fresh)) < campaign.holdout_share
    kept = [c for c, o in zip(fresh, out, strict=True) if not o]
    return kept, [c for c, o in zip(fresh, out, strict=True) if o]


def _holdout_store(campaign: Campaign, plan: _Plan, as_of: date) -> None:
    validity = max(t.validity_days for t in plan.templates)
    CampaignHoldout.objects.bulk_create(
        (
            CampaignHoldout(
                campaign=campaign,
                advertiser_id=c.advertiser_pk,
                as_of=as_of,
                valid_from=as_of + timedelta(days=1),
                valid_until=as_of + timedelta(days=validity),
            )
            for c in plan.holdout
        ),
        batch_size=1000,
        ignore_conflicts=True,
    )


@dataclass
class _Offers:
    """Every template personalised for every candidate: [N, T] arrays."""

    candidates: list[Candidate]
    templates: list[TaskTemplate]
    base: np.ndarray
    target_cents: np.ndarray
    reward_cents: np.ndarray
    cap_left: np.ndarray  # [N] cents left under the per-advertiser reward cap

    def rule_choice(self) -> np.ndarray:
        """[N] the first template whose predicted level reaches REACH_FACTOR x its minimum
        (an advertiser no template fits gets the last, easiest one)."""
        minimum = np.array([float(t.minimum_target) for t in self.templates])
        fits = self.base >= REACH_FACTOR * minimum
        return np.where(fits.any(axis=1), fits.argmax(axis=1), len(self.templates) - 1)

    def plan(
        self,
        rows: np.ndarray,
        chosen: np.ndarray,
        reward: np.ndarray | None = None,
        **extra: object,
    ) -> _Plan:
        rows = np.asarray(rows, dtype=np.int64)
        chosen = np.asarray(chosen, dtype=np.int64)
        if reward is None:
            reward = self.reward_cents[rows, chosen]
        reward = np.clip(np.minimum(reward, self.cap_left[rows]), 1, None).astype(np.int64)
        return _Plan(
            [self.candidates[i] for i in rows],
            self.templates,
            chosen,
            self.base[rows, chosen],
            self.target_cents[rows, chosen].copy(),
            reward,
            **extra,  # type: ignore[arg-type]
        )


def _offers(
    campaign: Campaign,
    templates: list[TaskTemplate],
    candidates: list[Candidate],
    version: ModelVersion,
    as_of: date,
    horizon: int,
) -> _Offers:
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
    cap_left = np.array(
        [int((campaign.reward_cap - c.awarded) * 100) for c in candidates], dtype=np.int64
    )
    return _Offers(candidates, templates, base, target, reward, cap_left)


def _plan_least_activity(offers: _Offers) -> _Plan:
    """Today's rule: candidates in order (most likely inactive first), the rule's template."""
    rows = np.arange(len(offers.candidates))
    p = [c.p_inactive for c in offers.candidates]
    known = bool(p) and all(v is not None for v in p)
    if known:
        score = np.array(p, dtype=float)
    else:
        score = np.array([c.activity for c in offers.candidates], dtype=float)
    note = ""
    if p and not known:
        note = "the model gives no P(inactive): ordered by predicted active days"
    return offers.plan(
        rows,
        offers.rule_choice()[rows],
        selection_kind="p_inactive" if known else "active_days",
        score=score,
        note=note,
    )


def _plan_random(campaign: Campaign, offers: _Offers, as_of: date) -> _Plan:
    """A random order of the eligible (top_n of them, or all under a threshold policy);
    exploration also randomises the offer: template, stretch and reward level."""
    n = len(offers.candidates)
    rng = _rng(campaign, as_of, 1)
    order = rng.permutation(n)
    if campaign.policy == Campaign.Policy.BOTTOM_N:
        order = order[: campaign.top_n]
    if campaign.targeting != Campaign.Targeting.EXPLORATION:
        score = rng.random(len(order))
        return offers.plan(order, offers.rule_choice()[order], selection_kind="random", score=score)
    chosen = rng.integers(0, len(offers.templates), size=len(order))
    level = rng.choice(np.asarray(REWARD_LEVELS), size=len(order))
    stretch = rng.uniform(*EXPLORATION_STRETCH, size=len(order))
    reward = np.rint(offers.reward_cents[order, chosen] * level)
    plan = offers.plan(order, chosen, reward=reward, selection_kind="exploration", score=level)
    for j, template in enumerate(offers.templates):  # the random stretch, one pass per template
        sel = chosen == j
        plan.target_cents[sel] = _targets_cents(template, plan.base[sel] * stretch[sel])
    return plan


def _plan_uplift(campaign: Campaign, offers: _Offers, scorer: OfferScorer | None) -> _Plan:
    """Each candidate's best offer, or none, under the remaining budget (campaigns.allocation).

    Offers: every template at every REWARD_LEVELS multiple of its reward (K = T x levels),
    capped by what is left of the per-advertiser reward cap. Value: the scorer's expected gain
    in the campaign's objective; cost: the reward, which production reserves in full.
    """
    n, t = offers.base.shape
    levels = np.asarray(REWARD_LEVELS)
    template = np.repeat(np.arange(t), len(levels))  # [K]
    level = np.tile(levels, t)  # [K]
    reward_cents = np.rint(offers.reward_cents[:, template] * level[None, :])
    reward_cents = np.clip(np.minimum(reward_cents, offers.cap_left[:, None]), 1, None)
    reward_cents = reward_cents.astype(np.int64)  # [N, K]
    if n == 0:
        return offers.plan(np.zeros(0, np.int64), np.zeros(0, np.int64), selection_kind="uplift")
    scorer = scorer or uplift_scorer_for(campaign)
    frame = OfferFrame(
        template=template,
        kind=[offers.templates[j].kind for j in template],
        scenario=[_scenario_code(offers.templates[j]) for j in template],
        valid_days=np.array([offers.templates[j].validity_days for j in template]),
        target=offers.target_cents[:, template] / 100.0,
        reward=reward_cents / 100.0,
        base=offers.base[:, template],
    )
    gain_active, gain_revenue = scorer(_candidate_frame(offers.candidates), frame)
    value = gain_active if campaign.objective == Campaign.Objective.ACTIVES else gain_revenue
    value = np.asarray(value, dtype=np.float64).reshape(n, len(template))
    allocation = allocate(value, reward_cents / 100.0, float(campaign.remaining))
    rows = allocation.chosen
    k = allocation.choice[rows]
    order = np.argsort(-value[rows, k], kind="stable")  # the best first under a top_n cap
    rows, k = rows[order], k[order]
    if campaign.policy == Campaign.Policy.BOTTOM_N:
        rows, k = rows[: campaign.top_n], k[: campaign.top_n]
    return offers.plan(
        rows,
        template[k],
        reward=reward_cents[rows, k],
        selection_kind="uplift",
        score=value[rows, k],
        expected_gain=value[rows, k],
    )


def _scenario_code(template: TaskTemplate) -> str | None:
    return template.scenario.code if template.scenario_id else None


def _candidate_frame(candidates: list[Candidate]) -> CandidateFrame:
    return CandidateFrame(
        advertiser_pk=np.array([c.advertiser_pk for c in candidates], dtype=np.int64),
        advertiser_id=[c.advertiser_id for c in candidates],
        activity=np.array([c.activity for c in candidates], dtype=float),
        expenditure=np.array([c.expenditure for c in candidates], dtype=float),
        clicks=np.array([c.clicks for c in candidates], dtype=float),
        p_inactive=np.array(
            [np.nan if c.p_inactive is None else c.p_inactive for c in candidates], dtype=float
        ),
    )


def uplift_scorer_for(campaign: Campaign) -> OfferScorer:
    """The newest trained uplift model as a scorer; a clear error when there is none."""
    from campaigns.services.uplift import uplift_scorer_latest

    scorer = uplift_scorer_latest(campaign)
    if scorer is None:
        raise ProductionError(
            f"Campaign {campaign.pk} ({campaign.name}) allocates by uplift, and no uplift model "
            "is trained yet: run an exploration campaign, settle it, then train one "
            "(campaigns.services.uplift_model_train)."
        )
    return scorer


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
    selection_kind: str = ""
    score: float | None = None
    expected_gain: float | None = None

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
                selection_kind=plan.selection_kind,
                score=None if plan.score is None else float(plan.score[i]),
                expected_gain=None if plan.expected_gain is None else float(plan.expected_gain[i]),
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
        selection_kind=d.selection_kind,
        selection_score=d.score,
        expected_gain=d.expected_gain,
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
        targeting=campaign.targeting,
        held_out=len(plan.holdout),
        note=plan.note,
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
