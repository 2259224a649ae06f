"""The report page in a real browser: headless Chromium, logged in as staff, a four-arm report
in Bayesian mode whose numbers on the page (frequentist, sequential and Bayesian columns, the
arm-by-arm table, the cost per incremental active) equal the JSON API's, its verdict lines,
not-estimable cells with their reasons, and a screenshot saved to test-artifacts/.

The `browser` fixture (tests/conftest.py) needs Debian's chromium and chromium-driver packages
(CI installs them); outside CI the test is skipped with the reason when they are missing.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from abtest import analysis, services
from abtest.models import Assignment, Experiment
from abtest.services import ArmSpec
from advertisers.models import DailyStat
from campaigns.services import api_key_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
START = dt.date(2024, 3, 1)


@pytest.fixture
def experiment(advertisers_factory, stat_factory, scenario) -> Experiment:
    advertisers = advertisers_factory(120)
    arms = [ArmSpec("single-task", role="control", model_kind="single_task"),
            ArmSpec("no-tasks", targeting="none"), ArmSpec("m2m", model_kind="m2m"),
            ArmSpec("m2m-uplift", model_kind="m2m", targeting="uplift")]  # fmt: skip
    experiment = services.experiment_create(
        key="browser-report", scenarios=[scenario], winsor_quantile=0.99, seed="browser",
        arms=arms, analysis_mode="bayesian", prior_proper=True, prior_stddev=0.3,
    )  # fmt: skip
    services.experiment_start(experiment=experiment, start_date=START, produce_tasks=False)
    rng = np.random.default_rng(3)
    rows = []
    for adv in advertisers:
        for offset in range(-10, 7):
            if rng.random() < 0.3:
                spend = Decimal(str(round(float(rng.gamma(2.0, 15.0)), 2)))
                rows.append(stat_factory(adv, scenario, START + dt.timedelta(days=offset),
                                         str(spend), int(rng.integers(0, 9))))  # fmt: skip
    DailyStat.objects.bulk_create(rows)
    services.experiment_covariates_capture(experiment=experiment)  # the pre-period came late
    # Half of every arm that gives tasks is targeted; the no-task arm has no targets, so its
    # targeted comparisons are not estimable.
    half = (Assignment.objects.filter(experiment=experiment).exclude(arm__name="no-tasks")
            .order_by("advertiser_id")[::2])  # fmt: skip
    Assignment.objects.filter(pk__in=[a.pk for a in half]).update(targeted=True)
    return experiment


def _number(text: str) -> float | None:
    text = text.strip()
    if text in ("n/a", "<0.0001"):
        return None if text == "n/a" else 0.0
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


def _close(shown: str, value: float | None, places: float) -> bool:
    if value is None:
        return shown.strip() == "n/a"
    if shown.strip() == "<0.0001":
        return value < 0.0001
    return abs(_number(shown) - value) <= 0.5 * places + 1e-12


def _interval_close(shown: str, estimate: dict | None, places: float) -> bool:
    """ "[+1.23%, +4.56%]" against an estimate's ci_low and ci_high."""
    low, high = shown.strip().strip("[]").split(", ")
    estimate = estimate or {}
    return _close(low, estimate.get("ci_low"), places) and _close(
        high, estimate.get("ci_high"), places
    )


def _check_sequential_and_bayesian(cell: dict, row: dict) -> None:
    p_of = row["p_value_of"]
    places = 1e-4 if p_of == "relative" else 1e-4 / 2
    sequential, bayesian = row["sequential"], row["bayesian"]
    assert _interval_close(cell["seq_ci"], sequential[p_of], places), cell
    assert _close(cell["seq_p_value"], sequential["p_value"], 1e-4), cell
    assert _close(cell["seq_p_value_holm"], sequential["p_value_holm"], 1e-4), cell
    assert cell["seq_significant"] == ("yes" if sequential["significant"] else "no")
    posterior = bayesian[p_of]
    assert _close(cell["posterior"], posterior["value"], places), cell
    assert _interval_close(cell["credible"], posterior, places), cell
    assert _close(cell["chance_to_win"], posterior["chance_to_win"], 1e-3), cell
    assert cell["bayes_significant"] == ("yes" if bayesian["significant"] else "no")
    # the row's decision is the Bayesian one in this mode
    assert row["significant"] == bayesian["significant"]


