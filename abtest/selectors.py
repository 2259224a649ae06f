"""Reads of the A/B module: population, per-advertiser metrics, daily series, breakdowns,
the report.

The metrics come from DailyStat in aggregate queries over the evaluation window: one per
advertiser, joined with the assignments (which carry the pre-period covariates stored at start,
see services.experiment_covariates_capture), zero rows included; one per (advertiser, day) for
the daily series and one per (advertiser, scenario) for the breakdowns. Everything after that
is numpy in `abtest.analysis` and `abtest.breakdowns`.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from django.db.models import Count, F, FloatField, Max, Q, QuerySet, Sum
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from abtest import analysis, breakdowns, multiarm, stats
from abtest import sql as sql_parts
from abtest.models import Arm, Assignment, Experiment
from advertisers.models import Advertiser, DailyStat, Scenario

# Advertiser fields a population filter may use.
POPULATION_FIELDS = ("business_scale", "main_category", "star_level", "registered_on")


def experiment_population(*, experiment: Experiment) -> QuerySet[Advertiser]:
    return Advertiser.objects.filter(**(experiment.population_filter or {}))


def _scope_ids(experiment: Experiment) -> list[int]:
    return list(experiment.scenarios.values_list("pk", flat=True))


def experiment_arms(*, experiment: Experiment) -> list[Arm]:
    """The arms in hash-range order: control first, then the treatments."""
    return list(experiment.arms.order_by("position").select_related("model_version"))


def _arm_group_case(experiment: Experiment) -> tuple[str, list[int]]:
    """SQL mapping arm_id to the analysis group code (0 holdout, k + 1 for the k-th arm)."""
    arms = experiment_arms(experiment=experiment)
    whens = " ".join(f"WHEN %s THEN {code}" for code in range(1, len(arms) + 1))
    return f"CASE a.arm_id {whens} ELSE 0 END", [arm.pk for arm in arms]


def _scope_sql(scope: list[int]) -> tuple[str, list[int]]:
    if not scope:
        return "", []
    return f" AND d.scenario_id IN ({', '.join(['%s'] * len(scope))})", scope


def experiment_baseline(*, experiment: Experiment) -> dict:
    """Population size, its recent active rate and ARPU, and what CUPED would remove, for the
    power plan.

    Uses the last `evaluation_days` days of data in scope (the same window length the
    experiment will measure), counting advertisers with no rows as zero. The CUPED R^2 of
    each primary metric comes from the same window against the `pre_period_days` before it
    (`stats.cuped_r_squared`): the share of variance a pre-period covariate explained last
    time, so the share CUPED is expected to remove.
    """
    scope = _scope_ids(experiment)
    population = experiment_population(experiment=experiment)
    size = population.count()
    stats_qs = DailyStat.objects.all()
    if scope:
        stats_qs = stats_qs.filter(scenario_id__in=scope)
    last_day = stats_qs.aggregate(last=Max("date"))["last"]
    empty = {"population": size, "baseline_window": None, "active_rate": 0.0, "arpu": 0.0,
             "arpu_variance": 0.0, "cuped_window": None,
             "r_squared": {"active_rate": 0.0, "arpu": 0.0}}  # fmt: skip
    if last_day is None or size == 0:
        return empty
    first_day = last_day - dt.timedelta(days=experiment.evaluation_days - 1)
    pre_first = first_day - dt.timedelta(days=experiment.pre_period_days)
    spend = Cast("expenditure", FloatField())
    per_advertiser = (
        stats_qs.filter(date__range=(pre_first, last_day), advertiser__in=population)
        .values("advertiser")
        # NULL where an advertiser has rows in one window only: the sums below skip it, as
        # they would a zero.
        .annotate(
            y=Sum(spend, filter=Q(date__gte=first_day)), x=Sum(spend, filter=Q(date__lt=first_day))
        )
    )
    t = per_advertiser.aggregate(
        active=Count("advertiser", filter=Q(y__gt=0)),
        pre_active=Count("advertiser", filter=Q(x__gt=0)),
        both_active=Count("advertiser", filter=Q(x__gt=0, y__gt=0)),
        sum_y=Coalesce(Sum("y"), 0.0),
        sum_y2=Coalesce(Sum(F("y") * F("y")), 0.0),
        sum_x=Coalesce(Sum("x"), 0.0),
        sum_x2=Coalesce(Sum(F("x") * F("x")), 0.0),
        sum_xy=Coalesce(Sum(F("x") * F("y")), 0.0),
    )
    # Advertisers without rows spent nothing: they count in n with zero.
    summary = stats.mean_summary(n=size, total=t["sum_y"], total_sq=t["sum_y2"])
    arpu = stats.Moments(n=size, **{k: t[k] for k in ("sum_y", "sum_y2", "sum_x", "sum_x2",
                                                      "sum_xy")})  # fmt: skip
    active = stats.Moments(n=size, sum_y=t["active"], sum_y2=t["active"], sum_x=t["pre_active"],
                           sum_x2=t["pre_active"], sum_xy=t["both_active"])  # fmt: skip
    return {
        "population": size,
        "baseline_window": [first_day.isoformat(), last_day.isoformat()],
        "active_rate": t["active"] / size,
        "arpu": summary.mean,
        "arpu_variance": summary.variance if np.isfinite(summary.variance) else 0.0,
        "cuped_window": [pre_first.isoformat(), (first_day - dt.timedelta(days=1)).isoformat()],
        "r_squared": {
            "active_rate": stats.cuped_r_squared(active, proportion=True),
            "arpu": stats.cuped_r_squared(arpu, proportion=False),
        },
    }


def experiment_advertiser_metrics(*, experiment: Experiment) -> analysis.AdvertiserMetrics:
    """Per assigned advertiser: window sums in scope, stored pre-period covariates, rewards.

    One pass over the evaluation window of DailyStat, grouped by advertiser, with active days
    as bit masks (see abtest.sql) that numpy counts. Advertisers without rows get zeros
    through the LEFT JOIN.
    """
    sql_parts.functions_ensure()
    group_sql, group_params = _arm_group_case(experiment)
    scope_sql, scope_params = _scope_sql(_scope_ids(experiment))
    start = experiment.evaluation_start
    masks, masks_params = sql_parts.day_masks(experiment.evaluation_days, start)
    chunks = len(masks)
    masks_sql = ", ".join(f"{mask} AS mask{k}" for k, mask in enumerate(masks))
    sql = f"""
        SELECT a.advertiser_id, {group_sql}, CAST(a.targeted AS INTEGER),
            a.pre_spend_cents, a.pre_clicks, a.pre_active_days,
            COALESCE(p.spend, 0), COALESCE(p.clicks, 0),
            {", ".join(f"COALESCE(p.mask{k}, 0)" for k in range(chunks))}
        FROM {Assignment._meta.db_table} a
        LEFT JOIN (
            SELECT d.advertiser_id,
                CAST(ROUND(SUM(CAST(d.expenditure AS DOUBLE PRECISION)) * 100) AS BIGINT)
                    AS spend,
                SUM(d.clicks) AS clicks,
                {masks_sql}
            FROM {DailyStat._meta.db_table} d
            WHERE d.date >= %s AND d.date <= %s{scope_sql}
            GROUP BY d.advertiser_id
        ) p ON p.advertiser_id = a.advertiser_id
        WHERE a.experiment_id = %s
    """
    params = [
        *group_params, *masks_params, start, experiment.evaluation_end,
        *scope_params, experiment.pk,
    ]  # fmt: skip
    with sql_parts.analytics_session():
        table = sql_parts.int_matrix(sql, params, columns=8 + chunks)
    table = table[np.argsort(table[:, 0], kind="stable")]  # by advertiser, cheaper than SQL
    active_days, first_active = sql_parts.masks_count(table[:, 8:], days=experiment.evaluation_days)
    reward = _reward_cents(experiment, table[:, 0])
    return analysis.AdvertiserMetrics(
        group=table[:, 1],
        targeted=table[:, 2].astype(bool),
        spend=table[:, 6] / 100.0,
        clicks=table[:, 7].astype(float),
        active_days=active_days.astype(float),
        pre_spend=table[:, 3] / 100.0,
        pre_clicks=table[:, 4].astype(float),
        pre_active_days=table[:, 5].astype(float),
        reward=reward / 100.0,
        first_active_day=first_active,
        arm_names=tuple(arm.name for arm in experiment_arms(experiment=experiment)),
        advertiser_id=table[:, 0],
    )


def experiment_reward_source(*, experiment: Experiment) -> str | None:
    """Why reward costs are zero, or None when they come from the arms' campaigns."""
    try:
        from campaigns.models import IncentiveTask  # noqa: F401
    except ImportError:
        return "reward cost shown as zero: the campaigns module is not available"
    if not experiment.arms.filter(campaign_id__isnull=False).exists():
        return "reward cost shown as zero: no campaign was produced for the arms"
    return None


