"""The admin: the data upload page for ops staff, and read-only daily stats."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from advertisers.models import Advertiser, DailyStat, Scenario

pytestmark = pytest.mark.django_db

UPLOAD_URL = "admin:advertisers_dailystat_upload"
SCENARIOS = "code,name,kind,launched_on\nsearch,Sponsored search,search,2020-01-01\n"
ADVERTISERS = (
    "advertiser_id,name,registered_on,business_scale,main_category,star_level\n"
    "a1,Alpha,2021-03-04,3,apparel,2\n"
)
STATS_HEADER = (
    "advertiser_id,scenario,date,impressions,clicks,expenditure,gmv,"
    "logins,campaign_edits,bid_changes,budget_changes\n"
)


def upload(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def good_upload() -> dict[str, SimpleUploadedFile]:
    return {
        "scenarios": upload("scenarios.csv", SCENARIOS),
        "advertisers": upload("advertisers.csv", ADVERTISERS),
        "stats": upload(
            "daily_stats.csv", STATS_HEADER + "a1,search,2024-06-01,9,1,2.50,0,1,0,0,0\n"
        ),
    }


def texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_client(client):
    """A superuser without a password: hashing one costs a second per test."""
    client.force_login(User.objects.create_superuser("admin", password=None))
    return client


def staff(client, *permissions: str):
    user = User.objects.create_user("ops", password=None, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client.force_login(user)
    return client


@pytest.fixture
def stored_day() -> DailyStat:
    scenario = Scenario.objects.create(
        code="search", name="Search", kind="search", launched_on=dt.date(2020, 1, 1)
    )
    advertiser = Advertiser.objects.create(
        advertiser_id="a1",
        name="Alpha",
        registered_on=dt.date(2021, 1, 1),
        business_scale=2,
        main_category="food",
        star_level=1,
    )
    return DailyStat.objects.create(
        advertiser=advertiser, scenario=scenario, date=dt.date(2024, 6, 1), clicks=4
    )


def test_it_loads_uploaded_files_and_shows_the_summary_line(admin_client):
    response = admin_client.post(reverse(UPLOAD_URL), good_upload())

    assert response.status_code == 302
    assert response.url == reverse("admin:advertisers_dailystat_changelist")
    [message] = texts(response)
    assert message.startswith("Loaded in ")  # then the elapsed time
    assert message.endswith(
        "scenarios 1 inserted, 0 updated; advertisers 1 inserted, 0 updated; "
        "daily stats 1 inserted, 0 updated."
    )
    assert DailyStat.objects.get().expenditure == Decimal("2.50")


def test_it_shows_every_problem_and_stores_nothing(admin_client):
    bad = STATS_HEADER + "a1,search,2024-06-31,9,-1,2.50,0,1,0,0,0\n"
    files = {**good_upload(), "stats": upload("daily_stats.csv", bad)}

    response = admin_client.post(reverse(UPLOAD_URL), files)

    assert response.status_code == 200
    assert texts(response) == [
        "Rejected: 2 problems; nothing was stored. Fix the files and upload again.",
        "daily_stats.csv:2: date: '2024-06-31' is not a date; write YYYY-MM-DD",
        "daily_stats.csv:2: clicks: '-1' is negative; counts are never negative",
    ]
    assert (Scenario.objects.count(), Advertiser.objects.count(), DailyStat.objects.count()) == (
        0,
        0,
        0,
    )


def test_it_passes_the_ignore_unknown_columns_choice(admin_client):
    scenarios = upload(
        "scenarios.csv", "code,name,kind,launched_on,note\nsearch,S,search,2020-01-01,hi\n"
    )

    response = admin_client.post(
        reverse(UPLOAD_URL), {"scenarios": scenarios, "ignore_unknown_columns": "on"}
    )

    assert response.status_code == 302
    assert Scenario.objects.filter(code="search").exists()


def implausible_upload() -> dict[str, SimpleUploadedFile]:
    """Ten clicks out of nine impressions."""
    stats = STATS_HEADER + "a1,search,2024-06-01,9,10,2.50,0,1,0,0,0\n"
    return {**good_upload(), "stats": upload("daily_stats.csv", stats)}


def test_it_rejects_implausible_values_and_names_the_checkbox(admin_client):
    response = admin_client.post(reverse(UPLOAD_URL), implausible_upload())

    assert response.status_code == 200
    assert texts(response) == [
        "Rejected: 1 problem; nothing was stored. Fix the files and upload again; 1 is an "
        "implausible value: if it is right, tick 'Allow implausible' to load anyway.",
        "daily_stats.csv:2: clicks: 10 clicks but 9 impressions; clicks cannot exceed impressions",
    ]
    assert DailyStat.objects.count() == 0


def test_it_loads_implausible_values_with_warnings_when_allowed(admin_client):
    response = admin_client.post(
        reverse(UPLOAD_URL), {**implausible_upload(), "allow_implausible": "on"}
    )

    assert response.status_code == 302
    assert texts(response)[1:] == [
        "Loaded anyway: daily_stats.csv:2: clicks: 10 clicks but 9 impressions; "
        "clicks cannot exceed impressions"
    ]
    assert DailyStat.objects.get().clicks == 10


def test_it_asks_for_at_least_one_file(admin_client):
    response = admin_client.post(reverse(UPLOAD_URL), {})

    assert response.status_code == 200
    assert "Choose at least one file to load." in response.content.decode()


def test_it_refuses_files_that_are_not_csv_or_parquet(admin_client):
    response = admin_client.post(reverse(UPLOAD_URL), {"stats": upload("stats.xlsx", "x")})

    assert response.status_code == 200
    assert "File extension “xlsx” is not allowed." in response.content.decode()


def test_it_forbids_staff_without_the_upload_permission(client):
    staff(client, "view_dailystat")

    assert client.get(reverse(UPLOAD_URL)).status_code == 403


def test_it_lets_staff_with_the_upload_permission_in(client):
    staff(client, "add_dailystat")

    assert client.get(reverse(UPLOAD_URL)).status_code == 200


def test_it_hides_the_upload_link_from_staff_who_may_not_upload(client, stored_day):
    staff(client, "view_dailystat")

    response = client.get(reverse("admin:advertisers_dailystat_changelist"))

    assert response.status_code == 200
    assert reverse(UPLOAD_URL) not in response.content.decode()


def test_it_sends_anonymous_visitors_to_the_login_page(client):
    response = client.get(reverse(UPLOAD_URL))

    assert response.status_code == 302
    assert reverse("admin:login") in response.url


@pytest.mark.parametrize("model", ["scenario", "advertiser", "dailystat"])
def test_it_links_the_upload_page_from_each_change_list(admin_client, stored_day, model):
    response = admin_client.get(reverse(f"admin:advertisers_{model}_changelist"))

    assert response.status_code == 200
    assert reverse(UPLOAD_URL) in response.content.decode()


def test_it_filters_daily_stats_by_scenario_and_searches_by_advertiser(admin_client, stored_day):
    url = reverse("admin:advertisers_dailystat_changelist")

    response = admin_client.get(url, {"scenario__id__exact": stored_day.scenario_id, "q": "a1"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [stored_day]


def test_it_keeps_daily_stats_read_only(admin_client, stored_day):
    change_url = reverse("admin:advertisers_dailystat_change", args=[stored_day.pk])

    add = admin_client.get(reverse("admin:advertisers_dailystat_add"))
    edit = admin_client.post(change_url, {"clicks": "99"})
    delete = admin_client.post(
        reverse("admin:advertisers_dailystat_delete", args=[stored_day.pk]), {"post": "yes"}
    )

    assert add.status_code == 403
    assert edit.status_code == 403
    assert delete.status_code == 403
    assert admin_client.get(change_url).status_code == 200  # still viewable
    stored_day.refresh_from_db()
    assert stored_day.clicks == 4
