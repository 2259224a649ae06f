"""Experiments with a control and up to five treatments: creation rules, assignment over k arms,
SRM over all of them, each treatment against control with Holm across arms x metrics, task
production per arm targeting, and incremental effects against the no-task group."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from abtest import analysis, hashing, multiarm, services, stats
from abtest.models import Arm, Assignment, Experiment
from abtest.selectors import experiment_report
from abtest.services import ArmSpec
from advertisers.models import DailyStat
from campaigns.models import Campaign, IncentiveTask, TaskKind, TaskState
from campaigns.services import template_create
from predictor.models import ModelKind, ModelVersion, Prediction

pytestmark = pytest.mark.django_db

START = dt.date(2024, 3, 1)
AS_OF = START - dt.timedelta(days=1)


def lab_arms() -> list[ArmSpec]:
    """The incentive lab's six arms, control not first on purpose."""
    return [
        ArmSpec("no-tasks", targeting="none"),
        ArmSpec("random", targeting="random", model_kind=ModelKind.M2M),
        ArmSpec("single-task", role="control", model_kind=ModelKind.SINGLE_TASK),
        ArmSpec("m2m", model_kind=ModelKind.M2M),
        ArmSpec("m2m-uplift", targeting="uplift", model_kind=ModelKind.M2M),
        ArmSpec("oracle", targeting="external"),
    ]


