"""Reads for campaigns: who may get a task, how far each task has come, what the API shows.

The heavy reads are single SQL statements: selection aggregates the predictions per advertiser
and filters eligibility with EXISTS subqueries; task progress joins every task to the
DailyStat rows of its validity window in one GROUP BY.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Ln
from django.utils.dateparse import parse_datetime

from advertisers.models import Advertiser, DailyStat
from campaigns.models import (
    OPEN_STATES,
    ApiKey,
    BudgetLedgerEntry,
    Campaign,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTemplate,
)
from predictor.models import ModelVersion, Prediction

# Template kinds in the order production prefers them (the first that fits an advertiser wins).
TEMPLATE_PREFERENCE = ("spend_target", "click_target", "active_days_target", "login_days")


class NoModelVersion(Exception):
    """The campaign names no usable model version, or that version has no predictions."""


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# Active keys are cached this long: a revoked key may work for up to this many seconds in
# another server process (the revoking process forgets it at once). Saves a query per request.
API_KEY_CACHE_SECONDS = 10


def api_key_cache_key(secret_hash: str) -> str:
    return f"campaigns:api_key:{secret_hash}"


def api_key_by_secret(*, secret: str) -> ApiKey | None:
    """The active key with this secret, from the cache when it was seen recently."""
    digest = api_key_hash(secret)
    api_key = cache.get(api_key_cache_key(digest))
    if api_key is None:
        api_key = ApiKey.objects.filter(secret_hash=digest, is_active=True).first()
        if api_key is not None:  # unknown secrets are not cached: guessing fills no memory
            cache.set(api_key_cache_key(digest), api_key, API_KEY_CACHE_SECONDS)
    return api_key


def model_version_for_kind(*, kind: str) -> ModelVersion | None:
    """The active version of a kind; failing that, the newest ready one with predictions.

    The fallback lets a freshly trained model drive a demo campaign before anyone activates it.
    """
    active = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
    if active is not None:
        return active
    return (
        ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.READY)
        .filter(Exists(Prediction.objects.filter(model_version=OuterRef("pk"))))
        .order_by("-created_at", "-pk")
        .first()
    )


def campaign_model_version(*, campaign: Campaign) -> ModelVersion:
    version = campaign.model_version or model_version_for_kind(kind=campaign.model_kind)
    if version is None:
        raise NoModelVersion(
            f"Campaign {campaign.pk} ({campaign.name}): no active or ready {campaign.model_kind} "
            "model version with predictions. Train and predict first, or set the campaign's "
            "model version."
        )
    return version


def predictions_latest_as_of(*, model_version: ModelVersion) -> date:
    latest = Prediction.objects.filter(model_version=model_version).aggregate(d=Max("as_of"))["d"]
    if latest is None:
        raise NoModelVersion(
            f"Model version {model_version.pk} ({model_version.kind}) has no predictions; "
            "run the predictor for it first."
        )
    return latest


def predictions_horizon_days(*, model_version: ModelVersion, as_of: date) -> int:
    horizon = (
        Prediction.objects.filter(model_version=model_version, as_of=as_of)
        .values_list("horizon_days", flat=True)
        .first()
    )
    return int(horizon or 7)


def campaign_scope_ids(*, campaign: Campaign) -> list[int]:
    return sorted(campaign.scenarios.values_list("pk", flat=True))


def campaign_templates_current(*, campaign: Campaign, lock: bool = False) -> list[TaskTemplate]:
    """The current version of every template family the campaign uses, in preference order."""
    families = campaign.templates.values_list("family", flat=True)
    templates = TaskTemplate.objects.filter(family__in=Subquery(families), is_current=True)
    if lock:
        templates = templates.select_for_update()
    rank = {kind: i for i, kind in enumerate(TEMPLATE_PREFERENCE)}
    return sorted(templates, key=lambda t: (rank[t.kind], t.pk))


@dataclass(frozen=True)
class Candidate:
    advertiser_pk: int
    advertiser_id: str
    advertiser_name: str
    activity: float
    expenditure: float
    clicks: float
    awarded: Decimal
    # P(no active day in any scope scenario over the horizon); None for a model without it.
    p_inactive: float | None = None


def advertisers_selectable(
    *,
    campaign: Campaign,
    model_version: ModelVersion,
    as_of: date,
    candidate_advertiser_ids: Iterable[int] | QuerySet | None = None,
    cut: bool = True,
) -> list[Candidate]:
    """Eligible advertisers, least predicted activity first; with `cut`, only those the
    campaign's policy admits (at most top_n, or predicted activity at or below the threshold).

    Predicted activity is the predicted active days summed over the campaign's scope; the
    per-advertiser P(inactive) is the product of the scope scenarios' P(no active day), i.e.
    the scenarios are taken as independent given the forecast (exp(sum(ln p)) in SQL). Eligible:
    active in scope during the `lookback_days` up to as-of, no open task, no task whose window
    ended within `cooldown_days` of the new window, and below the campaign's reward cap.
    """
    scope = campaign_scope_ids(campaign=campaign)
    rows = _predictions_in_scope(model_version, as_of, scope, candidate_advertiser_ids)
    rows = rows.filter(
        Exists(_active_in_scope(campaign, as_of, scope)),
        ~Exists(
            IncentiveTask.objects.filter(
                advertiser=OuterRef("advertiser_id"), state__in=OPEN_STATES
            )
        ),
        ~Exists(
            IncentiveTask.objects.filter(
                advertiser=OuterRef("advertiser_id"),
                valid_until__gte=as_of + timedelta(days=1 - campaign.cooldown_days),
            )
        ),
    )
    rows = (
        rows.values("advertiser_id", "advertiser__advertiser_id", "advertiser__name")
        .annotate(
            activity=Sum("active_days"),
            expenditure=Sum("expenditure"),
            clicks=Sum("clicks"),
            log_p_inactive=Sum(Ln(Greatest(F("p_inactive"), Value(1e-12)))),
            unknown_p=Sum(Case(When(p_inactive__isnull=True, then=1), default=0)),
            awarded=Coalesce(Subquery(_awarded(campaign)), Value(Decimal("0"))),
        )
        .filter(awarded__lt=campaign.reward_cap)
        # Most likely inactive first; a model without P(inactive): least predicted active days.
        .order_by(F("log_p_inactive").desc(nulls_last=True), "activity", "advertiser_id")
    )
    if cut and campaign.policy == Campaign.Policy.THRESHOLD:
        rows = rows.filter(activity__lte=float(campaign.threshold))
    elif cut:
        rows = rows[: campaign.top_n]
    return [
        Candidate(
            advertiser_pk=r["advertiser_id"],
            advertiser_id=r["advertiser__advertiser_id"],
            advertiser_name=r["advertiser__name"],
            activity=float(r["activity"]),
            expenditure=float(r["expenditure"]),
            clicks=float(r["clicks"]),
            awarded=Decimal(r["awarded"]),
            p_inactive=None
            if r["unknown_p"] or r["log_p_inactive"] is None
            else math.exp(r["log_p_inactive"]),
        )
        for r in rows
    ]


def _predictions_in_scope(
    model_version: ModelVersion,
    as_of: date,
    scope: list[int],
    candidates: Iterable[int] | QuerySet | None,
) -> QuerySet:
    rows = Prediction.objects.filter(model_version=model_version, as_of=as_of)
    if scope:
        rows = rows.filter(scenario_id__in=scope)
    if candidates is not None:
        if not isinstance(candidates, QuerySet):
            candidates = list(candidates)
        rows = rows.filter(advertiser_id__in=candidates)
    return rows


def _active_in_scope(campaign: Campaign, as_of: date, scope: list[int]) -> QuerySet:
    active = DailyStat.objects.filter(
        advertiser=OuterRef("advertiser_id"),
        date__gt=as_of - timedelta(days=campaign.lookback_days),
        date__lte=as_of,
        expenditure__gt=0,
    )
    return active.filter(scenario_id__in=scope) if scope else active


def _awarded(campaign: Campaign) -> QuerySet:
    """Rewards an advertiser holds or was paid in this campaign (counts against the cap)."""
    return (
        IncentiveTask.objects.filter(campaign=campaign, advertiser=OuterRef("advertiser_id"))
        .exclude(state__in=[TaskState.EXPIRED, TaskState.CANCELLED])
        .values("advertiser")
        .annotate(total=Sum("reward"))
        .values("total")
    )


def predictions_in_scenario(
    *, model_version: ModelVersion, as_of: date, scenario_id: int, advertiser_pks: Sequence[int]
) -> dict[int, tuple[float, float, float]]:
    """(expenditure, clicks, active_days) per advertiser in one scenario."""
    rows = Prediction.objects.filter(
        model_version=model_version, as_of=as_of, scenario_id=scenario_id
    ).values_list("advertiser_id", "expenditure", "clicks", "active_days")
    wanted = set(advertiser_pks)
    return {a: (e, c, d) for a, e, c, d in rows.iterator(chunk_size=5000) if a in wanted}


# --- task progress -----------------------------------------------------------------------------

_PROGRESS_SQL = """
SELECT t.id, t.state, t.target,
  CASE t.kind
    WHEN 'spend_target' THEN COALESCE(SUM(d.expenditure), 0)
    WHEN 'click_target' THEN COALESCE(SUM(d.clicks), 0)
    WHEN 'active_days_target' THEN COUNT(DISTINCT CASE WHEN d.expenditure > 0 THEN d.date END)
    ELSE COUNT(DISTINCT CASE WHEN d.logins > 0 THEN d.date END)
  END AS progress
