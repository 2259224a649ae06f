"""The incentive lab: a small closed loop end to end, its report checked against the stored
rows, and the runs it refuses before writing anything."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from abtest.models import Arm, Assignment, Experiment
from advertisers.models import Advertiser, DailyStat
from campaigns.models import Campaign, CampaignHoldout, IncentiveTask, TaskState, UpliftModel
from lab import report
from lab.runner import ARMS, LabConfig, LabError, lab_check, lab_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def artifacts(tmp_path, settings):
    settings.ARTIFACT_DIR = str(tmp_path / "artifacts")
    return tmp_path


SMALL = dict(advertisers=3000, days=110, train_advertisers=1500, epochs=1, exploration_share=0.2)


def test_it_runs_the_closed_loop_and_its_report_matches_the_stored_rows(artifacts):
    config = LabConfig(**SMALL, out=artifacts / "lab")
    result = lab_run(config, progress=lambda line: None)
    experiment = Experiment.objects.get(key=result.experiment_key)
    rows = {
        r["arm"]: r
        for r in report.arm_table(result.report, result.expected, result.true_increments)
    }
    assert list(rows) == [name for name, *_ in ARMS]

    # the exploration week trained an uplift model on tasks and a holdout
    exploration = Campaign.objects.get(pk=result.exploration["campaign_id"])
    assert exploration.tasks.count() == result.exploration["tasks"] > 0
    assert CampaignHoldout.objects.filter(campaign=exploration).count() > 0
    assert UpliftModel.objects.count() == 1 and "qini" in str(result.uplift_quality)

    start, end = experiment.evaluation_start, experiment.evaluation_end
    for name, *_, targeting in ARMS:
        arm = Arm.objects.get(experiment=experiment, name=name)
        members = Assignment.objects.filter(arm=arm).values("advertiser_id")
        n = members.count()
        active = (
            DailyStat.objects.filter(
                advertiser__in=members, date__gte=start, date__lte=end, expenditure__gt=0
            )
            .values("advertiser_id")
            .distinct()
            .count()
        )
        spend = DailyStat.objects.filter(
            advertiser__in=members, date__gte=start, date__lte=end
        ).aggregate(s=Sum("expenditure"))["s"] or Decimal(0)
        tasks = IncentiveTask.objects.filter(campaign_id=arm.campaign_id)
        paid = tasks.filter(state=TaskState.COMPLETED).aggregate(s=Sum("reward"))["s"] or 0
        row = rows[name]
        assert row["n"] == n
        assert row["targeted"] == (tasks.count() if targeting != "none" else 0)
        assert row["active_rate"] == pytest.approx(active / n)
        assert row["arpu"] == pytest.approx(float(spend) / n, abs=0.01)
        assert row["net_arpu"] == pytest.approx((float(spend) - float(paid)) / n, abs=0.01)
        assert row["reward_spent"] == pytest.approx(float(paid))
        if targeting != "none":  # every producing arm stays within the same budget
            assert tasks.aggregate(s=Sum("reward"))["s"] <= experiment.budget_per_arm
    # incremental actives per 1,000 against the no-task arm, from the same rows
    no_task = rows["no-task"]
    for name in ("m2m", "m2m-uplift", "oracle"):
        r = rows[name]
        if r["reward_spent"] > 0:
            expected = (
                1000 * (r["active_rate"] - no_task["active_rate"]) * r["n"] / r["reward_spent"]
            )
            assert r["inc_active_per_1000"] == pytest.approx(expected, rel=1e-6)
        incremental = (r["active_rate"] - no_task["active_rate"]) * r["n"]
        assert r["inc_active"] == pytest.approx(incremental, rel=1e-6)
        per_budget = 1000 * incremental / float(experiment.budget_per_arm)
        assert r["inc_active_per_1000_budget"] == pytest.approx(per_budget, rel=1e-6)
        lo, hi = r["inc_active_per_1000_budget_ci"]
        assert lo < per_budget < hi
    # the world's expected increment of each arm's tasks: none without tasks. Each arm draws
    # its own advertisers, so the oracle bounds the others only in expectation (m2m-uplift's
    # draw can hold more to win back); it is far ahead of the arms that ignore uplift
    assert {name: e["tasks"] for name, e in result.expected.items()} == {
        name: r["targeted"] for name, r in rows.items()
    }
    assert rows["no-task"]["expected_per_1000_budget"] == 0.0
    best = rows["oracle"]["expected_per_1000_budget"]
    assert best > 2 * max(rows[name]["expected_per_1000_budget"] for name in ("random", "m2m"))
    # the true increments (twin world): only advertisers who took a task up can differ from
    # their twin, so an arm's increment is bounded by its accepted tasks, and 0 without tasks
    assert result.true_increments["no-task"]["incremental_active"] == 0
    for name, *_ in ARMS:
        arm = Arm.objects.get(experiment=experiment, name=name)
        accepted = IncentiveTask.objects.filter(
            campaign_id=arm.campaign_id, accepted_at__isnull=False
        ).count()
        assert abs(result.true_increments[name]["incremental_active"]) <= accepted
    assert rows["oracle"]["true_per_1000_budget"] > 0
    ratios = report.ratios(list(rows.values()))
    uplift, m2m = rows["m2m-uplift"], rows["m2m"]
    assert ratios["uplift_over_m2m_least_activity"] == pytest.approx(
        uplift["inc_active_per_1000_budget"] / m2m["inc_active_per_1000_budget"]
    )
    assert ratios["uplift_over_oracle_paid"] == pytest.approx(
        uplift["inc_active_per_1000"] / rows["oracle"]["inc_active_per_1000"]
    )
    assert ratios["uplift_over_oracle_expected"] == pytest.approx(
        uplift["expected_per_1000_budget"] / best
    )
    assert (config.out / "lab.png").exists() is False  # the command writes the chart
    report.chart_png(list(rows.values()), config.out / "lab.png")
    assert (config.out / "lab.png").stat().st_size > 1000


def test_it_refuses_too_few_advertisers_for_the_arms_before_writing(artifacts):
    with pytest.raises(LabError, match="per arm"):
        lab_run(LabConfig(advertisers=600, out=artifacts), progress=lambda line: None)
    assert not Advertiser.objects.exists() and not Campaign.objects.exists()


def test_it_refuses_a_budget_too_small_for_one_task(artifacts):
    config = dataclasses.replace(LabConfig(**SMALL, out=artifacts), budget_per_arm=Decimal(1))
    with pytest.raises(LabError, match="too small for one task"):
        lab_check(config)


def test_it_refuses_to_reuse_models_when_none_is_trained(artifacts):
    with pytest.raises(CommandError, match="no trained m2m model"):
        call_command("lab", "--reuse-models", "--advertisers", "3000", "--out", str(artifacts))
    assert not Campaign.objects.exists()


def test_it_summarises_repeats_as_mean_and_sd():
    rows = [
        {
            "arm": "a",
            "active_rate": v,
            "arpu": 1.0,
            "net_arpu": 1.0,
            "reward_spent": 1.0,
            "inc_active_per_1000_budget": v,
            "inc_active_per_1000": 2 * v,
            "inc_net_per_1000": 0.0,
            "expected_per_1000_budget": 3 * v,
            "true_per_1000_budget": 4 * v,
        }
        for v in (0.1, 0.3)
    ]
    summary = report.repeats_summary([[rows[0]], [rows[1]]])
    assert summary[0]["active_rate_mean"] == pytest.approx(0.2)
    assert summary[0]["inc_active_per_1000_sd"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    assert summary[0]["expected_per_1000_budget_mean"] == pytest.approx(0.6)
    assert summary[0]["true_per_1000_budget_sd"] == pytest.approx(np.std([0.4, 1.2], ddof=1))
    assert summary[0]["arm"] == "a"