def test_it_creates_six_arms_with_the_control_first():
    experiment = services.experiment_create(key="lab", arms=lab_arms())
    arms = list(experiment.arms.order_by("position"))
    assert [a.name for a in arms] == ["single-task", "no-tasks", "random", "m2m", "m2m-uplift",
                                      "oracle"]  # fmt: skip
    assert [a.position for a in arms] == list(range(6))
    assert [a.role for a in arms].count("control") == 1 and arms[0].role == "control"
    assert {a.name: a.targeting for a in arms}["m2m-uplift"] == "uplift"
    assert experiment.plan["arm_sizes"].keys() == {a.name for a in arms}


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ([ArmSpec(f"t{i}", model_kind="m2m") for i in range(6)] + [ArmSpec("c", role="control",
         model_kind="m2m")], "7 arms given"),
        ([ArmSpec("a", role="control", model_kind="m2m"), ArmSpec("b", role="control",
         model_kind="m2m")], "exactly one arm must have role 'control', found 2"),
        ([ArmSpec("a", model_kind="m2m"), ArmSpec("b", model_kind="m2m")],
         "exactly one arm must have role 'control', found 0"),
        ([ArmSpec("same", role="control", model_kind="m2m"), ArmSpec("same", model_kind="m2m")],
         "unique"),
        ([ArmSpec("c", role="control", model_kind="m2m"), ArmSpec("t", targeting="random")],
         "arm 2 ('t'): targeting 'random' produces tasks through a campaign"),
        ([ArmSpec("c", role="control", model_kind="m2m"), ArmSpec("t", targeting="psychic")],
         "targeting 'psychic' is not one of"),
        ([ArmSpec("c", role="control", model_kind="m2m"), ArmSpec("t", model_kind="m2m",
         weight=-1)], "weight -1 must be a non-negative number"),
        ([ArmSpec("c", role="control", model_kind="m2m", weight=0), ArmSpec("t",
         model_kind="m2m", weight=0)], "sum to zero"),
    ],
)  # fmt: skip
def test_it_rejects_a_bad_set_of_arms_and_stores_nothing(arms, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        services.experiment_create(key="bad-arms", arms=arms)
    assert not Experiment.objects.exists()
    assert not Arm.objects.exists()


def test_it_enforces_unique_names_and_one_control_in_the_database():
    experiment = services.experiment_create(key="constraints")
    control = experiment.arms.get(role="control")
    with pytest.raises(IntegrityError), transaction.atomic():
        Arm.objects.create(experiment=experiment, role="treatment", name=control.name,
                           model_kind="m2m", position=5)  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        Arm.objects.create(experiment=experiment, role="control", name="second-control",
                           model_kind="m2m", position=6)  # fmt: skip


def test_it_keeps_the_two_arm_call_working_when_both_arms_use_one_kind():
    experiment = services.experiment_create(key="same-kind", treatment_kind=ModelKind.SINGLE_TASK)
    assert list(experiment.arms.values_list("name", flat=True)) == [
        "single-task-control",
        "single-task-treatment",
    ]


def test_it_assigns_k_arms_by_the_hash_and_the_weights(advertisers_factory):
    advertisers = advertisers_factory(1200)
    weights = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    specs = [replace_weight(spec, w) for spec, w in zip(_ordered(lab_arms()), weights, strict=True)]
    experiment = services.experiment_create(key="k-hash", arms=specs, holdout_share=0.1,
                                            seed="k-hash")  # fmt: skip
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    arms = list(experiment.arms.order_by("position"))
    boundaries = hashing.arm_boundaries(weights, 0.1)
    expected_group = hashing.groups_for_buckets(
        hashing.buckets("k-hash", [a.advertiser_id for a in advertisers]), boundaries
    )
    by_pk = dict(Assignment.objects.filter(experiment=experiment).values_list("advertiser_id",
                                                                             "arm_id"))  # fmt: skip
    arm_ids = [None] + [a.pk for a in arms]
    assert [by_pk[a.pk] for a in advertisers] == [arm_ids[g] for g in expected_group]
    report = experiment_report(experiment=experiment)
    assert set(report["srm"]["observed"]) == {*(a.name for a in arms), "holdout"}
    assert report["srm"]["expected_share"]["single-task"] == pytest.approx(0.9 * 2 / 7)
    assert not report["srm"]["flagged"]
    counts = [report["srm"]["observed"][n] for n in report["srm"]["expected_share"]]
    assert report["srm"]["p_value"] == pytest.approx(
        stats.srm_p_value(counts, list(report["srm"]["expected_share"].values()))
    )


def _ordered(specs: list[ArmSpec]) -> list[ArmSpec]:
    return sorted(specs, key=lambda s: s.role != "control")


def replace_weight(spec: ArmSpec, weight: float) -> ArmSpec:
    from dataclasses import replace

    return replace(spec, weight=weight)


def test_it_flags_srm_over_k_arms_when_one_arm_is_starved(advertisers_factory):
    advertisers_factory(600)
    experiment = services.experiment_create(key="k-srm", arms=lab_arms(), seed="k-srm")
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    services.experiment_weights_update(experiment=experiment, weights={"oracle": 3.0})
    report = experiment_report(experiment=experiment)
    assert report["srm"]["flagged"]
    with pytest.raises(ValidationError, match=r"no arm named \['nope'\]"):
        services.experiment_weights_update(experiment=experiment, weights={"nope": 1.0})


@pytest.fixture
def k_report(advertisers_factory, stat_factory, scenario) -> dict:
    """Four arms, 400 advertisers, spend rising with the arm's position."""
    advertisers = advertisers_factory(400)
    arms = [ArmSpec("base", role="control", model_kind="single_task"),
            ArmSpec("none", targeting="none"), ArmSpec("m2m", model_kind="m2m"),
            ArmSpec("m2m-uplift", model_kind="m2m", targeting="uplift")]  # fmt: skip
    experiment = services.experiment_create(key="k-report", arms=arms, scenarios=[scenario],
                                            seed="k-report")  # fmt: skip
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    position = dict(
        Assignment.objects.filter(experiment=experiment).values_list("advertiser_id",
                                                                     "arm__position")
    )  # fmt: skip
    rng = np.random.default_rng(5)
    rows = []
    for adv in advertisers:
        for offset in range(-7, 7):
            boost = 0.1 * position[adv.pk] if offset >= 0 else 0.0
            if rng.random() < 0.25 + boost:
                rows.append(stat_factory(adv, scenario, START + dt.timedelta(days=offset),
                                         f"{rng.gamma(2.0, 10.0):.2f}", 2))  # fmt: skip
    DailyStat.objects.bulk_create(rows)
    services.experiment_covariates_capture(experiment=experiment)
    return experiment_report(experiment=experiment)


def test_it_compares_every_treatment_with_the_control_for_every_metric(k_report):
    rows = [r for r in k_report["rows"] if r["population"] == "itt" and r["adjustment"] == "none"]
    assert {r["arm"] for r in rows} == {"none", "m2m", "m2m-uplift"}
    assert {r["control_arm"] for r in rows} == {"base"}
    by_arm = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r["metric"])
    assert all(metrics == [m.key for m in analysis.METRICS] for metrics in by_arm.values())
    # the same control in every comparison
    control_means = {r["control"]["mean"] for r in rows if r["metric"] == "arpu"}
    assert len(control_means) == 1
    sizes = {arm["name"]: arm["n"] for arm in k_report["arms"]}
    for r in rows:
        assert (r["control"]["n"], r["treatment"]["n"]) == (sizes["base"], sizes[r["arm"]])


