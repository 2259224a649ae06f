"""Experiment life cycle, assignment determinism and balance, no re-bucketing."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from abtest import hashing, services, stats
from abtest.models import Arm, Assignment, Experiment
from abtest.selectors import experiment_report, experiment_srm
from advertisers.models import Advertiser, DailyStat
from predictor.models import ModelKind

pytestmark = pytest.mark.django_db

START = dt.date(2024, 3, 1)


def _assigned_roles(experiment: Experiment) -> dict[str, str]:
    rows = Assignment.objects.filter(experiment=experiment).values_list(
        "advertiser__advertiser_id", "arm__role"
    )
    return {adv: role or "holdout" for adv, role in rows}


def test_it_creates_a_draft_with_the_documented_defaults():
    experiment = services.experiment_create(key="m2m-vs-baseline")
    arms = {arm.role: arm for arm in experiment.arms.all()}
    assert experiment.status == Experiment.Status.DRAFT
    assert (experiment.pre_period_days, experiment.evaluation_days) == (28, 7)
    assert arms["control"].model_kind == ModelKind.SINGLE_TASK
    assert arms["treatment"].model_kind == ModelKind.M2M
    assert arms["control"].weight == arms["treatment"].weight == 0.5
    assert len(experiment.seed) >= 16


def test_it_fixes_the_seed_at_creation():
    experiment = services.experiment_create(key="seeded")
    seed = experiment.seed
    services.experiment_settings_update(experiment=experiment, hypothesis="M2M finds more")
    experiment.refresh_from_db()
    assert experiment.seed == seed


def test_it_stores_a_power_plan_at_creation(advertisers_factory):
    advertisers_factory(400)
    experiment = services.experiment_create(key="planned", targets_per_arm=50)
    plan = experiment.plan
    assert plan["population"] == 400
    assert plan["itt"]["n_control"] == plan["itt"]["n_treatment"] == 200
    assert plan["targeted"]["n_control"] == 50
    assert "mde_active_rate" in plan["itt"]


def test_it_rejects_an_unknown_population_lookup_and_stores_nothing():
    with pytest.raises(ValidationError, match="unknown lookup 'password'"):
        services.experiment_create(key="bad", population_filter={"password": "x"})
    assert not Experiment.objects.exists()


def test_it_rejects_both_targets_and_threshold():
    with pytest.raises(ValidationError, match="not both"):
        services.experiment_create(key="both", targets_per_arm=10, inactivity_threshold=1.0)
    assert not Experiment.objects.exists()


def test_it_assigns_the_whole_population_on_start(advertisers_factory):
    advertisers_factory(300)
    experiment = services.experiment_create(key="all-in")
    result = services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    assert result.created == result.total == 300
    assert experiment.status == Experiment.Status.RUNNING
    assert experiment.start_date == START


def test_it_assigns_only_the_filtered_population(advertisers_factory):
    advertisers_factory(50, prefix="small", business_scale=1)
    advertisers_factory(70, prefix="large", business_scale=5)
    experiment = services.experiment_create(
        key="small-only", population_filter={"business_scale__in": [1, 2]}
    )
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    ids = set(_assigned_roles(experiment))
    assert len(ids) == 50
    assert all(i.startswith("small") for i in ids)


def test_it_assigns_deterministically_by_the_documented_hash(advertisers_factory):
    advertisers_factory(500)
    experiment = services.experiment_create(key="by-hash", seed="fixed-seed")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    for adv, role in _assigned_roles(experiment).items():
        expected = "control" if hashing.bucket("fixed-seed", adv) < 0.5 else "treatment"
        assert role == expected, adv


def test_it_assigns_the_same_way_for_the_same_seed(advertisers_factory):
    advertisers_factory(200)
    first = services.experiment_create(key="first", seed="same")
    second = services.experiment_create(key="second", seed="same")
    for experiment in (first, second):
        services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    assert _assigned_roles(first) == _assigned_roles(second)


def test_it_balances_a_clean_split_without_flagging_srm(advertisers_factory):
    advertisers_factory(4000)
    # A fixed seed: a random one is flagged (or off by 150) in about one split in a thousand.
    experiment = services.experiment_create(key="balanced", seed="balanced")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    roles = list(_assigned_roles(experiment).values())
    counts = {"control": roles.count("control"), "treatment": roles.count("treatment")}
    assert abs(counts["control"] - 2000) < 150
    assert not experiment_srm(experiment=experiment, counts=counts)["flagged"]


def test_it_carves_out_the_holdout_share(advertisers_factory):
    advertisers_factory(3000)
    experiment = services.experiment_create(key="held", holdout_share=0.2)
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    roles = list(_assigned_roles(experiment).values())
    assert abs(roles.count("holdout") - 600) < 90
    for adv, role in _assigned_roles(experiment).items():
        assert (role == "holdout") == (hashing.bucket(experiment.seed, adv) < 0.2)


def test_it_never_rebuckets_when_the_weights_change(advertisers_factory):
    advertisers_factory(400, prefix="early")
    experiment = services.experiment_create(key="reweighted")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    before = _assigned_roles(experiment)
    services.experiment_weights_update(experiment=experiment, control_weight=0.1,
                                       treatment_weight=0.9)  # fmt: skip
    advertisers_factory(400, prefix="late")
    result = services.experiment_assign(experiment=experiment)
    after = _assigned_roles(experiment)
    assert result.created == 400
    assert {adv: after[adv] for adv in before} == before
    late = [role for adv, role in after.items() if adv.startswith("late")]
    assert late.count("treatment") > 300  # the new split applies to newcomers only


def test_it_does_not_duplicate_assignments_when_assigning_again(advertisers_factory):
    advertisers_factory(100)
    experiment = services.experiment_create(key="twice")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    again = services.experiment_assign(experiment=experiment)
    assert (again.created, again.total) == (0, 100)


def test_it_refuses_to_start_twice(advertisers_factory):
    advertisers_factory(10)
    experiment = services.experiment_create(key="started")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    with pytest.raises(ValidationError, match="already started"):
        services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)


def test_it_only_marks_targets_from_the_arms_own_members(advertisers_factory):
    advertisers_factory(100)
    experiment = services.experiment_create(key="targets")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    control = experiment.arms.get(role=Arm.Role.CONTROL)
    treatment_member = Assignment.objects.filter(arm__role="treatment", experiment=experiment)[0]
    with pytest.raises(ValidationError, match="not in arm single-task"):
        services.experiment_targets_record(
            arm=control, advertiser_ids=[treatment_member.advertiser_id]
        )
    assert not Assignment.objects.filter(targeted=True).exists()


def test_it_walks_the_life_cycle_and_freezes_the_report(advertisers_factory):
    advertisers_factory(20)
    experiment = services.experiment_create(key="lifecycle")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    with pytest.raises(ValidationError, match="evaluates until"):
        services.experiment_analyse(experiment=experiment, today=START + dt.timedelta(days=3))
    services.experiment_analyse(experiment=experiment, today=START + dt.timedelta(days=7))
    completed = services.experiment_complete(experiment=experiment)
    assert completed.status == Experiment.Status.COMPLETED
    assert (
        completed.report["groups"]["single-task"]["assigned"]
        + completed.report["groups"]["m2m"]["assigned"]
        == 20
    )
    assert experiment_report(experiment=completed) == completed.report


def test_it_freezes_settings_once_running(advertisers_factory):
    advertisers_factory(5)
    experiment = services.experiment_create(key="frozen")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    with pytest.raises(ValidationError, match="frozen"):
        services.experiment_settings_update(experiment=experiment, evaluation_days=14)


@pytest.mark.postgres
def test_it_assigns_100000_advertisers_in_seconds():
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Advertiser._meta.db_table} (advertiser_id, name, registered_on, "
            "business_scale, main_category, star_level) SELECT 'bulk' || g, 'bulk', "
            "DATE '2022-01-01', 1, 'retail', 0 FROM generate_series(1, 100000) g"
        )
    experiment = services.experiment_create(key="bulk")
    began = time.perf_counter()
    result = services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    elapsed = time.perf_counter() - began
    assert result.created == 100_000
    # About 3 s on a quiet 2-core machine; a row-by-row path would take minutes.
    assert elapsed < 10.0, f"assigning 100,000 advertisers took {elapsed:.1f} s"


def test_it_rejects_a_population_filter_value_of_the_wrong_type():
    with pytest.raises(ValidationError, match="cannot be applied"):
        services.experiment_create(key="typed", population_filter={"star_level__gte": "three"})
    assert not Experiment.objects.exists()


def test_it_plans_from_the_recent_baseline(advertisers_factory, stat_factory, scenario):
    ads = advertisers_factory(4)
    day_before, too_old = START - dt.timedelta(days=1), START - dt.timedelta(days=30)
    DailyStat.objects.bulk_create(
        [
            stat_factory(ads[0], scenario, START, "10.00"),
            stat_factory(ads[1], scenario, START, "30.00"),
            stat_factory(ads[1], scenario, day_before, "10.00"),
            stat_factory(ads[2], scenario, too_old, "99.00"),
        ]
    )
    plan = services.experiment_create(key="baseline").plan
    assert plan["baseline_window"] == ["2024-02-24", "2024-03-01"]
    assert plan["active_rate"] == 0.5
    assert plan["arpu"] == pytest.approx(12.5)
    assert plan["arpu_variance"] == pytest.approx(np.var([10, 40, 0, 0], ddof=1))


def test_it_plans_the_mde_with_and_without_cuped(advertisers_factory, stat_factory, scenario):
    # Window 2024-02-24..03-01 (the last 7 days), its pre-period the 28 days before.
    ads = advertisers_factory(6)
    window = [30.0, 10.0, 0.0, 25.0, 5.0, 0.0]
    pre = [20.0, 8.0, 0.0, 22.0, 0.0, 4.0]
    earlier = START - dt.timedelta(days=20)
    rows = [stat_factory(a, scenario, START, f"{w:.2f}")
            for a, w in zip(ads, window, strict=True) if w]  # fmt: skip
    rows += [stat_factory(a, scenario, earlier, f"{p:.2f}")
             for a, p in zip(ads, pre, strict=True) if p]  # fmt: skip
    rows.append(stat_factory(ads[0], scenario, START - dt.timedelta(days=40), "99.00"))  # older
    DailyStat.objects.bulk_create(rows)
    plan = services.experiment_create(key="cuped-plan").plan
    assert plan["cuped_window"] == ["2024-01-27", "2024-02-23"]
    y, x = np.array(window), np.array(pre)
    assert plan["r_squared"]["arpu"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    active = stats.Moments.from_arrays((y > 0).astype(float), (x > 0).astype(float))
    assert plan["r_squared"]["active_rate"] == pytest.approx(
        stats.cuped_r_squared(active, proportion=True)
    )
    itt = plan["itt"]
    assert itt["mde_arpu_cuped"] == pytest.approx(
        itt["mde_arpu"] * np.sqrt(1 - plan["r_squared"]["arpu"])
    )
    assert itt["mde_active_rate_cuped"] <= itt["mde_active_rate"]
    assert itt["power_arpu_cuped"] >= itt["power_arpu"]


def test_it_stores_the_analysis_mode_and_its_parameters():
    experiment = services.experiment_create(
        key="bayes", analysis_mode="bayesian", prior_proper=True, prior_mean=0.01,
        prior_stddev=0.3, sequential_tuning_parameter=2000,
    )  # fmt: skip
    experiment.refresh_from_db()
    assert experiment.prior == stats.GaussianPrior(mean=0.01, variance=0.09, proper=True)
    assert experiment.sequential_tuning_parameter == 2000


def test_it_refuses_an_unknown_mode_or_a_zero_prior_stddev():
    with pytest.raises(ValidationError, match="analysis_mode"):
        services.experiment_create(key="bad-mode", analysis_mode="bayes")
    with pytest.raises(ValidationError, match="prior_stddev"):
        services.experiment_create(key="bad-prior", prior_stddev=0.0)
    assert not Experiment.objects.exists()