def _reward_cents(experiment: Experiment, advertiser_ids: np.ndarray) -> np.ndarray:
    """Completed tasks' rewards per advertiser (integer cents), aligned with `advertiser_ids`."""
    cents = np.zeros(advertiser_ids.size, dtype=np.int64)
    if experiment_reward_source(experiment=experiment) is not None:
        return cents
    from campaigns.models import IncentiveTask, TaskState

    campaign_ids = list(
        experiment.arms.filter(campaign_id__isnull=False).values_list("campaign_id", flat=True)
    )
    rewards = (
        IncentiveTask.objects.filter(campaign_id__in=campaign_ids, state=TaskState.COMPLETED)
        .values("advertiser_id")
        .annotate(total=Sum("reward"))
        .values_list("advertiser_id", "total")
    )
    pairs = np.array([(pk, round(total * 100)) for pk, total in rewards], dtype=np.int64)
    if pairs.size:
        positions = np.searchsorted(advertiser_ids, pairs[:, 0])
        inside = (positions < advertiser_ids.size) & (
            advertiser_ids[np.minimum(positions, advertiser_ids.size - 1)] == pairs[:, 0]
        )
        cents[positions[inside]] = pairs[inside, 1]
    return cents


def _window_rows(experiment: Experiment, key_sql: str, key_params: list, *, columns: int):
    """Per (advertiser, key) over the evaluation window in scope, assigned advertisers only:
    advertiser_id, key, spend in cents, 1 if any row of the pair had expenditure else 0."""
    scope_sql, scope_params = _scope_sql(_scope_ids(experiment))
    sql = f"""
        SELECT d.advertiser_id, {key_sql},
            CAST(ROUND(SUM(CAST(d.expenditure AS DOUBLE PRECISION)) * 100) AS BIGINT),
            MAX(CASE WHEN d.expenditure > 0 THEN 1 ELSE 0 END)
        FROM {DailyStat._meta.db_table} d
        JOIN {Assignment._meta.db_table} a
            ON a.advertiser_id = d.advertiser_id AND a.experiment_id = %s
        WHERE d.date >= %s AND d.date <= %s{scope_sql}
        GROUP BY 1, 2
    """
    params = [*key_params, experiment.pk, experiment.evaluation_start,
              experiment.evaluation_end, *scope_params]  # fmt: skip
    with sql_parts.analytics_session():
        return sql_parts.int_matrix(sql, params, columns=columns)