def test_it_holm_corrects_across_arms_and_primary_metrics(k_report):
    family = [r for r in k_report["rows"] if r["population"] == "itt"
              and r["adjustment"] == "cuped" and not r["capped"] and r["primary"]]  # fmt: skip
    assert len(family) == 3 * 2 and {r["holm_family_size"] for r in family} == {6}
    adjusted = stats.holm([r["p_value"] for r in family])
    assert [r["p_value_holm"] for r in family] == pytest.approx(adjusted.tolist())
    assert all(r["significant"] == (r["p_value_holm"] < 0.05) for r in family)


def test_it_lists_the_arms_with_size_targets_and_spend(k_report):
    arms = {arm["name"]: arm for arm in k_report["arms"]}
    assert list(arms) == ["base", "none", "m2m", "m2m-uplift"]
    assert sum(arm["n"] for arm in arms.values()) == 400
    assert arms["none"]["targeting"] == "none" and arms["none"]["reward_spent"] == "0.00"
    assert arms["m2m"]["active_rate"] == k_report["groups"]["m2m"]["active"] / arms["m2m"]["n"]


def test_it_gives_a_verdict_per_treatment_and_primary_metric(k_report):
    verdicts = k_report["verdicts"]
    assert [(v["arm"], v["metric"]) for v in verdicts] == [
        (arm, metric) for arm in ("none", "m2m", "m2m-uplift") for metric in ("active_rate", "arpu")
    ]
    rows = {analysis.row_id(r): r for r in k_report["rows"]}
    for verdict in verdicts:
        row = rows[verdict["row"]]
        assert (row["population"], row["adjustment"]) == ("itt", "cuped")
        assert verdict["text"].startswith(f"{row['label']}, {row['arm']} vs base: ")
        if row["significant"]:
            assert verdict["text"].endswith("significant after Holm")
        else:
            assert verdict["text"].endswith(
                f"not significant; the minimum detectable effect at this size was "
                f"{row['mde_relative']:.2%}"
            )
    # the rising boost makes the last arm's active-rate gain unmistakable
    assert verdicts[4]["status"] == "significant"


def test_it_measures_increments_against_the_no_task_arm(k_report):
    section = k_report["incremental_vs_no_task_arm"]
    assert (section["reference"], section["reference_kind"]) == ("none", "no-task arm")
    assert [a["arm"] for a in section["arms"]] == ["base", "m2m", "m2m-uplift"]
    groups = k_report["groups"]
    for arm in section["arms"]:
        n, ref = groups[arm["arm"]]["assigned"], groups["none"]["assigned"]
        diff = groups[arm["arm"]]["active"] / n - groups["none"]["active"] / ref
        assert arm["incremental_active"]["value"] == pytest.approx(n * diff)
        assert arm["incremental_active_per_1000"] is None  # no rewards were spent
        assert arm["not_estimable"].startswith("no reward spent")


