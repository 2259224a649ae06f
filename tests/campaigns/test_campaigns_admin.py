"""The admin: campaign actions, filters, template versions, API keys shown once."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from campaigns.models import ApiKey, Campaign, IncentiveTask, TaskTemplate
from campaigns.selectors import api_key_hash

CHANGELISTS = [
    "campaign",
    "incentivetask",
    "tasktemplate",
    "budgetledgerentry",
    "pushmessage",
    "apikey",
]


def _action(admin_client, campaign: Campaign, action: str, follow: bool = False):
    url = reverse("admin:campaigns_campaign_changelist")
    return admin_client.post(
        url, {"action": action, "_selected_action": [campaign.pk]}, follow=follow
    )


@pytest.mark.parametrize("model", CHANGELISTS)
def test_every_changelist_renders(produced, admin_client, model) -> None:
    assert admin_client.get(reverse(f"admin:campaigns_{model}_changelist")).status_code == 200


def test_the_campaign_page_shows_the_ledger(produced, admin_client) -> None:
    response = admin_client.get(reverse("admin:campaigns_campaign_change", args=[produced.pk]))
    assert b"reserved 195.00, released 0.00, settled 0.00" in response.content


def test_tasks_filter_by_state_scenario_and_campaign(produced, admin_client, world) -> None:
    url = reverse("admin:campaigns_incentivetask_changelist")
    query = {"state__exact": "created", "campaign__id__exact": produced.pk}
    response = admin_client.get(url, query)
    assert response.context["cl"].result_count == 6
    empty = admin_client.get(url, {**query, "scenario__id__exact": world.search.pk})
    assert empty.context["cl"].result_count == 0


def test_preview_shows_counts_and_writes_nothing(make_campaign, admin_client) -> None:
    campaign = make_campaign(budget=Decimal("50"))
    response = _action(admin_client, campaign, "preview_campaigns")
    text = response.content.decode()
    assert "Would produce</th><td>3" in text
    assert "Budget needed</th><td>195.00" in text
    assert "A000" in text
    assert IncentiveTask.objects.count() == 0


def test_launch_produces_tasks(make_campaign, admin_client) -> None:
    campaign = make_campaign()
    response = _action(admin_client, campaign, "launch_campaigns", follow=True)
    assert "produced 6 tasks, reserved 195.00" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING


def test_close_cancels_waiting_tasks(produced, admin_client) -> None:
    _action(admin_client, produced, "close_campaigns")
    produced.refresh_from_db()
    assert (produced.status, produced.reserved) == (Campaign.Status.CLOSED, Decimal("0"))


def test_editing_a_used_template_saves_a_new_version(produced, admin_client, world) -> None:
    spend = world.templates[0]
    url = reverse("admin:campaigns_tasktemplate_change", args=[spend.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    data["reward_value"] = "12"
    admin_client.post(url, data)
    versions = TaskTemplate.objects.filter(family=spend.family).order_by("version")
    assert [(t.version, t.reward_value, t.is_current) for t in versions] == [
        (1, Decimal("10.00"), False),
        (2, Decimal("12.00"), True),
    ]


def test_a_new_api_key_shows_its_secret_once(admin_client) -> None:
    url = reverse("admin:campaigns_apikey_add")
    data = {"name": "push-service", "scopes": ["push"], "is_active": "on"}
    response = admin_client.post(url, data, follow=True)
    secret = re.search(r"<code>(ipk_[^<]+)</code>", response.content.decode()).group(1)
    api_key = ApiKey.objects.get(name="push-service")
    assert (api_key.secret_hash, api_key.scopes) == (api_key_hash(secret), ["push"])
    page = admin_client.get(reverse("admin:campaigns_apikey_change", args=[api_key.pk]))
    assert secret not in page.content.decode()


def test_the_task_list_shows_the_advertiser_id_selection_score_and_model(
    produced, admin_client, world
) -> None:
    response = admin_client.get(reverse("admin:campaigns_incentivetask_changelist"), {"o": "1"})
    rows = response.context["cl"].result_list
    # A002 is predicted 2 active days in search and 0.25 in display: 2.25 in all.
    first = next(t for t in rows if t.advertiser.advertiser_id == "A002")
    model_admin = response.context["cl"].model_admin
    assert model_admin.advertiser_code(first) == "A002"
    assert model_admin.selected_by(first) == "predicted active days 2.25"
    assert model_admin.model_used(first) == f"m2m #{world.version.pk}"
    text = response.content.decode()
    assert "A002" in text and "predicted active days 2.25" in text


def test_the_campaign_list_shows_the_money_columns(produced, admin_client) -> None:
    response = admin_client.get(reverse("admin:campaigns_campaign_changelist"))
    text = response.content.decode()
    cells = re.findall(r'<td class="field-(budget|reserved|settled|remaining)">([^<]*)</td>', text)
    assert cells == [
        ("budget", "1000.00"),
        ("reserved", "195.00"),
        ("settled", "0.00"),
        ("remaining", "805.00"),
    ]