def experiment_daily(
    *, experiment: Experiment, metrics: analysis.AdvertiserMetrics | None = None
) -> dict:
    """Cumulative and daily active rate and ARPU per group and population over the window,
    with confidence bands (`abtest.breakdowns.daily_series`).

    One aggregate per (advertiser, day) over the window, in scope, into a dense
    advertisers x days panel.
    """
    metrics = metrics or experiment_advertiser_metrics(experiment=experiment)
    rows = _window_rows(
        experiment, sql_parts.day_offset(), [experiment.evaluation_start], columns=4
    )
    panel = breakdowns.DailyPanel.from_rows(rows, metrics.advertiser_id, experiment.evaluation_days)
    start = experiment.evaluation_start
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(experiment.evaluation_days)]
    return {
        "dates": days,
        "level": 1.0 - experiment.alpha,
        "series": breakdowns.daily_series(metrics, panel, alpha=experiment.alpha),
    }


def experiment_breakdowns(
    *, experiment: Experiment, metrics: analysis.AdvertiserMetrics | None = None
) -> dict:
    """Each treatment arm against the control by scenario and by business scale
    (`abtest.breakdowns.breakdowns`), with the level of its intervals and what it means."""
    metrics = metrics or experiment_advertiser_metrics(experiment=experiment)
    scales = sql_parts.int_matrix(
        f"SELECT a.advertiser_id, v.business_scale FROM {Assignment._meta.db_table} a "
        f"JOIN {Advertiser._meta.db_table} v ON v.id = a.advertiser_id "
        "WHERE a.experiment_id = %s",
        [experiment.pk],
        columns=2,
    )
    scenario_rows = _window_rows(experiment, "d.scenario_id", [], columns=4)
    scope = _scope_ids(experiment)
    scenarios = Scenario.objects.filter(pk__in=scope) if scope else Scenario.objects.all()
    panel = breakdowns.SegmentPanel.from_rows(
        advertiser_ids=metrics.advertiser_id,
        scales=scales,
        scenario_rows=scenario_rows,
        scenario_codes=dict(scenarios.values_list("pk", "code")),
    )
    return {
        "level": 1.0 - experiment.alpha,
        "note": "whole arms, unadjusted; exploratory: each cell's p-value stands alone, with "
        "Benjamini-Hochberg over the cells of one dimension and metric beside it",
        **breakdowns.breakdowns(metrics, panel, alpha=experiment.alpha),
    }