FROM {task} t
LEFT JOIN {stat} d
  ON d.advertiser_id = t.advertiser_id
  AND d.date >= t.valid_from AND d.date <= t.valid_until
  AND (t.scenario_id IS NULL OR d.scenario_id = t.scenario_id)
WHERE {where}
GROUP BY t.id, t.state, t.target, t.kind
"""


@dataclass(frozen=True)
class TaskProgress:
    state: str
    target: Decimal
    progress: Decimal

    @property
    def reached(self) -> bool:
        return self.progress >= self.target


def tasks_progress(
    *, task_ids: Sequence[int] | None = None, open_only: bool = False
) -> dict[int, TaskProgress]:
    """Progress of tasks over their validity window, by kind: spend sums expenditure, clicks
    sums clicks, active days counts days with spend, login days counts days with a login.
    A task without a scenario counts every scenario."""
    where, params = ["1 = 1"], []
    if open_only:
        where.append(f"t.state IN ({', '.join(['%s'] * len(OPEN_STATES))})")
        params += [str(s) for s in OPEN_STATES]
    if task_ids is not None:
        if not task_ids:
            return {}
        where.append(f"t.id IN ({', '.join(['%s'] * len(task_ids))})")
        params += list(task_ids)
    sql = _PROGRESS_SQL.format(
        task=IncentiveTask._meta.db_table,
        stat=DailyStat._meta.db_table,
        where=" AND ".join(where),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            pk: TaskProgress(state=state, target=_money(target), progress=_money(value))
            for pk, state, target, value in cursor
        }


def _money(value: object) -> Decimal:
    # SQLite hands back floats for money; str() keeps their shortest exact form.
    return Decimal(str(value)).quantize(Decimal("0.01"))


def stats_latest_date() -> date | None:
    """The last day the ingested data covers: settlement's clock."""
    return DailyStat.objects.aggregate(d=Max("date"))["d"]


