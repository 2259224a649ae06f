"""CUPED's relative lift, not-estimable comparisons, SRM with zero weights, impossible sums."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abtest import stats


def _cuped_arms(rng: np.random.Generator, n: int, lift: float = 0.0):
    x = rng.gamma(2.0, 5.0, 2 * n)
    y = 0.8 * x + rng.gamma(1.0, 3.0, 2 * n)
    y[n:] *= 1.0 + lift
    return stats.Moments.from_arrays(y[:n], x[:n]), stats.Moments.from_arrays(y[n:], x[n:])


def test_it_divides_the_cuped_relative_lift_by_the_unadjusted_control_mean():
    a, b = _cuped_arms(np.random.default_rng(3), 3000, lift=0.03)
    comparison, _ = stats.compare_cuped(a, b, proportion=False)
    unadjusted_control_mean = a.sum_y / a.n
    assert comparison.relative.value == pytest.approx(
        comparison.absolute.value / unadjusted_control_mean, rel=1e-12
    )
    assert comparison.control.mean != pytest.approx(unadjusted_control_mean, rel=1e-6)


def test_it_gives_the_cuped_relative_lift_a_standard_error_that_matches_its_spread():
    # Repeat one A/B experiment many times: the delta-method SE must match the lifts' sd.
    rng = np.random.default_rng(11)
    lifts, ses = [], []
    for _ in range(400):
        a, b = _cuped_arms(rng, 400, lift=0.05)
        comparison, _ = stats.compare_cuped(a, b, proportion=False)
        lifts.append(comparison.relative.value)
        ses.append(comparison.relative.se)
    assert np.mean(ses) == pytest.approx(np.std(lifts, ddof=1), rel=0.1)


def test_it_reduces_the_cuped_relative_lift_to_the_plain_one_without_a_covariate():
    rng = np.random.default_rng(5)
    y = rng.gamma(2.0, 4.0, 600)
    a = stats.Moments.from_arrays(y[:300], np.ones(300))
    b = stats.Moments.from_arrays(y[300:], np.ones(300))
    adjusted, theta = stats.compare_cuped(a, b, proportion=False)
    plain = stats.compare(a.summary(proportion=False), b.summary(proportion=False))
    assert theta == 0.0
    assert adjusted.relative == plain.relative


def test_it_refuses_a_treatment_arm_without_conversions():
    comparison = stats.compare(
        stats.proportion_summary(n=2, successes=1), stats.proportion_summary(n=2, successes=0)
    )
    assert comparison.relative is None
    assert math.isnan(comparison.absolute.ci_low) and math.isnan(comparison.absolute.p_value)
    assert "treatment" in comparison.not_estimable
    assert comparison.as_dict()["not_estimable"] == comparison.not_estimable


def test_it_refuses_two_arms_without_variation():
    constant = stats.mean_summary(n=50, total=100.0, total_sq=200.0)
    shifted = stats.mean_summary(n=50, total=150.0, total_sq=450.0)
    comparison = stats.compare(constant, shifted)
    assert comparison.not_estimable is not None
    assert comparison.absolute.value == pytest.approx(1.0)
    assert math.isnan(comparison.absolute.p_value)


def test_it_refuses_arms_too_small_to_test_with_a_reason():
    comparison = stats.compare(
        stats.mean_summary(n=1, total=1.0, total_sq=1.0),
        stats.mean_summary(n=5, total=5.0, total_sq=7.0),
    )
    assert "n=1" in comparison.not_estimable


def test_it_shows_only_the_absolute_lift_over_a_negative_control_mean():
    rng = np.random.default_rng(2)
    a_values = rng.normal(-2.0, 1.0, 500)
    b_values = rng.normal(-1.0, 1.0, 500)
    summaries = [
        stats.mean_summary(n=v.size, total=v.sum(), total_sq=(v * v).sum())
        for v in (a_values, b_values)
    ]
    comparison = stats.compare(*summaries)
    assert comparison.relative is None
    assert "not positive" in comparison.relative_not_estimable
    assert comparison.not_estimable is None
    assert comparison.absolute.value > 0 and comparison.absolute.p_value < 1e-6


def test_it_judges_the_cuped_relative_lift_by_the_unadjusted_control_mean():
    # The adjusted control mean is positive, the real one is not: no relative lift.
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 400)
    y = x + rng.normal(0.0, 0.5, 400)
    y[:200] -= y[:200].mean() + 0.01
    a = stats.Moments.from_arrays(y[:200], x[:200] - 1.0)
    b = stats.Moments.from_arrays(y[200:], x[200:])
    comparison, _ = stats.compare_cuped(a, b, proportion=False)
    assert comparison.control.mean > 0
    assert comparison.relative is None and comparison.relative_not_estimable


def test_it_refuses_a_negative_cuped_variance_naming_the_metric():
    rng = np.random.default_rng(8)
    x = rng.normal(10.0, 2.0, 200)
    y = x + rng.normal(0.0, 1.0, 200)
    a = stats.Moments.from_arrays(y[:100], x[:100])
    good_b = stats.Moments.from_arrays(y[100:], x[100:])
    # A cross product no data could give: cov(y, x) far beyond sqrt(var y var x).
    impossible_b = stats.Moments(
        n=good_b.n, sum_y=good_b.sum_y, sum_y2=good_b.sum_y2, sum_x=good_b.sum_x,
        sum_x2=good_b.sum_x2, sum_xy=good_b.sum_xy + 5_000.0,
    )  # fmt: skip
    with pytest.raises(stats.StatsError, match=r"net_arpu.*CUPED-adjusted variance"):
        stats.compare_cuped(a, impossible_b, proportion=False, metric="net_arpu")


def test_it_tolerates_rounding_when_the_covariate_explains_everything():
    values = np.array([1.0, 2, 3, 4, 5, 6])
    a = stats.Moments.from_arrays(values[:3] * 0.1, values[:3])
    b = stats.Moments.from_arrays(values[3:] * 0.1, values[3:])
    comparison, theta = stats.compare_cuped(a, b, proportion=False, metric="arpu")
    assert theta == pytest.approx(0.1)
    assert "no variation" in comparison.not_estimable


def test_it_refuses_a_sum_of_squares_below_what_the_sum_allows():
    with pytest.raises(stats.StatsError, match="arpu"):
        stats.mean_summary(n=10, total=100.0, total_sq=500.0, metric="arpu")


def test_it_treats_members_of_a_zero_weight_group_as_proof_of_a_broken_assignment():
    assert stats.srm_p_value([1, 50_000, 50_000], [0.0, 0.5, 0.5]) == 0.0


def test_it_leaves_an_empty_zero_weight_group_out_of_the_srm_test():
    with_holdout = stats.srm_p_value([0, 1000, 1090], [0.0, 0.5, 0.5])
    assert with_holdout == pytest.approx(stats.srm_p_value([1000, 1090], [0.5, 0.5]), abs=1e-15)
