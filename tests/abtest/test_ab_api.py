"""GET /api/v1/experiments/<key>/report: API key auth, ops scope, and the report's shape."""

from __future__ import annotations

import datetime as dt

import pytest
from rest_framework.test import APIClient

from abtest import services
from campaigns.services import api_key_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/experiments/{key}/report"


@pytest.fixture
def experiment(advertisers_factory):
    advertisers_factory(40)
    experiment = services.experiment_create(key="api-report")
    services.experiment_start(
        experiment=experiment, start_date=dt.date(2024, 3, 1), produce_tasks=False
    )
    return experiment


def client_with(scopes: list[str] | None) -> APIClient:
    client = APIClient()
    if scopes is not None:
        _, secret = api_key_create(name=f"key {scopes}", scopes=scopes)
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def test_it_rejects_a_request_without_a_key(experiment):
    assert client_with(None).get(URL.format(key=experiment.key)).status_code == 401


def test_it_rejects_an_unknown_key(experiment):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key ipk_nope_nope")
    assert client.get(URL.format(key=experiment.key)).status_code == 401


def test_it_rejects_a_key_without_the_ops_scope(experiment):
    assert client_with(["push"]).get(URL.format(key=experiment.key)).status_code == 403


def test_it_does_not_let_a_staff_session_in_without_a_key(experiment, admin_client):
    assert admin_client.get(URL.format(key=experiment.key)).status_code == 401


def test_it_returns_the_report_to_the_ops_scope(experiment):
    response = client_with(["ops"]).get(URL.format(key=experiment.key))
    assert response.status_code == 200
    body = response.json()
    assert body["experiment"]["key"] == "api-report"
    assert body["groups"]["single-task"]["assigned"] + body["groups"]["m2m"]["assigned"] == 40
    assert [arm["name"] for arm in body["arms"]] == ["single-task", "m2m"]
    assert {r["arm"] for r in body["rows"]} == {"m2m"}
    assert {r["metric"] for r in body["rows"]} >= {"active_rate", "arpu"}
    assert body["srm"]["flagged"] in (True, False)
    assert len(body["daily"]["dates"]) == 7


def test_it_answers_404_for_an_unknown_experiment(experiment):
    assert client_with(["ops"]).get(URL.format(key="nope")).status_code == 404


def test_it_returns_the_three_analyses_and_the_mode(experiment):
    body = client_with(["ops"]).get(URL.format(key=experiment.key)).json()
    assert body["experiment"]["analysis_mode"] == "frequentist"
    assert body["experiment"]["prior"] == {"proper": False, "mean": 0.0, "stddev": 1.0}
    arpu = next(r for r in body["rows"] if (r["metric"], r["population"], r["adjustment"])
                == ("arpu", "itt", "none"))  # fmt: skip
    assert set(arpu["sequential"]) >= {"absolute", "relative", "p_value", "p_value_holm",
                                       "significant", "tuning"}  # fmt: skip
    assert set(arpu["bayesian"]) >= {"absolute", "relative", "chance_to_win", "significant",
                                     "prior"}  # fmt: skip
    assert arpu["significant"] == arpu["significant_frequentist"]
    assert "p_value_bh" in arpu and arpu["analysis_mode"] == "frequentist"
    assert {v["analysis_mode"] for v in body["verdicts"]} == {"frequentist"}
    assert "winner" in body["verdicts"][0]


def test_it_returns_the_ratio_metric_and_the_cost_with_its_reason(experiment):
    body = client_with(["ops"]).get(URL.format(key=experiment.key)).json()
    ratio = [r for r in body["rows"] if r["metric"] == "revenue_per_active"]
    assert ratio and {r["type"] for r in ratio} == {"ratio"}
    cost = body["cost_per_incremental_active"]["m2m_vs_control_itt"]
    assert set(cost) == {"arm", "reference", "population", "value", "se", "ci_low", "ci_high",
                         "p_value", "not_estimable"}  # fmt: skip
    assert cost["not_estimable"]  # nobody was active: no rise, no interval


def test_it_serves_a_report_frozen_before_the_cost_had_an_interval(experiment):
    from abtest.models import Experiment

    frozen = client_with(["ops"]).get(URL.format(key=experiment.key)).json()
    frozen["cost_per_incremental_active"] = {"m2m_vs_control_itt": 12.5,
                                             "m2m_vs_control_targeted": None}  # fmt: skip
    Experiment.objects.filter(pk=experiment.pk).update(status="completed", report=frozen)
    body = client_with(["ops"]).get(URL.format(key=experiment.key)).json()
    cost = body["cost_per_incremental_active"]
    assert cost["m2m_vs_control_itt"]["value"] == 12.5
    assert cost["m2m_vs_control_itt"]["ci_low"] is None
    assert cost["m2m_vs_control_targeted"]["not_estimable"] == "the active rate did not increase"
