"""Starting an experiment end to end: each arm's own model picks its targets among the arm's
members only, through the campaigns module, with the same templates, count and budget."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from abtest import services
from abtest.models import Arm, Assignment, Experiment
from abtest.selectors import experiment_report
from advertisers.models import DailyStat
from campaigns.models import IncentiveTask, TaskKind, TaskState
from campaigns.services import template_create
from predictor.models import ModelKind, ModelVersion, Prediction

pytestmark = pytest.mark.django_db

AS_OF = dt.date(2024, 2, 29)
TARGETS = 4


@pytest.fixture
def world(advertisers_factory, stat_factory, scenario):
    advertisers = advertisers_factory(30)
    # Everyone spent recently, so everyone is eligible for a task.
    DailyStat.objects.bulk_create(
        [stat_factory(a, scenario, AS_OF - dt.timedelta(days=1), "20.00", 3) for a in advertisers]
    )
    versions = {
        kind: ModelVersion.objects.create(kind=kind, status=ModelVersion.Status.ACTIVE)
        for kind in (ModelKind.SINGLE_TASK, ModelKind.M2M)
    }
    # The two models disagree: the baseline thinks early ids go quiet, M2M the late ones.
    rows = []
    for i, adv in enumerate(advertisers):
        for kind, activity in ((ModelKind.SINGLE_TASK, i), (ModelKind.M2M, 30 - i)):
            rows.append(Prediction(model_version=versions[kind], advertiser=adv, scenario=scenario,
                                   as_of=AS_OF, clicks=5, expenditure=100.0,
                                   active_days=activity / 10, impressions=50, gmv=300))  # fmt: skip
    Prediction.objects.bulk_create(rows)
    template = template_create(
        name="Spend", kind=TaskKind.SPEND, reward_value=Decimal("10"),
        minimum_target=Decimal("50"), message_text="Spend {target}, earn {reward}.",
    )  # fmt: skip
    return {"advertisers": advertisers, "versions": versions, "template": template}


@pytest.fixture
def started(world, scenario) -> Experiment:
    experiment = services.experiment_create(
        key="e2e", scenarios=[scenario], template_ids=[world["template"].pk],
        targets_per_arm=TARGETS, budget_per_arm=Decimal("1000"),
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    return experiment


def _members(experiment: Experiment, role: str) -> list[int]:
    return list(
        Assignment.objects.filter(experiment=experiment, arm__role=role)
        .order_by("advertiser_id")
        .values_list("advertiser_id", flat=True)
    )


def test_it_starts_the_window_the_day_after_the_predictions(started):
    assert started.start_date == AS_OF + dt.timedelta(days=1)
    assert started.status == Experiment.Status.RUNNING


def test_it_lets_each_arms_model_choose_its_targets_within_the_arm(started, world):
    for role, kind in (("control", ModelKind.SINGLE_TASK), ("treatment", ModelKind.M2M)):
        members = _members(started, role)
        activity = dict(
            Prediction.objects.filter(model_version=world["versions"][kind],
                                      advertiser_id__in=members)
            .values_list("advertiser_id", "active_days")
        )  # fmt: skip
        expected = sorted(members, key=lambda pk: (activity[pk], pk))[:TARGETS]
        targeted = Assignment.objects.filter(experiment=started, arm__role=role, targeted=True)
        assert sorted(targeted.values_list("advertiser_id", flat=True)) == sorted(expected)


def test_it_gives_tasks_only_to_the_arms_targets(started):
    for arm in started.arms.all():
        tasked = set(IncentiveTask.objects.filter(campaign_id=arm.campaign_id)
                     .values_list("advertiser_id", flat=True))  # fmt: skip
        targeted = set(Assignment.objects.filter(arm=arm, targeted=True)
                       .values_list("advertiser_id", flat=True))  # fmt: skip
        assert tasked == targeted and len(tasked) == TARGETS


def test_it_pins_the_model_version_that_chose_the_targets(started, world):
    arms = {arm.role: arm for arm in started.arms.all()}
    assert arms["control"].model_version == world["versions"][ModelKind.SINGLE_TASK]
    assert arms["treatment"].model_version == world["versions"][ModelKind.M2M]


def test_it_counts_completed_rewards_as_the_arms_cost(started):
    treatment = started.arms.get(role=Arm.Role.TREATMENT)
    task = IncentiveTask.objects.filter(campaign_id=treatment.campaign_id).first()
    IncentiveTask.objects.filter(pk=task.pk).update(
        state=TaskState.COMPLETED, completed_at=timezone.now()
    )
    report = experiment_report(experiment=started)
    assert report["groups"][treatment.name]["reward_cost"] == f"{task.reward:.2f}"
    assert report["groups"]["single-task"]["reward_cost"] == "0.00"
    spent = {arm["name"]: arm["reward_spent"] for arm in report["arms"]}
    assert spent == {"single-task": "0.00", "m2m": f"{task.reward:.2f}"}
    assert not any("reward cost" in note for note in report["notes"])


def test_it_rolls_everything_back_when_the_arms_predict_different_days(world, scenario):
    m2m = world["versions"][ModelKind.M2M]
    Prediction.objects.filter(model_version=m2m).update(as_of=AS_OF - dt.timedelta(days=1))
    experiment = services.experiment_create(
        key="skewed", scenarios=[scenario], template_ids=[world["template"].pk],
        targets_per_arm=TARGETS, budget_per_arm=Decimal("1000"),
    )  # fmt: skip
    with pytest.raises(ValidationError, match="different days"):
        services.experiment_start(experiment=experiment)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DRAFT
    assert not Assignment.objects.filter(experiment=experiment).exists()
