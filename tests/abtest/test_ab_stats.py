"""The statistics engine against every known answer of ab-known-answers.md, plus its edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abtest import stats

N = 100_000


@pytest.fixture
def active_rate() -> stats.Comparison:
    return stats.compare(
        stats.proportion_summary(n=N, successes=30_000),
        stats.proportion_summary(n=N, successes=30_777),
    )


@pytest.fixture
def arpu() -> stats.Comparison:
    a = stats.mean_summary(n=N, total=4898923.459369325, total_sq=2128159156.132121)
    b = stats.mean_summary(n=N, total=5001252.86480413, total_sq=2113605243.3000288)
    return stats.compare(a, b)


def test_it_matches_the_active_rate_relative_lift(active_rate):
    rel = active_rate.relative
    assert rel.value == pytest.approx(0.0259, abs=1e-12)
    assert rel.ci_low == pytest.approx(0.012288449520612785, abs=1e-12)
    assert rel.ci_high == pytest.approx(0.03951155047938722, abs=1e-12)
    assert rel.p_value == pytest.approx(0.00019196356599815445, abs=1e-12)


def test_it_matches_the_active_rate_absolute_lift(active_rate):
    absolute = active_rate.absolute
    assert absolute.value == pytest.approx(0.00777, abs=1e-12)
    assert absolute.ci_low == pytest.approx(0.00373869784068415, abs=1e-12)
    assert absolute.ci_high == pytest.approx(0.0118013021593158, abs=1e-12)
    assert absolute.p_value == pytest.approx(0.000158335172816, abs=1e-12)


def test_it_uses_the_unbessel_corrected_proportion_variance():
    summary = stats.proportion_summary(n=N, successes=30_000)
    assert summary.variance == pytest.approx(0.3 * 0.7, abs=1e-15)


def test_it_matches_the_arpu_relative_lift(arpu):
    rel = arpu.relative
    assert rel.value == pytest.approx(0.02088814129951289, abs=1e-9)
    assert rel.ci_low == pytest.approx(-0.0038762746118973165, abs=1e-9)
    assert rel.ci_high == pytest.approx(0.045652557210923095, abs=1e-9)
    assert rel.p_value == pytest.approx(0.09829403609309706, abs=1e-9)


def test_it_finds_the_arpu_lift_not_significant(arpu):
    assert arpu.relative.p_value > 0.05
    assert arpu.relative.ci_low < 0 < arpu.relative.ci_high


def test_it_computes_welch_satterthwaite_degrees_of_freedom():
    # Unequal variances and sizes: the textbook formula by hand.
    df = stats.welch_df(var_a=4.0, n_a=10, var_b=1.0, n_b=30)
    qa, qb = 0.4, 1 / 30
    assert df == pytest.approx((qa + qb) ** 2 / (qa**2 / 9 + qb**2 / 29), abs=1e-12)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [((100_000, 100_900), 0.04464877869766802), ((100_000, 100_200), 0.654882167328132)],
)
def test_it_matches_the_srm_known_answers(observed, expected):
    p = stats.srm_p_value(observed, [0.5, 0.5])
    assert p == pytest.approx(expected, abs=1e-9)
    assert p >= stats.SRM_THRESHOLD


def test_it_flags_a_clear_sample_ratio_mismatch():
    assert stats.srm_p_value([100_000, 102_000], [0.5, 0.5]) < stats.SRM_THRESHOLD


def test_it_checks_srm_over_three_groups_with_a_holdout():
    p = stats.srm_p_value([1000, 4500, 4500], [0.1, 0.45, 0.45])
    assert p == pytest.approx(1.0)


def test_it_treats_members_of_a_zero_weight_group_as_a_mismatch():
    assert stats.srm_p_value([10, 5, 5], [0, 0.5, 0.5]) == 0.0


@pytest.mark.parametrize(("baseline", "expected"), [(0.10, 0.0376), (0.30, 0.0191)])
def test_it_matches_the_active_rate_mde(baseline, expected):
    mde = stats.mde_proportion(baseline=baseline, n_control=N, n_treatment=N)
    assert mde == pytest.approx(expected, abs=5e-5)  # the known answers are rounded to 0.01%


def test_it_matches_the_arpu_mde_at_cv_two():
    mde = stats.mde_relative(mean=10.0, variance=(2 * 10.0) ** 2, n_control=N, n_treatment=N)
    assert mde == pytest.approx(0.0251, abs=5e-5)


def test_it_gives_eighty_percent_power_at_the_mde():
    mde = stats.mde_proportion(baseline=0.1, n_control=N, n_treatment=N)
    power = stats.power_relative(effect=mde, mean=0.1, variance=0.09, n_control=N, n_treatment=N)
    assert power == pytest.approx(0.8, abs=1e-3)


def test_it_computes_the_pooled_cuped_theta():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 5.0, 4000)
    y = 0.6 * x + rng.normal(0, 1, 4000)
    a = stats.Moments.from_arrays(y[:2000], x[:2000])
    b = stats.Moments.from_arrays(y[2000:], x[2000:])
    theta = stats.cuped_theta(a, b, proportion=False)
    assert theta == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1), abs=1e-12)


def test_it_adjusts_means_towards_the_pooled_pre_period_mean():
    a = stats.Moments.from_arrays(np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 4]))
    b = stats.Moments.from_arrays(np.array([3.0, 4, 5, 6]), np.array([3.0, 4, 5, 6]))
    comparison, theta = stats.compare_cuped(a, b, proportion=False)
    # y = x exactly, so theta = 1 and the pre-period explains the whole difference.
    assert theta == pytest.approx(1.0)
    assert comparison.control.mean == pytest.approx(3.5)
    assert comparison.treatment.mean == pytest.approx(3.5)
    assert comparison.absolute.value == pytest.approx(0.0)


def test_it_shrinks_the_confidence_interval_with_cuped():
    rng = np.random.default_rng(7)
    x = rng.gamma(1.0, 10.0, 20_000)
    y = x * rng.uniform(0.8, 1.2, 20_000)
    y[10_000:] *= 1.02
    a = stats.Moments.from_arrays(y[:10_000], x[:10_000])
    b = stats.Moments.from_arrays(y[10_000:], x[10_000:])
    plain = stats.compare(a.summary(proportion=False), b.summary(proportion=False))
    adjusted, _ = stats.compare_cuped(a, b, proportion=False)
    plain_width = plain.relative.ci_high - plain.relative.ci_low
    adjusted_width = adjusted.relative.ci_high - adjusted.relative.ci_low
    assert adjusted_width < plain_width / 3


def test_it_leaves_a_constant_covariate_without_effect():
    a = stats.Moments.from_arrays(np.array([1.0, 2, 3]), np.zeros(3))
    b = stats.Moments.from_arrays(np.array([2.0, 3, 4]), np.zeros(3))
    adjusted, theta = stats.compare_cuped(a, b, proportion=False)
    plain = stats.compare(a.summary(proportion=False), b.summary(proportion=False))
    assert theta == 0.0
    assert adjusted.absolute == plain.absolute


def test_it_winsorises_both_tails_at_the_pooled_quantiles():
    values = np.arange(101, dtype=float)
    limits = stats.winsor_limits(values, quantile=0.95)
    assert limits == pytest.approx((5.0, 95.0))
    assert stats.winsorise(values, limits=limits).max() == 95.0
    assert stats.winsorise(values, limits=limits).min() == pytest.approx(5.0)


def test_it_rejects_a_winsorisation_quantile_below_one_half():
    with pytest.raises(ValueError, match="quantile"):
        stats.winsor_limits(np.arange(5.0), quantile=0.3)


def test_it_applies_holm_step_down():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.5])
    assert adjusted.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_it_keeps_undefined_p_values_out_of_the_holm_family():
    adjusted = stats.holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def test_it_leaves_the_relative_lift_undefined_for_a_zero_control_mean():
    comparison = stats.compare(
        stats.proportion_summary(n=100, successes=0), stats.proportion_summary(n=100, successes=5)
    )
    assert comparison.relative is None
    assert comparison.absolute.value == pytest.approx(0.05)


def test_it_marks_identical_constant_arms_not_estimable():
    same = stats.mean_summary(n=10, total=10.0, total_sq=10.0)
    comparison = stats.compare(same, same)
    assert comparison.absolute.value == 0.0
    assert math.isnan(comparison.absolute.p_value)
    assert comparison.relative is None
    assert "no variation" in comparison.not_estimable


def test_it_returns_undefined_results_for_arms_too_small_to_test():
    comparison = stats.compare(
        stats.mean_summary(n=1, total=1.0, total_sq=1.0),
        stats.mean_summary(n=5, total=5.0, total_sq=7.0),
    )
    assert math.isnan(comparison.absolute.p_value)


def test_it_plans_full_power_when_the_metric_never_varies():
    power = stats.power_relative(effect=0.05, mean=1.0, variance=0.0, n_control=15, n_treatment=15)
    assert power == 1.0