def tasks_overdue(*, through: date) -> QuerySet:
    """Open tasks whose whole window lies on or before `through`."""
    return IncentiveTask.objects.filter(state__in=OPEN_STATES, valid_until__lte=through)


# --- API reads ---------------------------------------------------------------------------------


_FEED_SQL = (
    "SELECT id, status, lease_expires_at, content FROM {table} "
    "WHERE id > %s {status} {unpaused} ORDER BY id LIMIT %s"
)
# Unsent messages of paused campaigns are held back (campaigns.services.campaigns.campaign_pause).
_FEED_UNPAUSED = (
    "AND NOT (status = 'pending' AND task_id IN (SELECT t.id FROM campaigns_incentivetask t "
    "JOIN campaigns_campaign c ON c.id = t.campaign_id WHERE c.paused_at IS NOT NULL))"
)


def messages_feed_page(
    *, status: str | None, after_id: int, limit: int
) -> list[tuple[int, str, datetime | None, str]]:
    """(id, status, lease_expires_at, content) of the next `limit` messages after `after_id`.

    Plain SQL: the feed's hot path, where building the ORM query cost as much as running it.
    """
    sql = _FEED_SQL.format(
        table=PushMessage._meta.db_table,
        status="AND status = %s" if status else "",
        unpaused=_FEED_UNPAUSED,
    )
    params = [after_id, *([status] if status else []), limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if connection.vendor == "sqlite":  # SQLite hands back datetimes as text
        return [(pk, st, _sqlite_datetime(lease), text) for pk, st, lease, text in rows]
    return rows


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else parse_datetime(value).replace(tzinfo=UTC)


def advertiser_by_external_id(*, advertiser_id: str) -> Advertiser | None:
    return Advertiser.objects.filter(advertiser_id=advertiser_id).first()


def advertiser_tasks(*, advertiser: Advertiser, state: str | None = None) -> QuerySet:
    tasks = IncentiveTask.objects.filter(advertiser=advertiser).select_related(
        "campaign", "scenario"
    )
    return tasks.filter(state=state) if state else tasks


def advertiser_predictions_latest(
    *, advertiser: Advertiser, kind: str | None = None
) -> list[Prediction]:
    """The advertiser's predictions at the latest as-of of each model in use.

    "In use" is the active version of each kind (or of `kind`), falling back like
    `model_version_for_kind` when a kind has no active version.
    """
    kinds = [kind] if kind else _kinds_with_versions()
    versions = [v for k in kinds if (v := model_version_for_kind(kind=k)) is not None]
    found: list[Prediction] = []
    for version in versions:
        predictions = Prediction.objects.filter(model_version=version, advertiser=advertiser)
        latest = predictions.aggregate(d=Max("as_of"))["d"]
        if latest is not None:
            found += predictions.filter(as_of=latest).select_related("scenario", "model_version")
    return found


def inactivity_everywhere(predictions: list[Prediction]) -> list[dict]:
    """Per model version in `predictions` (one advertiser's rows at one as-of each): P(no active
    day in any scenario over the horizon), the product of its scenarios' P(inactive), the
    scenarios taken as independent given the forecast (as targeting does); None when a scenario
    has no P(inactive)."""
    by_version: dict[int, list[Prediction]] = {}
    for prediction in predictions:
        by_version.setdefault(prediction.model_version_id, []).append(prediction)
    out = []
    for version_id, rows in by_version.items():
        known = [r.p_inactive for r in rows if r.p_inactive is not None]
        out.append(
            {
                "model_version": version_id,
                "model_kind": rows[0].model_version.kind,
                "as_of": rows[0].as_of,
                "scenarios": len(rows),
                "p_inactive_all": math.prod(known) if len(known) == len(rows) else None,
            }
        )
    return out


def _kinds_with_versions() -> list[str]:
    kinds = ModelVersion.objects.filter(
        Q(status=ModelVersion.Status.ACTIVE) | Q(status=ModelVersion.Status.READY)
    ).values_list("kind", flat=True)
    return sorted(set(kinds))


def campaign_ledger_totals(*, campaign: Campaign) -> dict[str, Decimal]:
    """Sums per ledger kind; reserve - release - settle equals Campaign.reserved."""
    sums = (
        BudgetLedgerEntry.objects.filter(campaign=campaign)
        .values("kind")
        .annotate(total=Sum("amount"))
        .values_list("kind", "total")
    )
    totals = dict.fromkeys(BudgetLedgerEntry.Kind.values, _money(0))
    totals.update({kind: _money(total) for kind, total in sums})
    return totals


def campaign_task_counts(*, campaign: Campaign) -> dict[str, int]:
    rows = IncentiveTask.objects.filter(campaign=campaign).values("state").annotate(n=Count("id"))
    return {row["state"]: row["n"] for row in rows}


def campaign_incremental(*, campaign: Campaign, level: float = 0.95) -> dict:
    """Expected against measured incremental active advertisers of a campaign, from its tasks
    and its random holdout.

    Active = a day with expenditure > 0 (any scenario) in the task's window (the holdout's: the
    window its task would have had). Measured = (p_tasks - p_holdout) x tasks, normal interval
    with se = tasks x sqrt(p_t (1 - p_t) / n_t + p_h (1 - p_h) / n_h). Expected = the sum of the
    tasks' expected gains (uplift allocation only). Before the windows end, measured is partial.
    """
    from scipy.stats import norm

    def active_in_window(rows: QuerySet) -> int:
        stats = DailyStat.objects.filter(
            advertiser=OuterRef("advertiser_id"),
            date__gte=OuterRef("valid_from"),
            date__lte=OuterRef("valid_until"),
            expenditure__gt=0,
        )
        return rows.filter(Exists(stats)).count()

    tasks = IncentiveTask.objects.filter(campaign=campaign)
    holdout = campaign.holdouts.all()
    n_t, n_h = tasks.count(), holdout.count()
    expected = tasks.aggregate(s=Sum("expected_gain"))["s"]
    out: dict = {
        "tasks": n_t,
        "holdout": n_h,
        "expected_incremental_actives": expected,
        "spend": campaign.reserved + campaign.settled,
        "measured_incremental_actives": None,
        "ci": None,
    }
    if n_t == 0 or n_h == 0:
        out["not_estimable"] = "needs tasks and a holdout"
        return out
    p_t, p_h = active_in_window(tasks) / n_t, active_in_window(holdout) / n_h
    se = n_t * math.sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h)
    z = float(norm.ppf(0.5 + level / 2))
    value = (p_t - p_h) * n_t
    out.update(
        active_rate_tasks=p_t,
        active_rate_holdout=p_h,
        measured_incremental_actives=value,
        ci=(value - z * se, value + z * se),
    )
    return out