def _metrics(group, active, spend, reward, names=("control", "none", "treated")):
    n = len(group)
    zeros = np.zeros(n)
    return analysis.AdvertiserMetrics(
        group=np.asarray(group), targeted=np.zeros(n, dtype=bool), spend=np.asarray(spend, float),
        clicks=zeros, active_days=np.asarray(active, float), pre_spend=zeros, pre_clicks=zeros,
        pre_active_days=zeros, reward=np.asarray(reward, float),
        first_active_day=np.full(n, -1), arm_names=names,
    )  # fmt: skip


def test_it_scales_increments_to_the_arm_and_its_spend():
    # reference (group 2): 1 of 4 active; treated (group 3): 3 of 4, every one paid 5.00
    group = [2, 2, 2, 2, 3, 3, 3, 3, 1, 1]
    active = [1, 0, 0, 0, 1, 1, 1, 0, 0, 1]
    spend = [10, 0, 0, 0, 20, 10, 30, 0, 0, 4]
    reward = [0, 0, 0, 0, 5, 5, 5, 5, 0, 0]
    m = _metrics(group, active, spend, reward)
    section = multiarm.incremental_vs_no_task(m, reference=2)
    treated = next(a for a in section["arms"] if a["arm"] == "treated")
    diff, var = 0.75 - 0.25, 0.75 * 0.25 / 4 + 0.25 * 0.75 / 4
    assert treated["incremental_active"]["value"] == pytest.approx(4 * diff)
    assert treated["incremental_active"]["se"] == pytest.approx(4 * np.sqrt(var))
    # constant rewards: the spend is known exactly, so the ratio's se is the difference's
    per = treated["incremental_active_per_1000"]
    assert per["value"] == pytest.approx(1000 * diff / 5)
    assert per["se"] == pytest.approx(1000 * np.sqrt(var) / 5)
    assert per["ci_high"] - per["value"] == pytest.approx(1.959963985 * per["se"])
    net_t, net_r = np.array([15, 5, 25, -5.0]), np.array([10, 0, 0, 0.0])
    net_var = net_t.var(ddof=1) / 4 + net_r.var(ddof=1) / 4
    net = treated["incremental_net_revenue"]
    assert net["value"] == pytest.approx(4 * (net_t.mean() - net_r.mean()))
    assert net["se"] == pytest.approx(4 * np.sqrt(net_var))
    assert treated["reward_spent"] == "20.00"
    assert "incremental_active_per_1000_budget" not in treated  # no budget given


def test_it_scales_incremental_actives_to_the_fixed_budget():
    group = [2, 2, 2, 2, 3, 3, 3, 3]
    active = [1, 0, 0, 0, 1, 1, 1, 0]
    m = _metrics(group, active, np.zeros(8), [0, 0, 0, 0, 5, 5, 0, 0])
    treated = multiarm.incremental_vs_no_task(m, reference=2, budget=40.0)["arms"][-1]
    per_budget, total = treated["incremental_active_per_1000_budget"], treated["incremental_active"]
    # the budget is fixed: the figure and its se are the count's, scaled by 1000 / budget
    assert per_budget["value"] == pytest.approx(total["value"] * 1000 / 40)
    assert per_budget["se"] == pytest.approx(total["se"] * 1000 / 40)
    # 10.00 of the 40 paid: per 1,000 paid is four times per 1,000 of budget
    assert treated["incremental_active_per_1000"]["value"] == pytest.approx(4 * per_budget["value"])


def test_it_counts_the_spread_of_rewards_in_the_per_budget_interval():
    group = [2] * 4 + [3] * 4
    active = [1, 0, 0, 0, 1, 1, 1, 0]
    reward = [0, 0, 0, 0, 8, 2, 9, 1]
    m = _metrics(group, active, np.zeros(8), reward)
    per = multiarm.incremental_vs_no_task(m, reference=2)["arms"][-1]["incremental_active_per_1000"]
    a_t, c_t = np.array(active[4:], float), np.array(reward[4:], float)
    d, c = a_t.mean() - 0.25, c_t.mean()
    var_d = 0.75 * 0.25 / 4 + 0.25 * 0.75 / 4
    cov = np.cov(a_t, c_t, ddof=1)[0, 1] / 4
    var = 1e6 * (var_d / c**2 + d**2 * c_t.var(ddof=1) / 4 / c**4 - 2 * d * cov / c**3)
    assert per["value"] == pytest.approx(1000 * d / c)
    assert per["se"] == pytest.approx(np.sqrt(var))
    assert per["se"] != pytest.approx(1000 * np.sqrt(var_d) / c)


