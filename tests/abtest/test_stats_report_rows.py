"""The report rows: not-estimable reasons, Benjamini-Hochberg beside Holm, the sequential and
Bayesian sections, the mode's decision, the ratio metric and the cost per incremental active."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from abtest import analysis, stats


def _metrics(rng: np.random.Generator, n: int) -> analysis.AdvertiserMetrics:
    group = np.repeat([analysis.CONTROL, analysis.TREATMENT], n)
    spend = rng.gamma(1.0, 20.0, 2 * n) * (rng.uniform(size=2 * n) < 0.5)
    zeros = np.zeros(2 * n)
    return analysis.AdvertiserMetrics(
        group=group, targeted=np.ones(2 * n, dtype=bool), spend=spend,
        clicks=np.floor(spend / 5), active_days=(spend > 0).astype(float), pre_spend=spend * 0.8,
        pre_clicks=zeros, pre_active_days=zeros, reward=zeros, first_active_day=zeros - 1,
    )  # fmt: skip


@pytest.fixture
def rows() -> list[dict]:
    return analysis.report_rows(_metrics(np.random.default_rng(6), 300), alpha=0.05,
                                winsor_quantile=None)  # fmt: skip


def test_it_marks_a_metric_without_variation_not_estimable(rows):
    reward = next(r for r in rows if r["metric"] == "reward_cost" and r["adjustment"] == "none")
    assert "no variation" in reward["not_estimable"]
    assert reward["p_value"] is None and reward["p_value_bh"] is None
    assert reward["significant"] is False


def test_it_adds_benjamini_hochberg_beside_holm_per_family(rows):
    family = [r for r in rows if r["population"] == "itt" and r["adjustment"] == "none"
              and r["holm_family"] == "primary"]  # fmt: skip
    assert len(family) == 2
    p = [np.nan if r["p_value"] is None else r["p_value"] for r in family]
    expected = stats.benjamini_hochberg(p)
    for row, p_bh in zip(family, expected, strict=True):
        assert row["p_value_bh"] == (None if np.isnan(p_bh) else pytest.approx(p_bh))
        assert row["p_value_bh"] is None or row["p_value_bh"] <= row["p_value_holm"]


# --- sequential and Bayesian sections, the mode, ratio metrics --------------------------------


N, LIFT = 2000, 0.3  # per arm; the active rate goes from 50% to 65%


def _lifted(rng: np.random.Generator, n: int, lift: float) -> analysis.AdvertiserMetrics:
    """Two arms; the treatment spends `lift` more and is active more often."""
    group = np.repeat([analysis.CONTROL, analysis.TREATMENT], n)
    treated = group == analysis.TREATMENT
    active = rng.uniform(size=2 * n) < np.where(treated, 0.5 * (1 + lift), 0.5)
    spend = rng.gamma(2.0, 10.0, 2 * n) * active * np.where(treated, 1 + lift, 1.0)
    reward = np.where(treated & active, 3.0, 0.0) + rng.uniform(0, 0.1, 2 * n)
    pre = rng.gamma(2.0, 10.0, 2 * n) * (rng.uniform(size=2 * n) < 0.5)
    return analysis.AdvertiserMetrics(
        group=group, targeted=np.ones(2 * n, dtype=bool), spend=spend, clicks=np.floor(spend / 5),
        active_days=active.astype(float), pre_spend=pre, pre_clicks=np.floor(pre / 5),
        pre_active_days=(pre > 0).astype(float), reward=reward, first_active_day=np.zeros(2 * n),
    )  # fmt: skip


def _find(rows: list[dict], metric: str, adjustment: str = "none") -> dict:
    return next(r for r in rows if (r["metric"], r["population"], r["adjustment"], r["capped"])
                == (metric, "itt", adjustment, False))  # fmt: skip


def _rows(mode: str, **settings) -> list[dict]:
    m = _lifted(np.random.default_rng(11), N, LIFT)
    settings = analysis.AnalysisSettings(mode=mode, **settings)
    return analysis.report_rows(m, alpha=0.05, winsor_quantile=None, settings=settings)


def test_it_gives_every_row_the_always_valid_interval_of_its_comparison():
    row = _find(_rows("frequentist", tuning=2000.0), "arpu")
    relative = stats.Estimate(row["relative"]["value"], row["relative"]["se"], math.inf,
                              math.nan, math.nan, math.nan)  # fmt: skip
    expected = stats.sequential_estimate(relative, n_total=2 * N, alpha=0.05, tuning=2000.0)
    sequential = row["sequential"]["relative"]
    assert (sequential["ci_low"], sequential["ci_high"]) == pytest.approx(
        (expected.ci_low, expected.ci_high)
    )
    assert row["sequential"]["p_value"] == pytest.approx(expected.p_value)
    assert sequential["ci_high"] - sequential["ci_low"] > (
        row["relative"]["ci_high"] - row["relative"]["ci_low"]
    )


def test_it_holm_corrects_the_sequential_p_values_per_family():
    rows = _rows("sequential")
    family = [r for r in rows if r["population"] == "itt" and r["adjustment"] == "none"
              and r["primary"]]  # fmt: skip
    p = [r["sequential"]["p_value"] for r in family]
    holm = stats.holm(p)
    assert [r["sequential"]["p_value_holm"] for r in family] == pytest.approx(holm.tolist())
    for row in family:
        assert row["significant"] == row["sequential"]["significant"]
        assert row["sequential"]["significant"] == (row["sequential"]["p_value_holm"] < 0.05)


def test_it_gives_every_row_the_posterior_of_its_lift_under_the_prior():
    prior = stats.GaussianPrior(mean=0.0, variance=0.3**2, proper=True)
    row = _find(_rows("bayesian", prior=prior), "active_rate")
    data_variance = row["relative"]["se"] ** 2
    precision = 1 / data_variance + 1 / prior.variance
    posterior = row["bayesian"]["relative"]
    assert posterior["value"] == pytest.approx(row["relative"]["value"] / data_variance / precision)
    assert posterior["sd"] == pytest.approx(math.sqrt(1 / precision))
    assert posterior["chance_to_win"] == pytest.approx(
        sps.norm.sf(0, posterior["value"], posterior["sd"])
    )
    assert row["bayesian"]["chance_to_win"] == posterior["chance_to_win"]
    assert row["bayesian"]["prior"] == {"proper": True, "mean": 0.0, "stddev": pytest.approx(0.3)}


def test_it_rescales_the_prior_by_the_unadjusted_control_mean_for_a_cuped_absolute_lift():
    prior = stats.GaussianPrior(mean=0.0, variance=0.01, proper=True)
    row = _find(_rows("bayesian", prior=prior), "arpu", "cuped")
    control_mean = next(r for r in _rows("frequentist") if r["metric"] == "arpu"
                        and r["adjustment"] == "none")["control"]["mean"]  # fmt: skip
    absolute_prior_variance = 0.01 * control_mean**2
    data_variance = row["absolute"]["se"] ** 2
    expected_sd = math.sqrt(1 / (1 / data_variance + 1 / absolute_prior_variance))
    assert row["bayesian"]["absolute"]["sd"] == pytest.approx(expected_sd)


def test_it_decides_significance_by_the_experiments_mode():
    for mode in ("frequentist", "sequential", "bayesian"):
        for row in _rows(mode):
            decision = {
                "frequentist": row["significant_frequentist"],
                "sequential": row["sequential"]["significant"],
                "bayesian": row["bayesian"]["significant"],
            }[mode]
            assert row["analysis_mode"] == mode and row["significant"] == decision


def test_it_calls_a_bayesian_result_decisive_past_one_minus_alpha():
    for row in _rows("bayesian"):
        chance = row["bayesian"]["chance_to_win"]
        if chance is None:
            assert not row["bayesian"]["significant"]
            continue
        assert row["bayesian"]["significant"] == (chance >= 0.95 or chance <= 0.05)


def test_it_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="analysis mode 'bayes'"):
        _rows("bayes")


def test_it_words_the_verdicts_in_the_mode_and_names_the_winner():
    for mode in ("frequentist", "sequential", "bayesian"):
        rows = _rows(mode)
        for verdict in analysis.verdicts(rows, alpha=0.05):
            row = next(r for r in rows if analysis.row_id(r) == verdict["row"])
            assert verdict["analysis_mode"] == mode
            assert verdict["significant"] == row["significant"]
            if mode == "bayesian":
                assert "chance to win" in verdict["text"] and verdict["p_value"] is None
            elif mode == "sequential":
                assert "(always valid)" in verdict["text"]
                assert verdict["p_value_holm"] == row["sequential"]["p_value_holm"]
            if verdict["significant"]:
                lift = row["bayesian"]["relative"]["value"] if mode == "bayesian" else (
                    row["relative"]["value"])  # fmt: skip
                assert verdict["winner"] == (row["arm"] if lift > 0 else row["control_arm"])
            else:
                assert verdict["winner"] is None
    # 50% against 65% active on 2,000 per arm is unmistakable in active rate, whatever the mode
    for mode in ("frequentist", "sequential", "bayesian"):
        active = analysis.verdicts(_rows(mode), alpha=0.05)[0]
        assert (active["metric"], active["winner"]) == ("active_rate", "treatment")


def test_it_compares_revenue_per_active_advertiser_as_a_ratio():
    m = _lifted(np.random.default_rng(11), N, LIFT)
    rows = analysis.report_rows(m, alpha=0.05, winsor_quantile=None)
    row = _find(rows, "revenue_per_active")
    assert row["type"] == "ratio" and not row["primary"] and row["holm_family"] == "secondary"
    assert not any(r["metric"] == "revenue_per_active" and r["adjustment"] == "cuped"
                   for r in rows)  # fmt: skip
    control, treatment = m.group == analysis.CONTROL, m.group == analysis.TREATMENT
    expected = stats.compare_ratio(
        stats.RatioMoments.from_arrays(m.spend[control], m.active[control]),
        stats.RatioMoments.from_arrays(m.spend[treatment], m.active[treatment]),
    )
    assert row["control"]["mean"] == pytest.approx(m.spend[control].sum() / m.active[control].sum())
    assert row["relative"]["value"] == pytest.approx(expected.relative.value)
    assert row["relative"]["se"] == pytest.approx(expected.relative.se)


def test_it_shows_a_ratio_over_no_active_advertisers_as_not_estimable():
    m = _lifted(np.random.default_rng(2), 50, 0.0)
    none_active = np.where(m.group == analysis.CONTROL, 0.0, m.active_days)
    m = analysis.AdvertiserMetrics(**{**m.__dict__, "active_days": none_active,
                                      "spend": m.spend * (none_active > 0)})  # fmt: skip
    row = _find(analysis.report_rows(m, alpha=0.05, winsor_quantile=None), "revenue_per_active")
    assert "undefined" in row["not_estimable"]
    assert row["bayesian"]["chance_to_win"] is None and row["sequential"]["p_value"] is None


def test_it_estimates_the_cost_per_incremental_active_with_an_interval():
    m = _lifted(np.random.default_rng(11), N, LIFT)
    cost = analysis.cost_per_incremental_active(m, alpha=0.05)["treatment_vs_control_itt"]
    control, treatment = m.group == analysis.CONTROL, m.group == analysis.TREATMENT
    estimate, reason = stats.incremental_ratio(
        stats.RatioMoments.from_arrays(m.reward[control], m.active[control]),
        stats.RatioMoments.from_arrays(m.reward[treatment], m.active[treatment]),
    )
    assert reason is None and cost["not_estimable"] is None
    assert cost["value"] == pytest.approx(estimate.value)
    assert (cost["ci_low"], cost["ci_high"]) == pytest.approx((estimate.ci_low, estimate.ci_high))
    assert cost["ci_low"] < cost["value"] < cost["ci_high"]
    assert (cost["arm"], cost["reference"], cost["population"]) == ("treatment", "control", "itt")


def test_it_gives_the_reason_when_no_reward_varies():
    m = _lifted(np.random.default_rng(11), N, LIFT)
    m = analysis.AdvertiserMetrics(**{**m.__dict__, "reward": np.zeros(2 * N)})
    cost = analysis.cost_per_incremental_active(m, alpha=0.05)["treatment_vs_control_itt"]
    assert "does not vary" in cost["not_estimable"] and cost["ci_low"] is None
