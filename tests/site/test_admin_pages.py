"""Every admin page opens: the list, add and change page of every registered model, on a small
world built the way the demo builds it (simulate, ingest, train, predict, campaign, experiment,
push feed), so that no admin page can answer 500 again."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.urls import reverse

from abtest.services import experiment_create, experiment_start
from advertisers.ingestion import ingest_files
from advertisers.simulator import simulate
from campaigns.models import ApiConsumer, ApiScope, UpliftModel
from campaigns.services import (
    api_key_create,
    campaign_create,
    campaign_produce,
    messages_lease,
    templates_default_ensure,
)
from predictor import services
from predictor.models import ModelVersion
from predictor.services import TrainOptions

HPARAMS = {
    "m2m": {"d_input": 4, "n_experts": 2, "d_view": 16, "d_meta": 8, "meta_layers": 2},
    "single_task": {"d_input": 4, "d_day": 8, "hidden": (16,)},
}


def _consumer(name: str) -> int:
    """A push consumer by name (events and leases belong to one)."""
    return ApiConsumer.objects.get_or_create(name=name)[0].pk


def _trained(kind: str) -> ModelVersion:
    options = TrainOptions(
        epochs=1,
        batch_size=64,
        window_days=14,
        stride=7,
        n_bins=8,
        device="cpu",
        hparams=HPARAMS[kind],
    )
    trained = services.training_run_execute(
        run=services.training_run_create(kind=kind, options=options)
    )
    version = services.model_version_activate(version=trained)
    run = services.prediction_run_create(model_version=version, as_of=services.latest_data_date())
    services.prediction_run_execute(run=run)
    return version


@pytest.fixture
def demo_world(db: None, tmp_path: Path, settings) -> None:
    """40 simulated advertisers over 100 days, two tiny trained models with their predictions, a
    produced campaign, a started experiment with its arm campaigns, and leased push messages."""
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    world = simulate(advertisers=40, days=100, seed=11)
    files = world.write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"],
        advertisers=files["advertisers"],
        stats=files["daily_stats"],
        load_date=world.end_date,
    )
    _trained("m2m")
    _trained("single_task")
    templates = templates_default_ensure()
    experiment = experiment_create(
        key="pages",
        template_ids=[t.pk for t in templates],
        targets_per_arm=5,
        budget_per_arm=Decimal("500"),
        reward_cap=Decimal("100"),
    )
    experiment_start(experiment=experiment)
    campaign = campaign_create(
        name="Win back",
        budget=Decimal("1000"),
        reward_cap=Decimal("100"),
        templates=templates,
        model_kind="m2m",
        top_n=5,
    )
    campaign_produce(campaign=campaign)
    api_key_create(name="push", scopes=[ApiScope.PUSH])
    messages_lease(consumer_id=_consumer("pusher"), owner="pusher", limit=3, lease_seconds=60)
    Group.objects.create(name="ops staff")
    UpliftModel.objects.create(  # a registered uplift model (the lab's tests train real ones)
        artifact="uplift/pages.json",
        trained_on=[campaign.pk],
        rows=10,
        quality={"qini_coefficient": 0.12},
    )


def _pages(model_admin: admin.ModelAdmin, request: HttpRequest) -> list[tuple[str, str, int]]:
    """(page, url, expected status) for one registered model."""
    opts = model_admin.model._meta
    name = f"admin:{opts.app_label}_{opts.model_name}"
    first = model_admin.model._default_manager.order_by("pk").first()
    assert first is not None, (
        f"the demo world has no {opts.verbose_name}: its change page is untested"
    )
    can_add = model_admin.has_add_permission(request)
    return [
        ("list", reverse(f"{name}_changelist"), 200),
        ("add", reverse(f"{name}_add"), 200 if can_add else 403),
        ("change", reverse(f"{name}_change", args=[first.pk]), 200),
    ]


def test_it_opens_the_list_add_and_change_page_of_every_registered_model(
    demo_world: None, admin_client: Client, admin_user
) -> None:
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    registered = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
    assert len(registered) >= 14
    admin_client.raise_request_exception = False  # collect every failing page, not the first
    failures = []
    for _model, model_admin in registered:
        for page, url, expected in _pages(model_admin, request):
            status = admin_client.get(url).status_code
            if status != expected:
                failures.append(f"{model_admin.model._meta.label} {page} {url}: {status}")
    assert failures == []


def test_it_adds_a_campaign_through_the_form(demo_world: None, admin_client: Client) -> None:
    from campaigns.models import Campaign, TaskTemplate

    template = TaskTemplate.objects.filter(is_current=True).order_by("pk").first()
    response = admin_client.post(
        reverse("admin:campaigns_campaign_add"),
        {
            "name": "Added by ops",
            "model_kind": "m2m",
            "policy": "bottom_n",
            "top_n": "3",
            "targeting": "least_activity",
            "objective": "actives",
            "holdout_share": "0.05",
            "lookback_days": "28",
            "cooldown_days": "14",
            "templates": [template.pk],
            "budget": "250",
            "reward_cap": "50",
            "starts_at_0": "2024-01-01",
            "starts_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    campaign = Campaign.objects.get(name="Added by ops")
    assert (campaign.status, campaign.budget, campaign.remaining) == (
        Campaign.Status.DRAFT,
        Decimal("250.00"),
        Decimal("250.00"),
    )


def test_it_shows_a_model_versions_metrics_as_a_scenario_by_task_table(
    demo_world: None, admin_client: Client
) -> None:
    from predictor.evaluation import fmt

    version = ModelVersion.objects.get(kind="m2m", status=ModelVersion.Status.ACTIVE)
    test = version.metrics["test"]
    page = admin_client.get(reverse("admin:predictor_modelversion_change", args=[version.pk]))
    text = page.content.decode()
    table = re.search(r'<table class="metrics-table"><caption>test split.*?</table>', text, re.S)
    assert table is not None
    header = re.findall(r"<thead><tr>(.*?)</tr></thead>", table.group(0))[0]
    assert re.findall(r"<th>([^<]*)</th>", header) == ["scenario", *test["by_task"]]
    rows = re.findall(r"<tr><th>([^<]*)</th>((?:<td>[^<]*</td>)+)</tr>", table.group(0))
    assert [code for code, _ in rows] == [*test["by_scenario"], "all scenarios"]
    code, cells = rows[0]
    task = next(iter(test["by_task"]))
    cell = test["by_scenario"][code][task]
    first = re.findall(r"<td>([^<]*)</td>", cells)[0]
    assert first == f"{fmt(cell['nmae'])} / {fmt(cell['smape'])} (n={cell['n']})"
    assert '"by_scenario"' not in text


def test_it_picks_the_experiments_templates_from_a_list(
    demo_world: None, admin_client: Client
) -> None:
    from abtest.models import Experiment
    from campaigns.models import TaskTemplate

    url = reverse("admin:abtest_experiment_add")
    text = admin_client.get(url).content.decode()
    offered = sorted(int(v) for v in re.findall(r'name="template_ids" value="(\d+)"', text))
    current = sorted(TaskTemplate.objects.filter(is_current=True).values_list("pk", flat=True))
    assert offered == current
    picked = current[:2]
    response = admin_client.post(
        url,
        {
            "key": "picked",
            "hypothesis": "",
            "population_filter": "{}",
            "holdout_share": "0",
            "template_ids": [str(pk) for pk in picked],
            "budget_per_arm": "0",
            "pre_period_days": "28",
            "evaluation_days": "7",
            "alpha": "0.05",
            "expected_relative_lift": "0.05",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Experiment.objects.get(key="picked").template_ids == picked