def experiment_srm(*, experiment: Experiment, counts: dict[str, int]) -> dict:
    """Sample-ratio check of the stored assignment counts (by arm name, and "holdout")
    against the configured split, over all k arms (k - 1 degrees of freedom, or k with a
    holdout)."""
    arms = experiment_arms(experiment=experiment)
    total_weight = sum(arm.weight for arm in arms) or 1.0
    share = 1.0 - experiment.holdout_share
    expected = {arm.name: share * arm.weight / total_weight for arm in arms}
    if experiment.holdout_share > 0:
        expected[analysis.HOLDOUT_NAME] = experiment.holdout_share
    names = list(expected)
    observed = [counts.get(name, 0) for name in names]
    p_value = stats.srm_p_value(observed, [expected[name] for name in names])
    return {
        "p_value": p_value,
        "flagged": p_value < stats.SRM_THRESHOLD,
        "threshold": stats.SRM_THRESHOLD,
        "observed": dict(zip(names, observed, strict=True)),
        "expected_share": expected,
    }


def experiment_analysis_settings(*, experiment: Experiment) -> analysis.AnalysisSettings:
    return analysis.AnalysisSettings(
        mode=experiment.analysis_mode,
        tuning=experiment.sequential_tuning_parameter,
        prior=experiment.prior,
    )


def _experiment_header(experiment: Experiment) -> dict:
    def iso(value: dt.date | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "key": experiment.key,
        "hypothesis": experiment.hypothesis,
        "status": experiment.status,
        "seed": experiment.seed,
        "scenarios": list(experiment.scenarios.values_list("code", flat=True)),
        "population_filter": experiment.population_filter,
        "holdout_share": experiment.holdout_share,
        "alpha": experiment.alpha,
        "winsor_quantile": experiment.winsor_quantile,
        "pre_period_start": iso(experiment.pre_period_start),
        "evaluation_start": iso(experiment.evaluation_start),
        "evaluation_end": iso(experiment.evaluation_end),
        "covariates_captured_at": (
            experiment.covariates_captured_at.isoformat()
            if experiment.covariates_captured_at
            else None
        ),
        "budget_per_arm": str(experiment.budget_per_arm),
        "targets_per_arm": experiment.targets_per_arm,
        "inactivity_threshold": experiment.inactivity_threshold,
        "analysis_mode": experiment.analysis_mode,
        "sequential_tuning_parameter": experiment.sequential_tuning_parameter,
        "prior": {
            "proper": experiment.prior_proper,
            "mean": experiment.prior_mean,
            "stddev": experiment.prior_stddev,
        },
    }


