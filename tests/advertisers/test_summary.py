"""Scenario statistics computed from the data, and the data summary (selector and command)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command

from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.selectors import data_summary
from advertisers.services import scenario_stats_refresh

pytestmark = pytest.mark.django_db

AS_OF = dt.date(2024, 6, 30)


@pytest.fixture
def search() -> Scenario:
    return Scenario.objects.create(
        code="search", name="Search", kind="search", launched_on=dt.date(2024, 1, 1)
    )


@pytest.fixture
def live() -> Scenario:
    return Scenario.objects.create(
        code="live", name="Live", kind="live", launched_on=dt.date(2024, 6, 1)
    )


def advertiser(code: str) -> Advertiser:
    return Advertiser.objects.create(
        advertiser_id=code,
        name=code,
        registered_on=dt.date(2023, 1, 1),
        business_scale=1,
        main_category="food",
        star_level=0,
    )


def spend(who: Advertiser, where: Scenario, day: dt.date, amount: str) -> None:
    DailyStat.objects.create(advertiser=who, scenario=where, date=day, expenditure=Decimal(amount))


def test_it_counts_advertisers_who_spent_in_the_28_days_up_to_the_latest_date(search):
    inside, outside, idle = advertiser("in"), advertiser("out"), advertiser("idle")
    spend(inside, search, AS_OF - dt.timedelta(days=27), "5.00")  # first day of the window
    spend(outside, search, AS_OF - dt.timedelta(days=28), "5.00")  # the day before it
    spend(idle, search, AS_OF, "0")  # a row, but no spend: not active

    scenario_stats_refresh()

    search.refresh_from_db()
    assert search.active_advertisers_28d == 1
    assert search.stats_as_of == AS_OF


def test_it_averages_spend_over_active_advertiser_days(search):
    a, b = advertiser("a"), advertiser("b")
    spend(a, search, AS_OF, "10.00")
    spend(a, search, AS_OF - dt.timedelta(days=1), "20.00")
    spend(b, search, AS_OF, "0.01")
    spend(b, search, AS_OF - dt.timedelta(days=2), "0")  # inactive day: not in the mean

    scenario_stats_refresh()

    search.refresh_from_db()
    assert search.mean_daily_expenditure == Decimal("10.00")  # 30.01 / 3 active days


def test_it_measures_age_from_launch_to_the_statistics_date(search, live):
    spend(advertiser("a"), search, AS_OF, "1.00")

    scenario_stats_refresh()

    live.refresh_from_db()
    assert live.age_days == 29
    assert (live.active_advertisers_28d, live.mean_daily_expenditure) == (0, Decimal("0.00"))


def test_it_clears_statistics_when_there_are_no_daily_stats(search):
    Scenario.objects.filter(pk=search.pk).update(
        active_advertisers_28d=5, stats_as_of=AS_OF, mean_daily_expenditure=Decimal("3")
    )

    scenario_stats_refresh()

    search.refresh_from_db()
    assert (search.active_advertisers_28d, search.stats_as_of, search.age_days) == (0, None, None)


def test_data_summary_counts_rows_dates_and_scenarios(search, live):
    a = advertiser("a")
    advertiser("b")
    spend(a, search, dt.date(2024, 6, 3), "1.00")
    spend(a, live, AS_OF, "2.00")
    scenario_stats_refresh()

    summary = data_summary()

    assert (summary.advertisers, summary.scenarios, summary.daily_stats) == (2, 2, 2)
    assert (summary.first_date, summary.last_date) == (dt.date(2024, 6, 3), AS_OF)
    assert [(s.code, s.active_advertisers_28d) for s in summary.per_scenario] == [
        ("search", 1),
        ("live", 1),
    ]


def test_the_summary_command_prints_a_table(search, capsys):
    spend(advertiser("a"), search, AS_OF, "12.50")
    scenario_stats_refresh()

    call_command("summary")

    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == "Advertisers: 1   Scenarios: 1   Daily stats: 1 rows (2024-06-30 .. 2024-06-30)"
    )
    assert out[-1].split() == ["search", "search", "2024-01-01", "181", "1", "12.50"]
