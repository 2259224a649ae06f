"""Writes of the A/B module: create, plan, assign, produce tasks, analyse, complete.

Life cycle: draft -> running -> analysing -> completed. Starting assigns the whole population in
one bulk insert that skips rows already present (so a re-run never re-buckets anyone), then
each arm's model selects its targets through the campaigns module and the targeted advertisers
are recorded here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from abtest import hashing, stats
from abtest import sql as sql_parts
from abtest.models import MAX_ARMS, AnalysisMode, Arm, Assignment, Experiment
from abtest.selectors import (
    POPULATION_FIELDS,
    experiment_baseline,
    experiment_population,
    experiment_report,
)
from advertisers.models import Advertiser, DailyStat, Scenario
from predictor.models import ModelKind, ModelVersion

_LOOKUPS = ("", "exact", "in", "gt", "gte", "lt", "lte", "range", "iexact", "icontains")


@dataclass(frozen=True)
class AssignResult:
    created: int
    total: int


@dataclass(frozen=True)
class ArmSpec:
    """One arm of a new experiment.

    `targeting` says who makes the arm's tasks: "none" gives no tasks (a no-task arm, the
    reference for incremental effects); "external" means the caller produces them through
    campaigns and records the targets with `experiment_targets_record`; "least_activity",
    "random" and "uplift" produce through the arm's own campaign with that targeting, which
    needs a model (kind or pinned version) to personalise the tasks.
    """

    name: str
    role: str = Arm.Role.TREATMENT
    model_kind: str = ""
    model_version: ModelVersion | None = None
    weight: float = 1.0
    targeting: str = Arm.Targeting.LEAST_ACTIVITY


# --- validation ----------------------------------------------------------------------------


def population_filter_validate(population_filter: dict) -> None:
    """Only plain advertiser field lookups are accepted, so a filter can never reach other data."""
    if not isinstance(population_filter, dict):
        raise ValidationError(
            {
                "population_filter": "must be a JSON object of advertiser lookups, e.g. "
                '{"business_scale__in": [1, 2]}'
            }
        )
    for key in population_filter:
        field, _, lookup = key.partition("__")
        if field not in POPULATION_FIELDS or lookup not in _LOOKUPS:
            raise ValidationError(
                {
                    "population_filter": f"unknown lookup {key!r}: use one of the fields "
                    f"{', '.join(POPULATION_FIELDS)} with an optional lookup "
                    f"({', '.join(x for x in _LOOKUPS if x)})"
                }
            )
    try:
        Advertiser.objects.filter(**population_filter).exists()
    except (TypeError, ValueError, ValidationError, DatabaseError) as exc:
        raise ValidationError(
            {
                "population_filter": f"the filter {population_filter} cannot be applied ({exc}): "
                'give each lookup a value of its type, e.g. {"star_level__gte": 3}'
            }
        ) from exc


def arm_specs_validate(arms: Sequence[ArmSpec]) -> list[ArmSpec]:
    """Check a set of arms and return it in hash-range order: control first, then treatments.

    Two to six arms, exactly one control, unique names, non-negative weights with a positive
    sum, a known targeting, and a model on every arm whose tasks the A/B module produces.
    """
    arms = list(arms)
    if not 2 <= len(arms) <= MAX_ARMS:
        raise ValidationError(
            {"arms": f"{len(arms)} arms given: an experiment has a control and 1 to "
                     f"{MAX_ARMS - 1} treatments"}
        )  # fmt: skip
    problems = []
    for i, arm in enumerate(arms, start=1):
        where = f"arm {i} ({arm.name!r})"
        if not arm.name or not arm.name.strip():
            problems.append(f"arm {i}: give it a name")
        if arm.role not in Arm.Role.values:
            problems.append(
                f"{where}: role {arm.role!r} is not one of {', '.join(Arm.Role.values)}"
            )
        if arm.targeting not in Arm.Targeting.values:
            problems.append(
                f"{where}: targeting {arm.targeting!r} is not one of "
                f"{', '.join(Arm.Targeting.values)}"
            )
        if arm.model_kind and arm.model_kind not in ModelKind.values:
            problems.append(
                f"{where}: unknown model kind {arm.model_kind!r}, use one of "
                f"{', '.join(ModelKind.values)}"
            )
        produces = arm.targeting not in (Arm.Targeting.NONE, Arm.Targeting.EXTERNAL)
        if produces and not arm.model_kind and arm.model_version is None:
            problems.append(
                f"{where}: targeting {arm.targeting!r} produces tasks through a campaign, so bind "
                "the arm to a model kind or a model version (or use targeting 'none' or "
                "'external')"
            )
        if not isinstance(arm.weight, int | float) or not np.isfinite(arm.weight) or arm.weight < 0:
            problems.append(f"{where}: weight {arm.weight!r} must be a non-negative number")
    names = [arm.name for arm in arms]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"arm names must be unique within the experiment: {duplicates} repeat")
    controls = [arm.name for arm in arms if arm.role == Arm.Role.CONTROL]
    if len(controls) != 1:
        problems.append(
            f"exactly one arm must have role 'control', found {len(controls)}"
            + (f" ({', '.join(controls)})" if controls else "")
        )
    if not problems and sum(arm.weight for arm in arms) <= 0:
        problems.append(
            f"arm weights {[a.weight for a in arms]} sum to zero: give each arm a share"
        )
    if problems:
        raise ValidationError({"arms": problems})
    return sorted(arms, key=lambda a: a.role != Arm.Role.CONTROL)


def _two_arm_specs(
    *,
    control_kind: str,
    treatment_kind: str,
    control_version: ModelVersion | None,
    treatment_version: ModelVersion | None,
    control_weight: float,
    treatment_weight: float,
) -> list[ArmSpec]:
    """The classic A/B: control and treatment, named after their models."""
    specs = []
    for role, kind, version, weight in (
        (Arm.Role.CONTROL, control_kind, control_version, control_weight),
        (Arm.Role.TREATMENT, treatment_kind, treatment_version, treatment_weight),
    ):
        label = version.kind if version else kind
        specs.append(
            ArmSpec(
                name=(label or role).replace("_", "-"),
                role=role,
                model_kind="" if version else kind,
                model_version=version,
                weight=weight,
            )
        )
    if specs[0].name == specs[1].name:  # both arms on the same kind: names must differ
        specs = [replace(spec, name=f"{spec.name}-{spec.role}") for spec in specs]
    return specs


def templates_check(template_ids: Sequence[int]) -> None:
    """Every id names a campaigns task template."""
    if not template_ids:
        return
    from campaigns.models import TaskTemplate

    found = set(TaskTemplate.objects.filter(pk__in=template_ids).values_list("pk", flat=True))
    missing = sorted(set(template_ids) - found)
    if missing:
        raise ValidationError(
            {
                "template_ids": f"no task template with id {missing}: pick ids from the campaigns' "
                "task templates"
            }
        )


# --- create and plan -----------------------------------------------------------------------


@transaction.atomic
def experiment_create(
    *,
    key: str,
    hypothesis: str = "",
    scenarios: Iterable[Scenario] = (),
    population_filter: dict | None = None,
    control_kind: str = ModelKind.SINGLE_TASK,
    treatment_kind: str = ModelKind.M2M,
    control_version: ModelVersion | None = None,
    treatment_version: ModelVersion | None = None,
    control_weight: float = 0.5,
    treatment_weight: float = 0.5,
    holdout_share: float = 0.0,
    template_ids: Sequence[int] = (),
    targets_per_arm: int | None = None,
    inactivity_threshold: float | None = None,
    budget_per_arm: Decimal = Decimal("0"),
    reward_cap: Decimal | None = None,
    pre_period_days: int = 28,
    evaluation_days: int = 7,
    alpha: float = stats.DEFAULT_ALPHA,
    winsor_quantile: float | None = None,
    expected_relative_lift: float = 0.05,
    analysis_mode: str = AnalysisMode.FREQUENTIST,
    sequential_tuning_parameter: float = stats.DEFAULT_SEQUENTIAL_TUNING,
    prior_proper: bool = False,
    prior_mean: float = 0.0,
    prior_stddev: float = 1.0,
    seed: str | None = None,
    arms: Sequence[ArmSpec] | None = None,
) -> Experiment:
    """A draft experiment with its arms and its power plan; nothing stored if invalid.

    With `arms` omitted it has two: control is the single-task baseline and treatment is M2M,
    50/50 (the `control_*` / `treatment_*` arguments change them). With `arms`, a control plus
    up to five treatments, each with its own weight, model and targeting; the `control_*` and
    `treatment_*` arguments are then ignored. `analysis_mode` picks the analysis the
    verdicts follow (every report shows all three), with the sequential tuning parameter and
    the Bayesian prior on the relative lift (gbstats' defaults).
    """
    population_filter = population_filter or {}
    population_filter_validate(population_filter)
    if arms is None:
        arms = _two_arm_specs(
            control_kind=control_kind, treatment_kind=treatment_kind,
            control_version=control_version, treatment_version=treatment_version,
            control_weight=control_weight, treatment_weight=treatment_weight,
        )  # fmt: skip
    specs = arm_specs_validate(arms)
    templates_check(template_ids)
    if targets_per_arm is not None and inactivity_threshold is not None:
        raise ValidationError(
            "set either targets_per_arm or inactivity_threshold, not both: both arms must be "
            "targeted by the same rule"
        )
    experiment = Experiment(
        key=key,
        hypothesis=hypothesis,
        population_filter=population_filter,
        holdout_share=holdout_share,
        template_ids=list(template_ids),
        targets_per_arm=targets_per_arm,
        inactivity_threshold=inactivity_threshold,
        budget_per_arm=budget_per_arm,
        reward_cap=reward_cap,
        pre_period_days=pre_period_days,
        evaluation_days=evaluation_days,
        alpha=alpha,
        winsor_quantile=winsor_quantile,
        expected_relative_lift=expected_relative_lift,
        analysis_mode=analysis_mode,
        sequential_tuning_parameter=sequential_tuning_parameter,
        prior_proper=prior_proper,
        prior_mean=prior_mean,
        prior_stddev=prior_stddev,
    )
    if seed:
        experiment.seed = seed
    experiment.full_clean()
    experiment.save()
    experiment.scenarios.set(scenarios)
    _arms_create(experiment, specs)
    experiment_plan_refresh(experiment=experiment)
    return experiment


def _arms_create(experiment: Experiment, specs: list[ArmSpec]) -> None:
    """Store validated arms in hash-range order (control at position 0)."""
    for position, spec in enumerate(specs):
        arm = Arm(
            experiment=experiment,
            role=spec.role,
            name=spec.name,
            model_kind="" if spec.model_version else spec.model_kind,
            model_version=spec.model_version,
            weight=float(spec.weight),
            targeting=spec.targeting,
            position=position,
        )
        arm.full_clean(validate_constraints=False)  # checked as a set by arm_specs_validate
        arm.save()


@transaction.atomic
def experiment_arms_set(*, experiment: Experiment, arms: Sequence[ArmSpec]) -> list[Arm]:
    """Replace a draft's arms (nobody is assigned yet, so nothing can be re-bucketed)."""
    locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if locked.status != Experiment.Status.DRAFT:
        raise ValidationError(
            f"experiment {locked.key} is {locked.status}: its arms are fixed once it starts"
        )
    specs = arm_specs_validate(arms)
    locked.arms.all().delete()
    _arms_create(locked, specs)
    experiment_plan_refresh(experiment=locked)
    return _arms(locked)


def _weights_check(experiment: Experiment) -> None:
    weights = [arm.weight for arm in experiment.arms.all()]
    if sum(weights) <= 0:
        raise ValidationError(
            {
                "weight": f"arm weights {weights} of {experiment.key} sum to zero: give each arm a "
                "positive share (0.5/0.5 by default)"
            }
        )


def _arms(experiment: Experiment) -> list[Arm]:
    """Arms by position (control first, then the treatments): the order of the hash ranges."""
    return list(experiment.arms.order_by("position").select_related("model_version"))


def experiment_plan_refresh(*, experiment: Experiment) -> dict:
    """Planned arm sizes, baselines, minimum detectable effects and power; stored on the row.

    `itt` and `targeted` plan control against the smallest treatment arm (the largest MDE of
    the treatment-vs-control comparisons); `arm_sizes` gives every arm's planned size. Each
    MDE and power figure comes without and with CUPED (`*_cuped`: the variance times
    1 - R^2, R^2 from the baseline window against the pre-period before it).
    """
    baseline = experiment_baseline(experiment=experiment)
    arms = _arms(experiment)
    total_weight = sum(a.weight for a in arms) or 1.0
    population = baseline["population"]
    in_arms = population * (1.0 - experiment.holdout_share)
    sizes = {a.name: round(in_arms * a.weight / total_weight) for a in arms}
    control = next((a for a in arms if a.role == Arm.Role.CONTROL), None)
    treatments = [a for a in arms if a.role != Arm.Role.CONTROL]
    n_a = sizes[control.name] if control else 0
    n_b = min((sizes[a.name] for a in treatments), default=0)
    common = {"alpha": experiment.alpha}
    rate, mean, var = baseline["active_rate"], baseline["arpu"], baseline["arpu_variance"]

    # R^2 = 1 only where the pre-period repeats the metric exactly; keep the MDE finite.
    r2 = {k: min(v, _R_SQUARED_MAX) for k, v in baseline["r_squared"].items()}

    def figures(n_control: int, n_treatment: int) -> dict:
        sizes_kw = {"n_control": n_control, "n_treatment": n_treatment, **common}
        effect = experiment.expected_relative_lift
        rate_kw = {"mean": rate, "variance": rate * (1 - rate), **sizes_kw}
        arpu_kw = {"mean": mean, "variance": var, **sizes_kw}
        out = {"n_control": n_control, "n_treatment": n_treatment}
        variants = {"": (0.0, 0.0), "_cuped": (r2["active_rate"], r2["arpu"])}
        for suffix, (r2_rate, r2_arpu) in variants.items():
            out |= {
                f"mde_active_rate{suffix}": _finite(
                    stats.mde_relative(**rate_kw, r_squared=r2_rate)
                ),
                f"mde_arpu{suffix}": _finite(stats.mde_relative(**arpu_kw, r_squared=r2_arpu)),
                f"power_active_rate{suffix}": stats.power_relative(
                    effect=effect, **rate_kw, r_squared=r2_rate
                ),
                f"power_arpu{suffix}": stats.power_relative(
                    effect=effect, **arpu_kw, r_squared=r2_arpu
                ),
            }
        return out

    plan = {
        **baseline,
        "alpha": experiment.alpha,
        "power_target": stats.DEFAULT_POWER,
        "expected_relative_lift": experiment.expected_relative_lift,
        "n_holdout": round(population * experiment.holdout_share),
        "arm_sizes": sizes,
        "itt": figures(n_a, n_b),
    }
    if experiment.targets_per_arm:
        targets = experiment.targets_per_arm
        plan["targeted"] = {
            **figures(min(targets, n_a), min(targets, n_b)),
            "note": "uses the population baseline; predicted-inactive targets start lower, so "
            "their real MDE is larger",
        }
    experiment.plan = plan
    experiment.save(update_fields=["plan"])
    return plan


_R_SQUARED_MAX = 0.9999


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


@transaction.atomic
def experiment_settings_update(*, experiment: Experiment, **fields: object) -> Experiment:
    """Change a draft's settings (not its seed) and refresh its plan."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.DRAFT:
        raise ValidationError(
            f"experiment {experiment.key} is {experiment.status}: settings are frozen once it "
            "starts; create a new experiment instead"
        )
    scenarios = fields.pop("scenarios", None)
    if "population_filter" in fields:
        population_filter_validate(fields["population_filter"])  # type: ignore[arg-type]
    for name, value in fields.items():
        if name in ("seed", "status", "plan", "report", "key"):
            raise ValidationError(f"{name} cannot be changed through settings")
        setattr(experiment, name, value)
    experiment.full_clean()
    experiment.save()
    if scenarios is not None:
        experiment.scenarios.set(scenarios)  # type: ignore[arg-type]
    experiment_plan_refresh(experiment=experiment)
    return experiment


@transaction.atomic
def experiment_weights_update(
    *,
    experiment: Experiment,
    control_weight: float | None = None,
    treatment_weight: float | None = None,
    weights: dict[str, float] | None = None,
) -> None:
    """New arm weights; they apply only to advertisers assigned from now on.

    `weights` maps arm names to weights (arms not named keep theirs); the two-arm form
    `control_weight` / `treatment_weight` sets the control and every treatment arm.
    Stored assignments are never re-bucketed. On a running experiment the SRM check then
    compares old assignments against the new weights and will usually flag it, which is the
    honest warning: restart as a new experiment to change the split cleanly.
    """
    if experiment.status not in (Experiment.Status.DRAFT, Experiment.Status.RUNNING):
        raise ValidationError(f"experiment {experiment.key} is {experiment.status}: too late")
    arms = _arms(experiment)
    new = {arm.name: arm.weight for arm in arms}
    if weights is not None:
        unknown = sorted(set(weights) - set(new))
        if unknown:
            raise ValidationError(
                f"experiment {experiment.key} has no arm named {unknown}: its arms are "
                f"{', '.join(new)}"
            )
        new.update(weights)
    for arm in arms:
        if arm.role == Arm.Role.CONTROL and control_weight is not None:
            new[arm.name] = control_weight
        if arm.role != Arm.Role.CONTROL and treatment_weight is not None:
            new[arm.name] = treatment_weight
    values = list(new.values())
    if any(not np.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise ValidationError(
            f"weights {new} for {experiment.key} must be non-negative with a positive sum"
        )
    for arm in arms:
        if arm.weight != new[arm.name]:
            Arm.objects.filter(pk=arm.pk).update(weight=new[arm.name])
    if experiment.status == Experiment.Status.DRAFT:
        experiment_plan_refresh(experiment=experiment)


# --- assignment ----------------------------------------------------------------------------


def experiment_assign(*, experiment: Experiment) -> AssignResult:
    """Assign every population member that has no assignment yet; existing rows never move."""
    arms = _arms(experiment)
    boundaries = hashing.arm_boundaries([a.weight for a in arms], experiment.holdout_share)
    already = Assignment.objects.filter(experiment=experiment).values("advertiser_id")
    rows = list(
        experiment_population(experiment=experiment)
        .exclude(pk__in=already)
        .values_list("pk", "advertiser_id")
    )
    created = 0
    if rows:
        pks = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        bucket_numbers = hashing.buckets(experiment.seed, [r[1] for r in rows])
        groups = hashing.groups_for_buckets(bucket_numbers, boundaries)
        arm_ids = np.array([0] + [a.pk for a in arms], dtype=np.int64)[groups]
        created = _assignments_insert(experiment.pk, pks, arm_ids, bucket_numbers)
    if created and experiment.start_date is not None:
        experiment_covariates_capture(experiment=experiment)
    total = Assignment.objects.filter(experiment=experiment).count()
    return AssignResult(created=created, total=total)


def experiment_covariates_capture(*, experiment: Experiment) -> int:
    """Store every assignment's pre-period spend, clicks and active days (in scope).

    CUPED needs each advertiser's pre-period value; it is fixed before treatment, so it is
    measured here (at start, and again when analysis begins, to take in late-ingested days)
    and a report then reads only the evaluation window. One aggregate over the pre-period with
    active days as bit masks (abtest.sql), written by one UPDATE. Returns the rows with any
    pre-period activity.
    """
    if experiment.start_date is None:
        raise ValidationError(f"experiment {experiment.key} has no start date yet")
    sql_parts.functions_ensure()
    table, daily = Assignment._meta.db_table, DailyStat._meta.db_table
    scope = list(experiment.scenarios.values_list("pk", flat=True))
    scope_sql = f" AND d.scenario_id IN ({', '.join(['%s'] * len(scope))})" if scope else ""
    first = experiment.pre_period_start
    masks, masks_params = sql_parts.day_masks(experiment.pre_period_days, first)
    active_days = " + ".join(sql_parts.popcount(f"COALESCE({mask}, 0)") for mask in masks)
    with sql_parts.analytics_session(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET pre_spend_cents = 0, pre_clicks = 0, pre_active_days = 0 "
            "WHERE experiment_id = %s AND (pre_spend_cents <> 0 OR pre_clicks <> 0 "
            "OR pre_active_days <> 0)",
            [experiment.pk],
        )
        cursor.execute(
            f"""
            UPDATE {table} SET pre_spend_cents = p.spend, pre_clicks = p.clicks,
                pre_active_days = p.active_days
            FROM (
                SELECT d.advertiser_id,
                    CAST(ROUND(SUM(CAST(d.expenditure AS DOUBLE PRECISION)) * 100) AS BIGINT)
                        AS spend,
                    SUM(d.clicks) AS clicks,
                    {active_days} AS active_days
                FROM {daily} d
                WHERE d.date >= %s AND d.date < %s{scope_sql}
                GROUP BY d.advertiser_id
            ) p
            WHERE {table}.experiment_id = %s AND {table}.advertiser_id = p.advertiser_id
            """,
            [*masks_params, first, experiment.start_date, *scope, experiment.pk],
        )
        updated = cursor.rowcount
    Experiment.objects.filter(pk=experiment.pk).update(covariates_captured_at=timezone.now())
    return updated


def _pg_array(values: np.ndarray) -> str:
    """An integer array literal: far cheaper to send than a list adapted element by element."""
    return "{" + ",".join(map(str, values.tolist())) + "}"


def _assignments_insert(
    experiment_id: int, pks: np.ndarray, arm_ids: np.ndarray, bucket_numbers: np.ndarray
) -> int:
    """Insert many assignments, skipping any (experiment, advertiser) already present.

    PostgreSQL gets one INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING (100,000
    rows well under a second); other databases use bulk_create with ignore_conflicts.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        table = Assignment._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {table}
                    (experiment_id, advertiser_id, arm_id, bucket, targeted, assigned_at,
                     pre_spend_cents, pre_clicks, pre_active_days)
                SELECT %s, t.advertiser_id, NULLIF(t.arm_id, 0), t.bucket, FALSE, %s, 0, 0, 0
                FROM unnest(%s::bigint[], %s::bigint[], %s::integer[])
                    AS t(advertiser_id, arm_id, bucket)
                ON CONFLICT (experiment_id, advertiser_id) DO NOTHING
                """,
                [experiment_id, now, _pg_array(pks), _pg_array(arm_ids), _pg_array(bucket_numbers)],
            )
            return cursor.rowcount
    objs = [
        Assignment(
            experiment_id=experiment_id,
            advertiser_id=int(pk),
            arm_id=int(arm) or None,
            bucket=int(b),
            assigned_at=now,
        )
        for pk, arm, b in zip(pks, arm_ids, bucket_numbers, strict=True)
    ]
    before = Assignment.objects.filter(experiment_id=experiment_id).count()
    Assignment.objects.bulk_create(objs, batch_size=2000, ignore_conflicts=True)
    return Assignment.objects.filter(experiment_id=experiment_id).count() - before


# --- start, target, produce ----------------------------------------------------------------


def experiment_start(
    *, experiment: Experiment, start_date: dt.date | None = None, produce_tasks: bool = True
) -> AssignResult:
    """draft -> running: assign the population, then let each arm's model pick its targets.

    With task production, the evaluation window starts the day after the producing arms'
    predictions (the day the tasks become valid), and those arms must predict as of the same
    day so their tasks share one window. Arms with targeting "none" get no tasks; "external"
    arms get theirs from the caller. All or nothing: if production fails, the assignments and
    the status roll back too.
    """
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.DRAFT:
            raise ValidationError(
                f"experiment {locked.key} is {locked.status}, not draft: it was already started"
            )
        _weights_check(locked)
        if produce_tasks:
            start_date = _task_window_start(locked, start_date)
        locked.start_date = start_date or timezone.localdate()
        locked.status = Experiment.Status.RUNNING
        locked.started_at = timezone.now()
        locked.save(update_fields=["start_date", "status", "started_at"])
        result = experiment_assign(experiment=locked)
        if produce_tasks:
            experiment_produce_tasks(experiment=locked)
    experiment.refresh_from_db()
    return result


def experiment_targets_record(*, arm: Arm, advertiser_ids: Iterable[int]) -> int:
    """Mark these advertisers (primary keys) as targeted in `arm`; others in the arm untouched.

    Only members of the arm can be marked: a target outside it would break the randomisation;
    a no-task arm (targeting "none") has no targets at all.
    """
    ids = list(advertiser_ids)
    if arm.targeting == Arm.Targeting.NONE and ids:
        raise ValidationError(
            f"arm {arm.name} of {arm.experiment.key} is a no-task arm (targeting 'none'): it has "
            "no targets; record them on an arm that gives tasks"
        )
    members = Assignment.objects.filter(arm=arm, advertiser_id__in=ids)
    outsiders = set(ids) - set(members.values_list("advertiser_id", flat=True))
    if outsiders:
        sample = ", ".join(str(i) for i in sorted(outsiders)[:5])
        raise ValidationError(
            f"{len(outsiders)} advertisers (e.g. pk {sample}) are not in arm {arm.name} of "
            f"{arm.experiment.key}: targets must come from the arm's own assignments"
        )
    return members.update(targeted=True)


def _arm_model_version(arm: Arm) -> ModelVersion:
    """The arm's pinned version; else its kind's active version, else the newest ready one
    with predictions (the rule campaigns uses, so a fresh model can drive a demo)."""
    if arm.model_version_id is not None:
        return arm.model_version
    versions = ModelVersion.objects.filter(kind=arm.model_kind)
    version = versions.filter(status=ModelVersion.Status.ACTIVE).first() or (
        versions.filter(status=ModelVersion.Status.READY, predictions__isnull=False)
        .order_by("-created_at", "-pk")
        .first()
    )
    if version is None:
        raise ValidationError(
            f"arm {arm.name} of {arm.experiment.key} uses model kind {arm.model_kind!r} but no "
            "version of it is active or ready with predictions: train and predict first, or "
            "pin a version on the arm"
        )
    return version


def _task_window_start(experiment: Experiment, start_date: dt.date | None) -> dt.date | None:
    """The day after the producing arms' latest predictions, checked to be one day for all.

    None when no arm produces tasks here (only no-task and external arms): the window then
    starts on the given day.
    """
    producing = [arm for arm in _arms(experiment) if arm.produces_tasks]
    if not producing:
        return start_date
    _campaign_settings_check(experiment)
    as_of = {}
    for arm in producing:
        version = _arm_model_version(arm)
        latest = version.predictions.aggregate(d=Max("as_of"))["d"]
        if latest is None:
            raise ValidationError(
                f"arm {arm.name} of {experiment.key}: model version {version.pk} has no "
                "predictions; run the predictor for it first"
            )
        as_of[arm.name] = latest.isoformat()
    if len(set(as_of.values())) > 1:
        raise ValidationError(
            f"the arms of {experiment.key} predict as of different days ({as_of}): predict with "
            "every arm's model for the same day so all arms' tasks share one evaluation window"
        )
    window_start = dt.date.fromisoformat(next(iter(as_of.values()))) + dt.timedelta(days=1)
    if start_date is not None and start_date != window_start:
        raise ValidationError(
            f"start date {start_date} of {experiment.key} does not match the tasks' first "
            f"valid day {window_start} (the day after the predictions); leave it empty"
        )
    return window_start


def _campaign_settings_check(experiment: Experiment) -> None:
    problems = []
    if not experiment.template_ids:
        problems.append("pick at least one task template (template_ids)")
    if experiment.budget_per_arm <= 0:
        problems.append("set a positive budget_per_arm")
    if experiment.targets_per_arm is None and experiment.inactivity_threshold is None:
        problems.append("set targets_per_arm or inactivity_threshold")
    if problems:
        raise ValidationError(
            f"experiment {experiment.key} cannot produce tasks: {'; '.join(problems)}"
        )


def experiment_produce_tasks(*, experiment: Experiment) -> dict[str, int]:
    """For each arm that produces tasks here: one campaign with the shared settings and the
    arm's targeting, targets chosen by the arm's model among the arm's own advertisers only,
    and the targeted advertisers recorded here.

    No-task arms get nothing; external arms are left to the caller. Returns the number of
    targeted advertisers per producing arm's name.
    """
    # Imported here: campaigns is the next stage; the assignment and the metrics never need it.
    from campaigns.models import IncentiveTask
    from campaigns.services import ProductionError, campaign_produce

    targeted: dict[str, int] = {}
    for arm in _arms(experiment):
        if not arm.produces_tasks:
            continue
        campaign = _arm_campaign(experiment=experiment, arm=arm)
        candidates = Assignment.objects.filter(arm=arm).values("advertiser_id")
        try:
            campaign_produce(campaign=campaign, candidate_advertiser_ids=candidates,
                             actor=f"experiment {experiment.key}")  # fmt: skip
        except ProductionError as exc:
            raise ValidationError(f"arm {arm.name} of {experiment.key}: {exc}") from exc
        chosen = IncentiveTask.objects.filter(campaign=campaign).values_list(
            "advertiser_id", flat=True
        )
        targeted[arm.name] = experiment_targets_record(arm=arm, advertiser_ids=set(chosen))
    return targeted


def _arm_campaign(*, experiment: Experiment, arm: Arm) -> object:
    """The arm's campaign, created once with the settings all arms share and the arm's own
    targeting policy.

    The model version is resolved now and pinned on the arm, so the report names the exact
    version that chose the targets.
    """
    from campaigns.models import Campaign, TaskTemplate
    from campaigns.services import campaign_create

    if arm.campaign_id is not None:
        return Campaign.objects.get(pk=arm.campaign_id)
    version = _arm_model_version(arm)
    templates = list(TaskTemplate.objects.filter(pk__in=experiment.template_ids))
    by_targets = experiment.targets_per_arm is not None
    campaign = campaign_create(
        name=f"{experiment.key} / {arm.name}",
        budget=experiment.budget_per_arm,
        reward_cap=experiment.reward_cap or experiment.budget_per_arm,
        templates=templates,
        model_version=version,
        policy=Campaign.Policy.BOTTOM_N if by_targets else Campaign.Policy.THRESHOLD,
        targeting=arm.targeting,
        top_n=experiment.targets_per_arm,
        # The experiment's own no-task arm or holdout measures the increment: no hidden
        # holdout inside an arm, so "targeted" means the same in every arm.
        holdout_share=0.0,
        threshold=None if by_targets else Decimal(str(experiment.inactivity_threshold)),
        scenarios=list(experiment.scenarios.all()),
    )
    arm.campaign_id = campaign.pk
    arm.model_version = version
    arm.save(update_fields=["campaign_id", "model_version"])
    return campaign


def experiment_arm_campaign_attach(*, arm: Arm, campaign_id: int) -> Arm:
    """Bind an external arm to the campaign the caller produced its tasks in, so the report
    counts that campaign's completed rewards as the arm's spend."""
    if arm.targeting != Arm.Targeting.EXTERNAL:
        raise ValidationError(
            f"arm {arm.name} of {arm.experiment.key} has targeting {arm.targeting!r}: only an "
            "'external' arm takes a campaign made outside the A/B module"
        )
    if arm.campaign_id not in (None, campaign_id):
        raise ValidationError(
            f"arm {arm.name} of {arm.experiment.key} is already bound to campaign {arm.campaign_id}"
        )
    from campaigns.models import Campaign

    if not Campaign.objects.filter(pk=campaign_id).exists():
        raise ValidationError(f"no campaign with id {campaign_id} for arm {arm.name}")
    Arm.objects.filter(pk=arm.pk).update(campaign_id=campaign_id)
    arm.campaign_id = campaign_id
    return arm


# --- analyse and complete ------------------------------------------------------------------


@transaction.atomic
def experiment_analyse(
    *, experiment: Experiment, today: dt.date | None = None, force: bool = False
) -> Experiment:
    """running -> analysing, once the evaluation window is over (or forced)."""
    locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if locked.status != Experiment.Status.RUNNING:
        raise ValidationError(f"experiment {locked.key} is {locked.status}, not running")
    today = today or timezone.localdate()
    if not force and locked.evaluation_end is not None and today <= locked.evaluation_end:
        raise ValidationError(
            f"experiment {locked.key} evaluates until {locked.evaluation_end}: analyse after "
            "that day, or force it for an interim look"
        )
    locked.status = Experiment.Status.ANALYSING
    locked.analysed_at = timezone.now()
    locked.save(update_fields=["status", "analysed_at"])
    experiment_covariates_capture(experiment=locked)  # the whole pre-period is in by now
    locked.refresh_from_db()
    return locked


@transaction.atomic
def experiment_complete(*, experiment: Experiment) -> Experiment:
    """analysing -> completed, freezing the report as it stands."""
    locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if locked.status != Experiment.Status.ANALYSING:
        raise ValidationError(f"experiment {locked.key} is {locked.status}, not analysing")
    locked.report = experiment_report(experiment=locked, use_frozen=False)
    locked.status = Experiment.Status.COMPLETED
    locked.completed_at = timezone.now()
    locked.save(update_fields=["report", "status", "completed_at"])
    return locked