def _arms_summary(experiment: Experiment, totals: dict[str, dict] | None = None) -> list[dict]:
    """Each arm's settings; once started also its size, targets, reward spent and ITT means."""
    out = []
    for arm in experiment_arms(experiment=experiment):
        entry = {
            "name": arm.name, "role": arm.role, "targeting": arm.targeting,
            "model": arm.model_label, "weight": arm.weight, "campaign_id": arm.campaign_id,
        }  # fmt: skip
        group = (totals or {}).get(arm.name)
        if group is not None:
            n = group["assigned"]
            entry.update(
                n=n,
                targets=group["targeted"],
                reward_spent=group["reward_cost"],
                active_rate=group["active"] / n if n else None,
                arpu=float(group["expenditure"]) / n if n else None,
                net_arpu=float(group["net_expenditure"]) / n if n else None,
            )
        out.append(entry)
    return out


def _definitions(experiment: Experiment) -> list[dict]:
    scope = ", ".join(experiment.scenarios.values_list("code", flat=True)) or "every scenario"
    if experiment.start_date is None:
        window = f"{experiment.evaluation_days} days from the start (not started)"
    else:
        window = (
            f"{experiment.evaluation_start} to {experiment.evaluation_end} "
            f"({experiment.evaluation_days} days); CUPED pre-period the "
            f"{experiment.pre_period_days} days before"
        )
    return analysis.metric_definitions(window=window, scope=scope)


def _frozen_report_upgrade(report: dict) -> dict:
    """A report frozen before the cost per incremental active had an interval kept it as a
    bare number per key: shown now as an estimate without an interval, with the reason."""
    costs = report.get("cost_per_incremental_active") or {}
    if all(isinstance(entry, dict) for entry in costs.values()):
        return report
    upgraded = {}
    for key, entry in costs.items():
        if not isinstance(entry, dict):
            entry = {"arm": key, "reference": "", "population": "", "value": entry, "se": None,
                     "ci_low": None, "ci_high": None, "p_value": None,
                     "not_estimable": "frozen before intervals were computed"
                     if entry is not None else "the active rate did not increase"}  # fmt: skip
        upgraded[key] = entry
    return {**report, "cost_per_incremental_active": upgraded}


def experiment_report(*, experiment: Experiment, use_frozen: bool = True) -> dict:
    """The full report as JSON-ready data; a completed experiment returns its frozen copy."""
    if use_frozen and experiment.status == Experiment.Status.COMPLETED and experiment.report:
        return _frozen_report_upgrade(experiment.report)
    header = _experiment_header(experiment)
    if experiment.start_date is None:
        return {"experiment": header, "arms": _arms_summary(experiment), "rows": [],
                "metric_definitions": _definitions(experiment),
                "notes": ["not started: no assignments yet"]}  # fmt: skip
    metrics = experiment_advertiser_metrics(experiment=experiment)
    totals = analysis.group_totals(metrics)
    notes = []
    reward_note = experiment_reward_source(experiment=experiment)
    if reward_note:
        notes.append(reward_note)
    if timezone.localdate() <= experiment.evaluation_end:
        notes.append(f"interim: the evaluation window runs until {experiment.evaluation_end}")
    rows = analysis.report_rows(
        metrics,
        alpha=experiment.alpha,
        winsor_quantile=experiment.winsor_quantile,
        settings=experiment_analysis_settings(experiment=experiment),
    )
    report = {
        "experiment": header,
        "computed_at": timezone.now().isoformat(),
        "arms": _arms_summary(experiment, totals),
        "groups": totals,
        "srm": experiment_srm(
            experiment=experiment, counts={k: v["assigned"] for k, v in totals.items()}
        ),
        "rows": rows,
        "verdicts": analysis.verdicts(rows, alpha=experiment.alpha),
        "metric_definitions": _definitions(experiment),
        "cost_per_incremental_active": analysis.cost_per_incremental_active(
            metrics, alpha=experiment.alpha
        ),
        "daily": experiment_daily(experiment=experiment, metrics=metrics),
        "breakdowns": experiment_breakdowns(experiment=experiment, metrics=metrics),
        "notes": notes,
    }
    no_task = [
        code
        for code, arm in enumerate(experiment_arms(experiment=experiment), start=1)
        if arm.targeting == Arm.Targeting.NONE
    ]
    reference = multiarm.no_task_reference(metrics, no_task)
    if reference is not None:
        report["incremental_vs_no_task_arm"] = multiarm.incremental_vs_no_task(
            metrics, reference=reference, budget=float(experiment.budget_per_arm)
        )
    return report