def test_it_falls_back_to_the_holdout_and_skips_the_section_without_either():
    m = _metrics([0, 0, 1, 1, 2, 2], [1, 0, 1, 0, 1, 1], np.zeros(6), np.zeros(6),
                 names=("control", "treated"))  # fmt: skip
    assert multiarm.no_task_reference(m, []) == 0
    m = _metrics([1, 1, 2, 2], [1, 0, 1, 1], np.zeros(4), np.zeros(4), names=("control", "t"))
    assert multiarm.no_task_reference(m, []) is None


@pytest.fixture
def world(advertisers_factory, stat_factory, scenario):
    advertisers = advertisers_factory(60)
    DailyStat.objects.bulk_create(
        [stat_factory(a, scenario, AS_OF - dt.timedelta(days=1), "20.00", 3) for a in advertisers]
    )
    versions = {
        kind: ModelVersion.objects.create(kind=kind, status=ModelVersion.Status.ACTIVE)
        for kind in (ModelKind.SINGLE_TASK, ModelKind.M2M)
    }
    Prediction.objects.bulk_create(
        [Prediction(model_version=v, advertiser=a, scenario=scenario, as_of=AS_OF, clicks=5,
                    expenditure=100.0, active_days=(i % 7) / 10, impressions=50, gmv=300)
         for v in versions.values() for i, a in enumerate(advertisers)]
    )  # fmt: skip
    template = template_create(
        name="Spend", kind=TaskKind.SPEND, reward_value=Decimal("10"),
        minimum_target=Decimal("50"), message_text="Spend {target}, earn {reward}.",
    )  # fmt: skip
    return {"template": template, "versions": versions}


