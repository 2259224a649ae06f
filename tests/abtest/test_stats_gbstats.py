"""The statistics engine against gbstats on seeded random cases (data/gbstats_vectors.json).

gbstats cannot share our virtual environment (it pins numpy < 2), so scripts/gbstats_vectors.py
computed its answers once with gbstats 0.8.0 in a separate one. Agreement is to 1e-6 relative.

Where gbstats' release and its main branch differ, we follow main: the CUPED relative lift's
variance is main's delta method through the adjustment (`cuped_relative_main` in the file,
main's formula evaluated on the release's own statistics), not the release's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abtest import stats

VECTORS = json.loads((Path(__file__).parent / "data" / "gbstats_vectors.json").read_text())
REL = 1e-6
# A p-value from an e-value that overflowed is exactly 0 in gbstats, a denormal here.
P_ABS = 1e-12


def _ids(kind: str) -> list[str]:
    return [f"{kind}-{i}" for i in range(len(VECTORS[kind]))]


def _check(ours: stats.Estimate, theirs: dict) -> None:
    assert ours.value == pytest.approx(theirs["expected"], rel=REL)
    assert [ours.ci_low, ours.ci_high] == pytest.approx(theirs["ci"], rel=REL)
    assert ours.p_value == pytest.approx(theirs["p_value"], rel=REL, abs=P_ABS)


def _check_bayesian(ours: stats.BayesianResult, theirs: dict) -> None:
    assert ours.expected == pytest.approx(theirs["expected"], rel=REL)
    assert [ours.ci_low, ours.ci_high] == pytest.approx(theirs["ci"], rel=REL)
    assert ours.chance_to_win == pytest.approx(theirs["chance_to_win"], rel=REL, abs=P_ABS)
    assert [ours.risk_control, ours.risk_treatment] == pytest.approx(
        theirs["risk"], rel=REL, abs=P_ABS
    )


def _check_all(comparison: stats.Comparison, case: dict) -> None:
    """Frequentist, sequential and Bayesian, relative and absolute."""
    alpha, tuning = case["alpha"], case["tuning"]
    assert comparison.not_estimable is None
    _check(comparison.relative, case["frequentist_relative"])
    _check(comparison.absolute, case["frequentist_absolute"])
    sequential = stats.compare_sequential(comparison, alpha=alpha, tuning=tuning)
    _check(sequential.relative, case["sequential_relative"])
    _check(sequential.absolute, case["sequential_absolute"])
    bayes = stats.compare_bayesian(comparison, alpha=alpha)
    _check_bayesian(bayes.relative, case["bayesian_relative"])
    _check_bayesian(bayes.absolute, case["bayesian_absolute"])


@pytest.mark.parametrize("case", VECTORS["proportion"], ids=_ids("proportion"))
def test_it_matches_gbstats_on_proportions(case):
    a, b = (stats.proportion_summary(n=s["n"], successes=s["sum"]) for s in (case["a"], case["b"]))
    _check_all(stats.compare(a, b, alpha=case["alpha"]), case)


@pytest.mark.parametrize("case", VECTORS["mean"], ids=_ids("mean"))
def test_it_matches_gbstats_on_means(case):
    a, b = (
        stats.mean_summary(n=s["n"], total=s["sum"], total_sq=s["sum_sq"])
        for s in (case["a"], case["b"])
    )
    _check_all(stats.compare(a, b, alpha=case["alpha"]), case)


@pytest.mark.parametrize("case", VECTORS["ratio"], ids=_ids("ratio"))
def test_it_matches_gbstats_on_ratio_metrics(case):
    a, b = (stats.RatioMoments(**s) for s in (case["a"], case["b"]))
    _check_all(stats.compare_ratio(a, b, alpha=case["alpha"]), case)


@pytest.mark.parametrize("case", VECTORS["cuped_mean"], ids=_ids("cuped_mean"))
def test_it_matches_gbstats_on_cuped_means(case):
    a, b = (stats.Moments(**s) for s in (case["a"], case["b"]))
    comparison, theta = stats.compare_cuped(a, b, proportion=False, alpha=case["alpha"])
    assert theta == pytest.approx(case["cuped_relative_main"]["theta"], rel=REL)
    _check(comparison.absolute, case["frequentist_absolute"])
    _check(comparison.relative, case["cuped_relative_main"])  # gbstats main, not 0.8.0
    sequential = stats.compare_sequential(comparison, alpha=case["alpha"], tuning=case["tuning"])
    _check(sequential.absolute, case["sequential_absolute"])


@pytest.mark.parametrize("case", VECTORS["cuped_proportion"], ids=_ids("cuped_proportion"))
def test_it_matches_gbstats_on_cuped_proportions_up_to_its_covariance_divisor(case):
    # gbstats takes p(1-p) for a 0/1 metric's variances but divides the covariance by n-1;
    # we divide all three by n, so that y = x leaves a variance of exactly 0, never below.
    # theta then differs by n/(n-1), which moves the results by under 1e-3 of their interval.
    a, b = (stats.Moments(**s) for s in (case["a"], case["b"]))
    comparison, theta = stats.compare_cuped(a, b, proportion=True, alpha=case["alpha"])
    n = a.n + b.n
    assert theta * n / (n - 1) == pytest.approx(case["cuped_relative_main"]["theta"], rel=1e-12)
    theirs = case["frequentist_absolute"]
    assert comparison.absolute.value == pytest.approx(theirs["expected"], rel=1e-3)
    assert [comparison.absolute.ci_low, comparison.absolute.ci_high] == pytest.approx(
        theirs["ci"], rel=1e-3
    )
    ci_width = theirs["ci"][1] - theirs["ci"][0]
    assert comparison.relative.value == pytest.approx(
        case["cuped_relative_main"]["expected"], abs=1e-3 * ci_width
    )


@pytest.mark.parametrize("case", VECTORS["srm"], ids=_ids("srm"))
def test_it_matches_gbstats_on_sample_ratio_mismatch(case):
    assert stats.srm_p_value(case["users"], case["weights"]) == pytest.approx(
        case["p_value"], rel=REL, abs=P_ABS
    )
