"""Ratio metrics, Benjamini-Hochberg, sequential and Bayesian analysis, CUPED-adjusted MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from abtest import stats

# --- ratio metrics -------------------------------------------------------------------------


def _revenue_per_active(rng: np.random.Generator, n: int, lift: float = 0.0):
    active = (rng.uniform(size=n) < 0.4).astype(float)
    revenue = active * rng.gamma(2.0, 20.0, n) * (1.0 + lift)
    return stats.RatioMoments.from_arrays(revenue, active)


def test_it_takes_a_ratio_mean_as_the_sum_over_the_sum():
    m, d = np.array([3.0, 0, 5, 8]), np.array([1.0, 0, 1, 2])
    summary = stats.ratio_summary(stats.RatioMoments.from_arrays(m, d))
    assert summary.mean == pytest.approx(16.0 / 4.0)


def test_it_gives_a_ratio_lift_a_standard_error_that_matches_its_spread():
    rng = np.random.default_rng(21)
    lifts, ses = [], []
    for _ in range(400):
        comparison = stats.compare_ratio(
            _revenue_per_active(rng, 500), _revenue_per_active(rng, 500, 0.1)
        )
        lifts.append(comparison.relative.value)
        ses.append(comparison.relative.se)
    assert np.mean(ses) == pytest.approx(np.std(lifts, ddof=1), rel=0.1)
    assert np.mean(lifts) == pytest.approx(0.1, abs=0.02)


def test_it_refuses_a_ratio_over_a_zero_denominator():
    zero = stats.RatioMoments.from_arrays(np.zeros(10), np.zeros(10))
    comparison = stats.compare_ratio(zero, _revenue_per_active(np.random.default_rng(0), 10))
    assert "undefined" in comparison.not_estimable


def test_it_estimates_the_cost_per_incremental_active_advertiser_with_an_interval():
    rng = np.random.default_rng(9)
    lifts, ses = [], []
    for _ in range(300):
        active_a = (rng.uniform(size=5000) < 0.3).astype(float)
        active_b = (rng.uniform(size=5000) < 0.4).astype(float)
        reward_a = rng.gamma(1.0, 2.0, 5000)
        reward_b = rng.gamma(1.0, 2.0, 5000) + 5.0 * active_b
        estimate, reason = stats.incremental_ratio(
            stats.RatioMoments.from_arrays(reward_a, active_a),
            stats.RatioMoments.from_arrays(reward_b, active_b),
        )
        assert reason is None
        lifts.append(estimate.value)
        ses.append(estimate.se)
    # E[reward_b - reward_a] / E[active_b - active_a] = 5 * 0.4 / 0.1 = 20.
    assert np.median(lifts) == pytest.approx(20.0, rel=0.05)
    assert np.mean(ses) == pytest.approx(np.std(lifts, ddof=1), rel=0.2)


def test_it_refuses_a_cost_per_incremental_active_when_actives_did_not_increase():
    rng = np.random.default_rng(1)
    same = (rng.uniform(size=500) < 0.3).astype(float)
    reward = rng.gamma(1.0, 2.0, 500)
    estimate, reason = stats.incremental_ratio(
        stats.RatioMoments.from_arrays(reward, same), stats.RatioMoments.from_arrays(reward, same)
    )
    assert "not significantly above 0" in reason
    assert math.isnan(estimate.ci_low)


# --- Benjamini-Hochberg --------------------------------------------------------------------


def test_it_applies_benjamini_hochberg_step_up():
    adjusted = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # m p / rank: 0.04, 0.08 (rank 3 -> 0.04*4/3), 0.06 (rank 2), 0.5; then min from the top.
    assert adjusted.tolist() == pytest.approx([0.04, 4 * 0.04 / 3, 4 * 0.04 / 3, 0.5])


def test_it_never_adjusts_more_than_holm():
    p = np.random.default_rng(3).uniform(0, 0.2, 12)
    assert np.all(stats.benjamini_hochberg(p) <= stats.holm(p) + 1e-15)


def test_it_keeps_undefined_p_values_out_of_the_bh_family():
    adjusted = stats.benjamini_hochberg([0.01, math.nan, 0.02])
    assert adjusted[[0, 2]].tolist() == pytest.approx([0.02, 0.02])
    assert math.isnan(adjusted[1])


# --- sequential testing --------------------------------------------------------------------


def _proportions(x_a: int, x_b: int, n: int) -> stats.Comparison:
    return stats.compare(
        stats.proportion_summary(n=n, successes=x_a), stats.proportion_summary(n=n, successes=x_b)
    )


def test_it_widens_the_interval_and_raises_the_p_value_when_sequential():
    fixed = _proportions(30_000, 30_777, 100_000)
    sequential = stats.compare_sequential(fixed)
    for f, s in ((fixed.absolute, sequential.absolute), (fixed.relative, sequential.relative)):
        assert s.value == f.value
        assert s.ci_high - s.ci_low > f.ci_high - f.ci_low
        assert s.p_value > f.p_value


def test_it_keeps_the_false_positive_rate_under_daily_peeking():
    # A/A tests looked at on 20 days: fixed-horizon tests cross alpha far more often.
    rng = np.random.default_rng(17)
    experiments, days, per_day, rate = 200, 20, 200, 0.2
    daily = rng.binomial(per_day, rate, size=(experiments, 2, days)).cumsum(axis=2)
    ever_fixed = ever_sequential = 0
    for experiment in daily:
        p_fixed, p_seq = [], []
        for day in range(days):
            n = per_day * (day + 1)
            comparison = _proportions(int(experiment[0, day]), int(experiment[1, day]), n)
            p_fixed.append(comparison.absolute.p_value)
            p_seq.append(stats.compare_sequential(comparison).absolute.p_value)
        ever_fixed += min(p_fixed) < 0.05
        ever_sequential += min(p_seq) < 0.05
    assert ever_sequential / experiments <= 0.05
    assert ever_fixed / experiments > 0.1


def test_it_derives_rho_from_alpha_and_the_tuning_parameter():
    rho = stats.sequential_rho(alpha=0.05, tuning=5000)
    log_alpha = math.log(0.05)
    assert rho**2 * 5000 == pytest.approx(-2 * log_alpha + math.log(1 - 2 * log_alpha))
    with pytest.raises(ValueError, match="tuning"):
        stats.sequential_rho(alpha=0.05, tuning=0)


def test_it_leaves_a_not_estimable_comparison_as_it_is_when_sequential():
    comparison = _proportions(1, 0, 2)
    assert stats.compare_sequential(comparison) == comparison


# --- Bayesian ------------------------------------------------------------------------------


def test_it_gives_the_chance_to_win_of_a_flat_prior_posterior():
    comparison = _proportions(30_000, 30_777, 100_000)
    bayes = stats.compare_bayesian(comparison)
    z = comparison.relative.value / comparison.relative.se
    assert bayes.relative.chance_to_win == pytest.approx(sps.norm.cdf(z), abs=1e-12)
    assert bayes.relative.expected == comparison.relative.value
    assert bayes.relative.ci_low == pytest.approx(
        comparison.relative.value - 1.959963984540054 * comparison.relative.se, rel=1e-9
    )


def test_it_computes_the_risk_as_the_expected_loss():
    estimate = stats.Estimate(0.01, 0.02, math.inf, math.nan, math.nan, math.nan)
    result = stats.bayesian_estimate(estimate)
    draws = np.random.default_rng(5).normal(0.01, 0.02, 400_000)
    assert result.risk_treatment == pytest.approx(np.maximum(-draws, 0).mean(), rel=0.02)
    assert result.risk_control == pytest.approx(np.maximum(draws, 0).mean(), rel=0.02)
    assert result.risk_control - result.risk_treatment == pytest.approx(0.01, abs=1e-15)


def test_it_shrinks_towards_a_proper_prior():
    estimate = stats.Estimate(0.1, 0.1, math.inf, math.nan, math.nan, math.nan)
    prior = stats.GaussianPrior(mean=0.0, variance=0.01, proper=True)
    result = stats.bayesian_estimate(estimate, prior=prior)
    assert result.expected == pytest.approx(0.05)
    assert result.sd == pytest.approx(math.sqrt(0.005))


def test_it_has_no_posterior_for_a_not_estimable_comparison():
    bayes = stats.compare_bayesian(_proportions(1, 0, 2))
    assert bayes.absolute is None and bayes.relative is None
    assert bayes.as_dict()["not_estimable"]


# --- CUPED-adjusted planning ---------------------------------------------------------------


def test_it_shrinks_the_mde_by_the_pre_period_r_squared():
    kw = {"mean": 10.0, "variance": 400.0, "n_control": 50_000, "n_treatment": 50_000}
    plain = stats.mde_relative(**kw)
    assert stats.mde_relative(**kw, r_squared=0.75) == pytest.approx(plain * 0.5, rel=1e-12)
    mde = stats.mde_relative(**kw, r_squared=0.75)
    assert stats.power_relative(effect=mde, **kw, r_squared=0.75) == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError, match="R"):
        stats.mde_relative(**kw, r_squared=1.0)


def test_it_measures_the_r_squared_that_cuped_then_removes():
    a, b = (
        stats.Moments.from_arrays(y, x) for y, x in _pre_period(np.random.default_rng(12), 20_000)
    )
    r2 = stats.cuped_r_squared(a + b, proportion=False)
    raw = (a + b).summary(proportion=False).variance
    theta = stats.cuped_theta(a, b, proportion=False)
    pooled_x = (a.sum_x + b.sum_x) / (a.n + b.n)
    adjusted = stats.cuped_summary(a + b, theta=theta, pooled_mean_x=pooled_x, proportion=False)
    assert 0.3 < r2 < 0.95
    assert adjusted.variance == pytest.approx(raw * (1 - r2), rel=1e-9)


def _pre_period(rng: np.random.Generator, n: int):
    x = rng.gamma(2.0, 5.0, 2 * n)
    y = x + rng.normal(0, 6.0, 2 * n)
    return (y[:n], x[:n]), (y[n:], x[n:])
