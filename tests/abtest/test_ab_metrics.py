"""The metric queries against a small case computed by hand.

Scope: scenarios `search` and `feed`; `display` is out of scope. Window 2024-03-01..03-07,
pre-period 2024-02-02..02-29 (28 days). Control c1-c3, treatment t1-t3, holdout h1.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from abtest import services, stats
from abtest.models import Assignment, Experiment
from abtest.selectors import experiment_advertiser_metrics, experiment_daily, experiment_report
from advertisers.models import DailyStat, Scenario

pytestmark = pytest.mark.django_db

START = dt.date(2024, 3, 1)


def day(month: int, d: int) -> dt.date:
    return dt.date(2024, month, d)


@pytest.fixture
def case(advertisers_factory, stat_factory, scenario, other_scenario) -> Experiment:
    feed = Scenario.objects.create(code="feed", name="Feed", kind="feed", launched_on=day(1, 1))
    ads = {a.advertiser_id: a for a in advertisers_factory(7, prefix="x")}
    c1, c2, c3, t1, t2, t3, h1 = (ads[f"x{i:06d}"] for i in range(7))
    search, display = scenario, other_scenario
    DailyStat.objects.bulk_create(
        [
            stat_factory(c1, search, day(3, 1), "10.00", 2),
            stat_factory(c1, search, day(3, 3), "5.00", 1),
            stat_factory(c1, display, day(3, 2), "100.00", 9),  # out of scope
            stat_factory(c1, search, day(2, 10), "8.00", 1),  # pre-period
            stat_factory(c2, search, day(3, 8), "50.00", 5),  # after the window
            stat_factory(c2, search, day(2, 1), "30.00", 5),  # before the pre-period
            stat_factory(c2, search, day(3, 2), "0.00", 3),  # clicks without spend: not active
            stat_factory(t1, search, day(3, 1), "20.00", 4),
            stat_factory(t1, feed, day(3, 1), "5.00", 0),  # same day, second scenario
            stat_factory(t1, feed, day(2, 29), "4.00", 0),  # last pre-period day
            stat_factory(t2, search, day(3, 7), "7.00", 1),  # last window day
            stat_factory(t3, search, day(2, 2), "3.00", 0),  # first pre-period day
            stat_factory(h1, search, day(3, 4), "2.00", 0),
        ]
    )
    experiment = services.experiment_create(key="hand", scenarios=[search, feed], holdout_share=0.1)
    arms = {arm.role: arm for arm in experiment.arms.all()}
    plan = [(c1, "control", True), (c2, "control", True), (c3, "control", False),
            (t1, "treatment", True), (t2, "treatment", False), (t3, "treatment", True),
            (h1, None, False)]  # fmt: skip
    Assignment.objects.bulk_create(
        [Assignment(experiment=experiment, advertiser=a, arm=arms.get(role), bucket=0,
                    targeted=targeted) for a, role, targeted in plan]
    )  # fmt: skip
    Experiment.objects.filter(pk=experiment.pk).update(
        start_date=START, status=Experiment.Status.RUNNING
    )
    experiment.refresh_from_db()
    services.experiment_covariates_capture(experiment=experiment)
    return experiment


def test_it_sums_the_window_in_scope_per_advertiser(case):
    m = experiment_advertiser_metrics(experiment=case)
    assert m.group.tolist() == [1, 1, 1, 2, 2, 2, 0]
    assert m.spend.tolist() == [15.0, 0.0, 0.0, 25.0, 7.0, 0.0, 2.0]
    assert m.clicks.tolist() == [3, 3, 0, 4, 1, 0, 0]
    assert m.active_days.tolist() == [2, 0, 0, 1, 1, 0, 1]


def test_it_sums_the_pre_period_per_advertiser(case):
    m = experiment_advertiser_metrics(experiment=case)
    assert m.pre_spend.tolist() == [8.0, 0.0, 0.0, 4.0, 0.0, 3.0, 0.0]
    assert m.pre_clicks.tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert m.pre_active_days.tolist() == [1, 0, 0, 1, 0, 1, 0]


def test_it_finds_the_first_active_window_day(case):
    m = experiment_advertiser_metrics(experiment=case)
    assert m.first_active_day.tolist() == [0, -1, -1, 0, 6, -1, 3]


def test_it_counts_a_pre_period_day_active_in_two_scenarios_once(case, stat_factory):
    t3 = Assignment.objects.get(experiment=case, advertiser__advertiser_id="x000005").advertiser
    feed = Scenario.objects.get(code="feed")
    DailyStat.objects.create(**_fields(stat_factory(t3, feed, day(2, 2), "1.50", 2)))
    services.experiment_covariates_capture(experiment=case)
    m = experiment_advertiser_metrics(experiment=case)
    assert (m.pre_spend[5], m.pre_clicks[5], m.pre_active_days[5]) == (4.5, 2, 1)


def test_it_recaptures_late_pre_period_data_when_analysis_starts(case, stat_factory):
    c3 = Assignment.objects.get(experiment=case, advertiser__advertiser_id="x000002").advertiser
    DailyStat.objects.create(**_fields(stat_factory(c3, Scenario.objects.get(code="search"),
                                                    day(2, 28), "6.00", 1)))  # fmt: skip
    services.experiment_analyse(experiment=case, force=True)
    m = experiment_advertiser_metrics(experiment=case)
    assert (m.pre_spend[2], m.pre_active_days[2]) == (6.0, 1)


def _fields(stat: DailyStat) -> dict:
    return {
        f.name: getattr(stat, f.name) for f in DailyStat._meta.concrete_fields if f.name != "id"
    }


def test_it_reads_the_targeted_flags(case):
    m = experiment_advertiser_metrics(experiment=case)
    assert m.targeted.tolist() == [True, True, False, True, False, True, False]


def _row(report: dict, metric: str, population: str, adjustment: str = "none") -> dict:
    return next(
        r for r in report["rows"]
        if (r["metric"], r["population"], r["adjustment"], r["capped"])
        == (metric, population, adjustment, False)
    )  # fmt: skip


def test_it_reports_active_rate_and_arpu_for_the_whole_arms(case):
    report = experiment_report(experiment=case)
    active = _row(report, "active_rate", "itt")
    arpu = _row(report, "arpu", "itt")
    assert active["control"] == {"n": 3, "mean": pytest.approx(1 / 3)}
    assert active["treatment"]["mean"] == pytest.approx(2 / 3)
    assert arpu["control"]["mean"] == pytest.approx(5.0)
    assert arpu["treatment"]["mean"] == pytest.approx(32 / 3)
    assert arpu["absolute"]["value"] == pytest.approx(17 / 3)


def test_it_reports_the_targeted_groups(case):
    report = experiment_report(experiment=case)
    arpu = _row(report, "arpu", "targeted")
    assert (arpu["control"]["n"], arpu["treatment"]["n"]) == (2, 2)
    assert arpu["control"]["mean"] == pytest.approx(7.5)
    assert arpu["treatment"]["mean"] == pytest.approx(12.5)


def test_it_matches_the_statistics_engine_on_the_same_values(case):
    report = experiment_report(experiment=case)
    expected = stats.compare(
        stats.mean_summary(n=3, total=15.0, total_sq=225.0),
        stats.mean_summary(n=3, total=32.0, total_sq=25.0**2 + 7.0**2),
    )
    row = _row(report, "arpu", "itt")
    assert row["relative"]["value"] == pytest.approx(expected.relative.value)
    assert row["relative"]["p_value"] == pytest.approx(expected.relative.p_value)
    assert row["p_value"] == pytest.approx(expected.relative.p_value)


def test_it_computes_cuped_theta_from_the_pre_period(case):
    report = experiment_report(experiment=case)
    y = np.array([15.0, 0, 0, 25, 7, 0])
    x = np.array([8.0, 0, 0, 4, 0, 3])
    assert _row(report, "arpu", "itt", "cuped")["theta"] == pytest.approx(
        np.cov(y, x)[0, 1] / np.var(x, ddof=1)
    )


@pytest.mark.parametrize("primary", [True, False])
def test_it_holm_corrects_within_each_family(case, primary):
    report = experiment_report(experiment=case)
    family = [r for r in report["rows"] if r["population"] == "itt" and r["adjustment"] == "none"
              and r["primary"] is primary]  # fmt: skip
    assert {r["holm_family"] for r in family} == {"primary" if primary else "secondary"}
    p = [np.nan if r["p_value"] is None else r["p_value"] for r in family]
    adjusted = stats.holm(p)
    for row, expected in zip(family, adjusted, strict=True):
        assert row["p_value_holm"] == (None if np.isnan(expected) else pytest.approx(expected))


def test_it_totals_money_per_group_as_decimal_strings(case):
    groups = experiment_report(experiment=case)["groups"]
    assert groups["single-task"]["expenditure"] == "15.00"
    assert groups["m2m"]["expenditure"] == "32.00"
    assert groups["holdout"] == {"assigned": 1, "targeted": 0, "active": 1, "expenditure": "2.00",
                                 "reward_cost": "0.00", "net_expenditure": "2.00"}  # fmt: skip


def test_it_builds_cumulative_daily_series(case):
    daily = experiment_daily(experiment=case)
    assert daily["dates"][0] == "2024-03-01" and daily["dates"][-1] == "2024-03-07"
    series = {(s["group"], s["population"]): s for s in daily["series"]}
    control = series[("single-task", "itt")]
    assert control["active_rate"] == pytest.approx([1 / 3] * 7)
    assert control["arpu"] == pytest.approx([10 / 3, 10 / 3, 5, 5, 5, 5, 5])
    treatment = series[("m2m", "itt")]
    assert treatment["active_rate"] == pytest.approx([1 / 3] * 6 + [2 / 3])
    assert treatment["arpu"][-1] == pytest.approx(32 / 3)
    assert series[("m2m", "targeted")]["arpu"][-1] == pytest.approx(12.5)


def test_it_checks_srm_including_the_holdout(case):
    srm = experiment_report(experiment=case)["srm"]
    assert srm["observed"] == {"single-task": 3, "m2m": 3, "holdout": 1}
    assert srm["expected_share"]["holdout"] == pytest.approx(0.1)
    assert not srm["flagged"]


def test_it_shows_capped_rows_when_winsorising(case):
    Experiment.objects.filter(pk=case.pk).update(winsor_quantile=0.9)
    case.refresh_from_db()
    rows = experiment_report(experiment=case)["rows"]
    capped = [r for r in rows if r["capped"]]
    assert {r["metric"] for r in capped} == {"arpu", "clicks", "net_arpu"}
    arpu = next(r for r in capped if r["metric"] == "arpu" and r["population"] == "itt"
                and r["adjustment"] == "none")  # fmt: skip
    limit = np.quantile([15.0, 0, 0, 25, 7, 0], 0.9)
    assert arpu["treatment"]["mean"] == pytest.approx((min(25, limit) + 7) / 3)


def test_it_notes_that_reward_cost_is_zero_without_campaigns(case):
    report = experiment_report(experiment=case)
    assert any("reward cost shown as zero" in note for note in report["notes"])
    assert _row(report, "reward_cost", "itt")["treatment"]["mean"] == 0.0


def test_it_reports_cost_per_incremental_active_as_not_estimable_here(case):
    cost = experiment_report(experiment=case)["cost_per_incremental_active"]
    m2m = cost["m2m_vs_control_itt"]
    assert (m2m["arm"], m2m["reference"], m2m["population"]) == ("m2m", "single-task", "itt")
    # 1/3 more actives out of three advertisers per arm is no significant rise: no interval.
    assert m2m["value"] == 0.0 and m2m["ci_low"] is None
    assert "not significantly above 0" in m2m["not_estimable"]
    # one advertiser in the holdout: no variance to test with
    assert "too few advertisers" in cost["single-task_vs_holdout"]["not_estimable"]


def test_it_counts_active_days_beyond_63_days_of_window(
    advertisers_factory, stat_factory, scenario
):
    (adv,) = advertisers_factory(1, prefix="long")
    DailyStat.objects.bulk_create(
        [stat_factory(adv, scenario, START + dt.timedelta(days=d), "1.00") for d in (5, 62, 63, 70)]
    )
    experiment = services.experiment_create(key="long", evaluation_days=90)
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    m = experiment_advertiser_metrics(experiment=experiment)
    assert (m.active_days[0], m.first_active_day[0], m.spend[0]) == (4, 5, 4.0)


def test_it_reports_nothing_but_the_settings_before_the_start():
    experiment = services.experiment_create(key="not-yet")
    report = experiment_report(experiment=experiment)
    assert report["rows"] == []
    assert report["notes"] == ["not started: no assignments yet"]


def test_it_counts_pre_period_days_beyond_63_days(advertisers_factory, stat_factory, scenario):
    (adv,) = advertisers_factory(1, prefix="early")
    DailyStat.objects.bulk_create(
        [
            stat_factory(adv, scenario, START - dt.timedelta(days=d), "2.00")
            for d in (1, 30, 70, 100)
        ]
    )
    experiment = services.experiment_create(key="long-pre", pre_period_days=100)
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    m = experiment_advertiser_metrics(experiment=experiment)
    assert (m.pre_active_days[0], m.pre_spend[0]) == (4, 8.0)


def test_it_bands_the_cumulative_and_daily_series(case):
    daily = experiment_daily(experiment=case)
    control = next(
        s for s in daily["series"] if (s["group"], s["population"]) == ("single-task", "itt")
    )
    z = 1.959963984540054
    spend = np.array([10.0, 0.0, 0.0])  # day 1 in scope: c1 10, c2 and c3 nothing
    assert control["daily_arpu"][0] == pytest.approx(spend.mean())
    half = z * spend.std(ddof=1) / np.sqrt(3)
    assert control["daily_arpu_low"][0] == pytest.approx(spend.mean() - half)
    assert control["daily_arpu_high"][0] == pytest.approx(spend.mean() + half)
    assert control["daily_active_rate"][:3] == pytest.approx([1 / 3, 0, 1 / 3])
    cumulative = np.array([15.0, 0.0, 0.0])  # c1 by the last day
    assert control["arpu_high"][-1] == pytest.approx(
        cumulative.mean() + z * cumulative.std(ddof=1) / np.sqrt(3)
    )
    p = 1 / 3
    assert control["active_rate_low"][-1] == pytest.approx(p - z * np.sqrt(p * (1 - p) / 3))


def test_it_breaks_lifts_down_by_scenario_and_business_scale(case):
    report = experiment_report(experiment=case)
    cells = {(c["segment"], c["metric"]): c for c in report["breakdowns"]["scenario"]}
    assert set(cells) == {(s, m) for s in ("search", "feed") for m in ("active_rate", "arpu")}
    search = cells[("search", "active_rate")]  # c1 against t1, t2, of three each
    assert search["control"] == {"n": 3, "mean": pytest.approx(1 / 3)}
    assert search["treatment"]["mean"] == pytest.approx(2 / 3)
    assert search["relative"]["value"] == pytest.approx(1.0)
    assert cells[("search", "arpu")]["treatment"]["mean"] == pytest.approx(27 / 3)
    # Nobody in the control was active in feed: no variation, so no certain-looking lift.
    assert "no variation in the control arm" in cells[("feed", "active_rate")]["not_estimable"]
    scale = [c for c in report["breakdowns"]["business_scale"] if c["metric"] == "arpu"]
    assert sum(c["control"]["n"] for c in scale) == 3
    assert sum(c["treatment"]["n"] for c in scale) == 3


def test_it_draws_the_report_charts_in_the_admin(case, admin_client):
    page = admin_client.get(f"/admin/abtest/experiment/{case.pk}/report/").content.decode()
    for key in ("active_rate", "arpu", "daily_active_rate", "daily_arpu"):
        assert f'data-chart="{key}"' in page
    assert 'data-dimension="business_scale"' in page
    assert "<svg" in page and "cdn" not in page.lower()
