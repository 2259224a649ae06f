"""The admin: creating through the service, the report page, its SRM banner and CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io

import numpy as np
import pytest
from django.urls import reverse

from abtest import services
from abtest.models import Assignment, Experiment
from advertisers.models import Advertiser, DailyStat

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(advertisers_factory) -> Experiment:
    advertisers_factory(400)
    # A fixed seed: with a random one, one split in a thousand is flagged by the SRM check.
    experiment = services.experiment_create(
        key="admin-report", hypothesis="M2M targets better", seed="admin-report"
    )
    services.experiment_start(
        experiment=experiment, start_date=dt.date(2024, 3, 1), produce_tasks=False
    )
    return experiment


def report_url(experiment: Experiment) -> str:
    return reverse("admin:abtest_experiment_report", args=[experiment.pk])


def test_it_creates_an_experiment_with_default_arms_from_the_add_form(admin_client):
    response = admin_client.post(
        reverse("admin:abtest_experiment_add"),
        {"key": "from-admin", "hypothesis": "", "population_filter": "{}", "holdout_share": "0",
         "template_ids": "[]", "budget_per_arm": "0", "pre_period_days": "28",
         "evaluation_days": "7", "alpha": "0.05", "expected_relative_lift": "0.05"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="from-admin")
    assert sorted(experiment.arms.values_list("role", "model_kind")) == [
        ("control", "single_task"),
        ("treatment", "m2m"),
    ]
    assert "itt" in experiment.plan


def test_it_shows_the_plan_on_the_change_page(admin_client, started):
    response = admin_client.get(reverse("admin:abtest_experiment_change", args=[started.pk]))
    assert b"MDE active rate" in response.content


def test_it_renders_the_report_for_staff(admin_client, started):
    response = admin_client.get(report_url(started))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-row="m2m-itt-arpu-none"' in body
    assert "<svg" in body and "Cumulative active rate" in body
    assert 'id="srm-banner" class="ab-banner srm-ok"' in body


def test_it_loads_nothing_from_a_cdn(admin_client, started):
    body = admin_client.get(report_url(started)).content.decode()
    assert '<script src="http' not in body and "cdn" not in body.lower()


def test_it_shows_a_red_banner_on_sample_ratio_mismatch(admin_client, started):
    services.experiment_weights_update(experiment=started, control_weight=0.1,
                                       treatment_weight=0.9)  # fmt: skip
    body = admin_client.get(report_url(started)).content.decode()
    assert 'class="ab-banner srm-flagged"' in body
    assert "Sample ratio mismatch" in body


def test_it_sends_anonymous_users_to_the_login_page(client, started):
    response = client.get(report_url(started))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_it_exports_the_summary_as_csv(admin_client, started):
    response = admin_client.get(reverse("admin:abtest_experiment_report_csv", args=[started.pk]))
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    arpu = next(r for r in rows if (r["metric"], r["population"], r["adjustment"])
                == ("arpu", "itt", "none"))  # fmt: skip
    assert int(arpu["control_n"]) + int(arpu["treatment_n"]) == 400


def test_it_starts_an_experiment_from_the_admin_action_with_a_clear_error(admin_client):
    experiment = services.experiment_create(key="no-templates")
    response = admin_client.post(
        reverse("admin:abtest_experiment_changelist"),
        {"action": "start_today", "_selected_action": [experiment.pk]},
        follow=True,
    )
    assert "pick at least one task template" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DRAFT


def test_it_shows_a_bad_population_filter_as_a_form_error(admin_client):
    response = admin_client.post(
        reverse("admin:abtest_experiment_add"),
        {"key": "bad-filter", "population_filter": '{"secret": 1}', "holdout_share": "0",
         "template_ids": "[]", "budget_per_arm": "0", "pre_period_days": "28",
         "evaluation_days": "7", "alpha": "0.05", "expected_relative_lift": "0.05"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "unknown lookup" in response.content.decode()
    assert not Experiment.objects.filter(key="bad-filter").exists()


@pytest.fixture
def spent(started, stat_factory, scenario) -> Experiment:
    """The started experiment with a week of spend by a third of its advertisers."""
    rng = np.random.default_rng(5)
    ids = Assignment.objects.filter(experiment=started).values_list("advertiser", flat=True)
    advertisers = Advertiser.objects.filter(pk__in=list(ids)).order_by("pk")[::3]
    DailyStat.objects.bulk_create(
        [stat_factory(a, scenario, started.start_date + dt.timedelta(days=int(d)),
                      f"{rng.gamma(2.0, 10.0):.2f}")
         for a in advertisers for d in rng.choice(7, size=2, replace=False)]
    )  # fmt: skip
    return started


ADD_FORM = {"hypothesis": "", "population_filter": "{}", "holdout_share": "0",
            "template_ids": "[]", "budget_per_arm": "0", "pre_period_days": "28",
            "evaluation_days": "7", "alpha": "0.05", "expected_relative_lift": "0.05"}  # fmt: skip


def test_it_creates_an_experiment_in_the_chosen_analysis_mode(admin_client):
    response = admin_client.post(
        reverse("admin:abtest_experiment_add"),
        {**ADD_FORM, "key": "sequential-admin", "analysis_mode": "sequential",
         "sequential_tuning_parameter": "2000", "prior_proper": "on", "prior_mean": "0.02",
         "prior_stddev": "0.3"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="sequential-admin")
    assert (experiment.analysis_mode, experiment.sequential_tuning_parameter) == ("sequential",
                                                                                  2000)  # fmt: skip
    assert (experiment.prior_proper, experiment.prior_mean, experiment.prior_stddev) == (
        True, 0.02, 0.3,
    )  # fmt: skip


def test_it_keeps_the_analysis_defaults_when_a_post_leaves_them_out(admin_client):
    response = admin_client.post(reverse("admin:abtest_experiment_add"),
                                 {**ADD_FORM, "key": "defaults-admin"})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="defaults-admin")
    assert (experiment.analysis_mode, experiment.sequential_tuning_parameter) == (
        "frequentist", 5000.0,
    )  # fmt: skip
    assert (experiment.prior_proper, experiment.prior_stddev) == (False, 1.0)


def test_it_shows_a_zero_prior_stddev_as_a_form_error(admin_client):
    response = admin_client.post(reverse("admin:abtest_experiment_add"),
                                 {**ADD_FORM, "key": "bad-prior", "prior_stddev": "0"})  # fmt: skip
    assert response.status_code == 200
    assert "greater than or equal to 1e-06" in response.content.decode()
    assert not Experiment.objects.filter(key="bad-prior").exists()


def test_it_groups_the_analysis_settings_on_the_add_form(admin_client):
    body = admin_client.get(reverse("admin:abtest_experiment_add")).content.decode()
    heading = body.index('class="fieldset-heading">Analysis</h2>')
    assert body.index('name="alpha"') < heading
    for field in ("analysis_mode", "sequential_tuning_parameter", "prior_proper", "prior_mean",
                  "prior_stddev"):  # fmt: skip
        assert body.index(f'name="{field}"') > heading


def test_it_shows_the_mde_with_and_without_cuped_on_the_change_page(admin_client, started):
    body = admin_client.get(reverse("admin:abtest_experiment_change", args=[started.pk])).content
    assert b"MDE ARPU (CUPED)" in body and b"pre-period R^2" in body


def test_it_shows_the_mode_and_the_three_analyses_on_the_report(admin_client, spent):
    Experiment.objects.filter(pk=spent.pk).update(analysis_mode="bayesian")
    body = admin_client.get(report_url(spent)).content.decode()
    assert 'id="analysis-mode" data-mode="bayesian"' in body
    assert 'id="ab-view-bayesian" checked' in body and 'id="ab-view-frequentist">' in body
    for field in ("p_value_bh", "seq_ci", "chance_to_win", "credible", "risk"):
        assert f'data-field="{field}"' in body
    assert 'id="arm-table"' in body and 'id="cost-per-incremental"' in body
    assert "chance to win" in body  # the verdicts are Bayesian


def test_it_exports_the_sequential_and_bayesian_figures_as_csv(admin_client, spent):
    response = admin_client.get(reverse("admin:abtest_experiment_report_csv", args=[spent.pk]))
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    arpu = next(r for r in rows if (r["metric"], r["population"], r["adjustment"])
                == ("arpu", "itt", "none"))  # fmt: skip
    assert arpu["analysis_mode"] == "frequentist"
    low, high = float(arpu["sequential_ci_low"]), float(arpu["sequential_ci_high"])
    assert low < float(arpu["relative_ci_low"]) < float(arpu["relative_ci_high"]) < high
    assert 0.0 <= float(arpu["chance_to_win"]) <= 1.0