def _report_json(base_url: str, key: str) -> dict:
    _, secret = api_key_create(name="browser test", scopes=["ops"])
    request = urllib.request.Request(
        f"{base_url}/api/v1/experiments/{key}/report",
        headers={"Authorization": f"Api-Key {secret}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_it_shows_the_same_numbers_as_the_json_api(staff_browser, live_server, experiment):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    browser.get(f"{live_server.url}/admin/abtest/experiment/{experiment.pk}/report/")
    assert "Report: browser-report" in browser.title

    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height + 120)  # the whole page, charts included
    browser.save_screenshot(str(ARTIFACTS / "abtest-report.png"))
    browser.find_element(By.ID, "charts").screenshot(str(ARTIFACTS / "abtest-report-charts.png"))

    report = _report_json(live_server.url, experiment.key)
    json_rows = {analysis.row_id(r): r for r in report["rows"]}
    assert {r["arm"] for r in report["rows"]} == {"no-tasks", "m2m", "m2m-uplift"}
    page_rows = browser.find_elements(By.CSS_SELECTOR, "#summary tbody tr[data-row]")
    assert len(page_rows) == len(json_rows) > 0
    not_estimable = 0
    for tr in page_rows:
        row = json_rows[tr.get_attribute("data-row")]
        # textContent: the switches hide all but one population and adjustment at a time
        cell = {td.get_attribute("data-field"): td.get_attribute("textContent").strip()
                for td in tr.find_elements(By.CSS_SELECTOR, "td[data-field]")}  # fmt: skip
        mean_places = 1e-4  # proportions show 2 decimals of a percent, means 4 decimals
        assert _close(cell["control"], row["control"]["mean"], mean_places), cell
        assert _close(cell["treatment"], row["treatment"]["mean"], mean_places), cell
        if row["not_estimable"]:
            assert cell["not_estimable"] == f"not estimable: {row['not_estimable']}"
            assert "absolute" not in cell and not row["significant"]
            assert cell["seq_not_estimable"] == cell["bayes_not_estimable"] == "not estimable"
            assert "chance_to_win" not in cell and "seq_ci" not in cell
            not_estimable += 1
            continue
        _check_sequential_and_bayesian(cell, row)
        assert cell["p_of"] == row["p_value_of"]
        assert _close(cell["absolute"], row["absolute"]["value"], 1e-4), cell
        if row["relative"] is not None:
            assert _close(cell["relative"], row["relative"]["value"], 1e-4), cell
        assert _close(cell["p_value"], row["p_value"], 1e-4), cell
        assert _close(cell["p_value_holm"], row["p_value_holm"], 1e-4), cell
        assert _close(cell["p_value_bh"], row["p_value_bh"], 1e-4), cell
        assert cell["significant"] == ("yes" if row["significant_frequentist"] else "no")
        assert cell["n"] == f"{row['control']['n']} / {row['treatment']['n']}"

    def shown() -> set[tuple[str, str, bool]]:
        return {(json_rows[tr.get_attribute("data-row")]["population"],
                 json_rows[tr.get_attribute("data-row")]["adjustment"],
                 json_rows[tr.get_attribute("data-row")]["capped"])
                for tr in page_rows if tr.is_displayed()}  # fmt: skip

    # one row per arm and metric: whole arms, CUPED (unadjusted where a metric has no CUPED)
    assert shown() == {("itt", "cuped", False), ("itt", "none", False)}
    visible = [tr for tr in page_rows if tr.is_displayed()]
    assert len(visible) == 3 * len(analysis.METRICS)  # three treatment arms x every metric
    _check_analysis_switch(browser, visible[0])
    browser.find_element(By.CSS_SELECTOR, 'label[for="ab-pop-targeted"]').click()
    browser.find_element(By.CSS_SELECTOR, 'label[for="ab-adj-none"]').click()
    browser.find_element(By.CSS_SELECTOR, 'label[for="ab-capped"]').click()
    assert shown() == {("targeted", "none", True), ("targeted", "none", False)}
    assert sum(tr.is_displayed() for tr in page_rows) == 3 * len(analysis.METRICS)

    # every comparison the engine refuses shows its reason, and only those: at least every
    # targeted comparison of the no-task arm (it has no targets)
    assert not_estimable == sum(1 for r in report["rows"] if r["not_estimable"])
    assert not_estimable >= sum(
        1 for r in report["rows"] if r["arm"] == "no-tasks" and r["population"] == "targeted"
    )
    _check_arm_table(browser, report, json_rows)
    _check_cost_per_incremental(browser, report)
    mode = browser.find_element(By.ID, "analysis-mode")
    assert mode.get_attribute("data-mode") == report["experiment"]["analysis_mode"] == "bayesian"
    assert "sd 0.3" in mode.text
    verdicts = browser.find_elements(By.CSS_SELECTOR, "#verdicts li")
    assert [v.text for v in verdicts] == [v["text"] for v in report["verdicts"]]
    first = report["verdicts"][0]
    assert first["text"].startswith("Active rate, no-tasks vs single-task: ")
    assert all("chance to win" in v["text"] or v["status"] == "not_estimable"
               for v in report["verdicts"])  # fmt: skip
    assert verdicts[0].get_attribute("data-status") == first["status"]
    shown_arms = browser.find_elements(By.CSS_SELECTOR, "#arms tbody tr")
    assert [tr.get_attribute("data-arm") for tr in shown_arms] == [
        a["name"] for a in report["arms"]
    ]
    assert browser.find_element(By.ID, "incremental").is_displayed()

    banner = browser.find_element(By.ID, "srm-banner")
    assert banner.get_attribute("data-flagged") == str(report["srm"]["flagged"]).lower()
    for group, totals in report["groups"].items():
        shown = browser.find_element(By.CSS_SELECTOR, f'#groups tr[data-group="{group}"]')
        assert shown.find_element(By.CSS_SELECTOR, '[data-field="assigned"]').text == str(
            totals["assigned"]
        )
        assert (
            shown.find_element(By.CSS_SELECTOR, '[data-field="expenditure"]').text
            == (totals["expenditure"])
        )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts figure svg")) == 4
    assert browser.find_elements(
        By.CSS_SELECTOR, '#breakdowns figure[data-dimension="scenario"] svg'
    )
    assert (ARTIFACTS / "abtest-report.png").stat().st_size > 10_000


def _check_analysis_switch(browser, tr) -> None:
    """The experiment's mode (Bayesian) shows first; "all three" shows every column group."""
    from selenium.webdriver.common.by import By

    def shown(field: str) -> bool:
        return tr.find_element(By.CSS_SELECTOR, f'td[data-field="{field}"]').is_displayed()

    assert shown("bayes_significant") and not shown("significant")
    assert not shown("seq_significant")
    browser.find_element(By.CSS_SELECTOR, 'label[for="ab-view-all"]').click()
    assert shown("bayes_significant") and shown("significant") and shown("seq_significant")
    browser.find_element(By.CSS_SELECTOR, 'label[for="ab-view-sequential"]').click()
    assert shown("seq_significant") and not shown("bayes_significant")


def _check_arm_table(browser, report: dict, json_rows: dict) -> None:
    """One line per treatment arm, one cell per metric, read from the decision row."""
    from selenium.webdriver.common.by import By

    lines = browser.find_elements(By.CSS_SELECTOR, "#arm-table tbody tr")
    assert [tr.get_attribute("data-arm") for tr in lines] == ["no-tasks", "m2m", "m2m-uplift"]
    refused = 0
    for tr in lines:
        cells = tr.find_elements(By.CSS_SELECTOR, "td[data-metric]")
        assert len(cells) == len(analysis.METRICS)
        for td in cells:
            row = json_rows[td.get_attribute("data-row")]
            assert (row["population"], row["capped"]) == ("itt", False)
            assert row["adjustment"] == ("cuped" if row["theta"] is not None else "none")
            if row["not_estimable"]:
                assert td.text == "not estimable"
                assert td.get_attribute("title") == row["not_estimable"]
                refused += 1
                continue
            posterior = row["bayesian"][row["p_value_of"]]
            value, chance = td.text.split(", ")
            assert _close(value, posterior["value"], 1e-4)
            assert _close(chance.removesuffix(" to win"), posterior["chance_to_win"], 1e-2)
    assert refused >= 1  # no rewards anywhere: reward cost has no variation


def _check_cost_per_incremental(browser, report: dict) -> None:
    from selenium.webdriver.common.by import By

    costs = report["cost_per_incremental_active"]
    lines = browser.find_elements(By.CSS_SELECTOR, "#cost-per-incremental tbody tr")
    assert [tr.get_attribute("data-key") for tr in lines] == list(costs)
    for tr in lines:
        cost = costs[tr.get_attribute("data-key")]
        # no rewards were paid: no arm's extra actives come with an interval
        assert cost["not_estimable"]
        shown = tr.find_element(By.CSS_SELECTOR, '[data-field="not_estimable"]').text
        assert shown == f"not estimable: {cost['not_estimable']}"