@pytest.fixture
def produced(world, scenario) -> Experiment:
    experiment = services.experiment_create(
        key="k-produce", scenarios=[scenario], template_ids=[world["template"].pk],
        targets_per_arm=3, budget_per_arm=Decimal("1000"), seed="k-produce",
        arms=[ArmSpec("base", role="control", model_kind="single_task"),
              ArmSpec("none", targeting="none"),
              ArmSpec("random", model_kind="m2m", targeting="random"),
              ArmSpec("outside", targeting="external")],
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    return experiment


def test_it_produces_tasks_only_for_producing_arms_with_their_targeting(produced):
    arms = {arm.name: arm for arm in produced.arms.all()}
    assert arms["none"].campaign_id is None and arms["outside"].campaign_id is None
    assert Campaign.objects.get(pk=arms["random"].campaign_id).targeting == "random"
    assert Campaign.objects.get(pk=arms["base"].campaign_id).targeting == "least_activity"
    for name in ("none", "outside"):
        assert not Assignment.objects.filter(arm=arms[name], targeted=True).exists()
    for name in ("base", "random"):
        tasked = set(IncentiveTask.objects.filter(campaign_id=arms[name].campaign_id)
                     .values_list("advertiser_id", flat=True))  # fmt: skip
        targeted = set(Assignment.objects.filter(arm=arms[name], targeted=True)
                       .values_list("advertiser_id", flat=True))  # fmt: skip
        assert tasked == targeted and tasked
    assert produced.start_date == AS_OF + dt.timedelta(days=1)


def test_it_refuses_targets_on_a_no_task_arm(produced):
    arm = produced.arms.get(name="none")
    member = Assignment.objects.filter(arm=arm).first()
    with pytest.raises(ValidationError, match="no-task arm"):
        services.experiment_targets_record(arm=arm, advertiser_ids=[member.advertiser_id])


def test_it_counts_an_external_arms_rewards_once_its_campaign_is_attached(produced, world):
    from campaigns.services import campaign_create, campaign_produce

    arm = produced.arms.get(name="outside")
    members = Assignment.objects.filter(arm=arm).values("advertiser_id")
    campaign = campaign_create(
        name="outside", budget=Decimal("100"), reward_cap=Decimal("100"),
        templates=[world["template"]], model_version=world["versions"][ModelKind.M2M], top_n=2,
    )  # fmt: skip
    campaign_produce(campaign=campaign, candidate_advertiser_ids=members)
    tasks = IncentiveTask.objects.filter(campaign=campaign)
    services.experiment_targets_record(
        arm=arm, advertiser_ids=tasks.values_list("advertiser_id", flat=True)
    )
    services.experiment_arm_campaign_attach(arm=arm, campaign_id=campaign.pk)
    tasks.update(state=TaskState.COMPLETED, completed_at=timezone.now())
    total = sum(t.reward for t in tasks)
    report = experiment_report(experiment=produced)
    outside = next(a for a in report["arms"] if a["name"] == "outside")
    assert (outside["targets"], outside["reward_spent"]) == (2, f"{total:.2f}")
    section = report["incremental_vs_no_task_arm"]
    entry = next(a for a in section["arms"] if a["arm"] == "outside")
    assert entry["incremental_active_per_1000"] is not None
    with pytest.raises(ValidationError, match="only an 'external' arm"):
        services.experiment_arm_campaign_attach(arm=produced.arms.get(name="none"),
                                                campaign_id=campaign.pk)  # fmt: skip


def test_it_replaces_a_drafts_arms_and_not_a_running_ones(produced):
    draft = services.experiment_create(key="k-draft")
    arms = services.experiment_arms_set(experiment=draft, arms=lab_arms()[:3])
    assert [a.name for a in arms] == ["single-task", "no-tasks", "random"]
    with pytest.raises(ValidationError, match="fixed once it starts"):
        services.experiment_arms_set(experiment=produced, arms=lab_arms())


# --- admin --------------------------------------------------------------------------------


def _change_form(experiment: Experiment, arms: list[dict]) -> dict:
    from django.urls import reverse  # noqa: F401  (kept next to its use below)

    data = {
        "key": experiment.key, "hypothesis": "", "population_filter": "{}", "holdout_share": "0",
        "template_ids": "[]", "budget_per_arm": "0", "pre_period_days": "28",
        "evaluation_days": "7", "alpha": "0.05", "expected_relative_lift": "0.05",
        "arms-TOTAL_FORMS": str(len(arms)), "arms-INITIAL_FORMS": str(experiment.arms.count()),
        "arms-MIN_NUM_FORMS": "0", "arms-MAX_NUM_FORMS": "6",
    }  # fmt: skip
    for i, arm in enumerate(arms):
        for field, value in arm.items():
            data[f"arms-{i}-{field}"] = value
        data[f"arms-{i}-experiment"] = str(experiment.pk)
    return data


def _existing(experiment: Experiment) -> list[dict]:
    return [
        {"id": str(a.pk), "name": a.name, "role": a.role, "targeting": a.targeting,
         "model_kind": a.model_kind, "model_version": "", "weight": str(a.weight)}
        for a in experiment.arms.order_by("position")
    ]  # fmt: skip


def test_it_adds_arms_to_a_draft_through_the_admin_inline(admin_client):
    from django.urls import reverse

    experiment = services.experiment_create(key="admin-k")
    arms = [*_existing(experiment),
            {"id": "", "name": "holdout-arm", "role": "treatment", "targeting": "none",
             "model_kind": "", "model_version": "", "weight": "0.5"}]  # fmt: skip
    response = admin_client.post(
        reverse("admin:abtest_experiment_change", args=[experiment.pk]),
        _change_form(experiment, arms),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(experiment.arms.order_by("position").values_list("name", "targeting")) == [
        ("single-task", "least_activity"), ("m2m", "least_activity"), ("holdout-arm", "none"),
    ]  # fmt: skip
    experiment.refresh_from_db()
    assert set(experiment.plan["arm_sizes"]) == {"single-task", "m2m", "holdout-arm"}


def test_it_shows_a_second_control_as_an_inline_error(admin_client):
    from django.urls import reverse

    experiment = services.experiment_create(key="admin-two-controls")
    arms = [*_existing(experiment),
            {"id": "", "name": "another", "role": "control", "targeting": "least_activity",
             "model_kind": "m2m", "model_version": "", "weight": "0.5"}]  # fmt: skip
    response = admin_client.post(
        reverse("admin:abtest_experiment_change", args=[experiment.pk]),
        _change_form(experiment, arms),
    )
    assert response.status_code == 200
    assert "exactly one arm must have role" in response.content.decode()
    assert experiment.arms.count() == 2


def test_it_renders_the_arm_by_arm_report(admin_client, k_report):
    from django.urls import reverse

    experiment = Experiment.objects.get(key="k-report")
    body = admin_client.get(reverse("admin:abtest_experiment_report", args=[experiment.pk]))
    body = body.content.decode()
    for name in ("base", "none", "m2m", "m2m-uplift"):
        assert f'<tr data-arm="{name}">' in body
    assert 'data-row="m2m-uplift-itt-arpu-cuped"' in body
    assert 'id="verdicts"' in body and k_report["verdicts"][0]["text"] in body
    assert 'id="metric-legend"' in body and "numerator" in body
    assert 'id="incremental"' in body
    # the no-task arm has no targets: its targeted comparison is not estimable, with the reason
    assert 'data-field="not_estimable">not estimable: too few advertisers' in body


def test_it_exports_standard_errors_alpha_srm_and_the_daily_series(admin_client, k_report):
    import csv
    import io

    from django.urls import reverse

    experiment = Experiment.objects.get(key="k-report")
    response = admin_client.get(reverse("admin:abtest_experiment_report_csv",
                                        args=[experiment.pk]))  # fmt: skip
    summary, daily = response.content.decode().split("\r\n\r\n")
    rows = list(csv.DictReader(io.StringIO(summary)))
    assert len(rows) == len(k_report["rows"])
    row = next(r for r in rows if (r["arm"], r["metric"], r["population"], r["adjustment"])
               == ("m2m", "arpu", "itt", "none"))  # fmt: skip
    json_row = next(r for r in k_report["rows"] if analysis.row_id(r) == "m2m-itt-arpu-none")
    assert float(row["relative_se"]) == pytest.approx(json_row["relative"]["se"])
    assert float(row["absolute_se"]) == pytest.approx(json_row["absolute"]["se"])
    assert (row["alpha"], row["p_value_of"]) == ("0.05", "relative")
    assert float(row["srm_p_value"]) == pytest.approx(k_report["srm"]["p_value"])
    series = list(csv.DictReader(io.StringIO(daily)))
    assert len(series) == 7 * len(k_report["daily"]["series"])
    last = next(s for s in k_report["daily"]["series"] if s["group"] == "m2m"
                and s["population"] == "itt")  # fmt: skip
    shown = [r for r in series if (r["group"], r["population"]) == ("m2m", "itt")]
    assert float(shown[-1]["cumulative_arpu"]) == pytest.approx(last["arpu"][-1])


def test_it_prints_the_k_arm_table_with_the_holm_column(k_report):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("experiment_report", "k-report", stdout=out)
    text = out.getvalue()
    assert "Holm p" in text
    for name in ("base", "none", "m2m", "m2m-uplift"):
        assert any(line.startswith(f"{name} ") for line in text.splitlines())
    row = next(r for r in k_report["rows"] if analysis.row_id(r) == "m2m-itt-arpu-none")
    line = next(ln for ln in text.splitlines() if ln.startswith("m2m ") and " itt " in ln
                and "ARPU" in ln and "Net" not in ln)  # fmt: skip
    assert line.split()[-2] == f"{row['p_value_holm']:.4f}"
    assert k_report["verdicts"][0]["text"] in text
    assert "Incremental against the no-task arm 'none'" in text
