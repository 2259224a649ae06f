"""The distribution heads against known distributions: calibrated P(0), covering intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from predictor import decision_metrics
from predictor.networks import InputSpec
from predictor.networks.distribution import (
    DistributionHead,
    ModelOutputs,
    distribution_loss,
    p_inactive,
)
from predictor.training import interval_bounds

SPEC = InputSpec(
    seq_len=2,
    behaviour_bins=(2,),
    performance_bins=(2,),
    n_scenario=1,
    profile_cardinalities=(2,),
    n_profile_num=0,
    tasks=("clicks", "expenditure", "active_days"),
)
# Two kinds of sample, told apart by a one-hot representation, each with known distributions:
# clicks and expenditure negative binomial (n, p), active days beta-binomial (7, alpha, beta).
NB = [(2.0, 0.25), (0.6, 0.1)]  # means 6 and 5.4, the second far more dispersed
BB = [(0.4, 0.8), (2.0, 0.5)]


def _draw(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N] kinds -> [N, 3] targets."""
    n, p = np.array(NB)[kind].T
    alpha, beta = np.array(BB)[kind].T
    days = rng.binomial(7, rng.beta(alpha, beta))
    return np.stack([rng.negative_binomial(n, p), rng.negative_binomial(n, p), days], 1)


def _fit_head(seed: int = 0) -> DistributionHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, 8000)
    target = torch.tensor(_draw(kind, rng), dtype=torch.float32)
    h = torch.nn.functional.one_hot(torch.tensor(kind), 2).float()[:, None, :].expand(-1, 3, -1)
    head = DistributionHead(SPEC, 2)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(600):
        quantiles, shape = head(h)
        outputs = ModelOutputs(rate=target, quantiles=quantiles, active_shape=shape)
        loss = distribution_loss(outputs, target, SPEC, head.active_index)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return head


def test_it_learns_the_known_zero_probability_and_intervals_that_cover_80_percent():
    head = _fit_head()
    rng = np.random.default_rng(1)
    kind = rng.integers(0, 2, 20000)
    fresh = _draw(kind, rng)
    h = torch.nn.functional.one_hot(torch.tensor(kind), 2).float()[:, None, :].expand(-1, 3, -1)
    with torch.no_grad():
        quantiles, shape = head(h)
        p_zero = p_inactive(shape, 7).numpy()
    quantiles = quantiles.numpy()

    for k, (alpha, beta) in enumerate(BB):
        known = stats.betabinom(7, alpha, beta).pmf(0)
        assert abs(p_zero[kind == k].mean() - known) < 0.02, (k, known)
        assert abs((fresh[kind == k, 2] == 0).mean() - p_zero[kind == k].mean()) < 0.03
    for task in (0, 1):
        for k, (n, p) in enumerate(NB):
            rows = kind == k
            true_low, true_high = stats.nbinom(n, p).ppf([0.1, 0.9])
            low, high = quantiles[rows, task, 0], quantiles[rows, task, 2]
            assert np.abs(low - true_low).max() < 0.1 and np.abs(high - true_high).max() < 0.1
            # As stored: a count's ends rounded (training.interval_bounds); a discrete
            # interval covers at least 80%, here P(1 <= Y <= 13) = 0.86, P(0 <= Y <= 15) = 0.90.
            ends = quantiles[rows][:, None, task].repeat(3, 1)  # [n, 3 tasks, 3]
            lo, hi = interval_bounds(ends, (1.0, 1.0, 1.0), ("clicks",) * 3)
            y = fresh[rows, task]
            coverage = ((y >= lo[:, 0]) & (y <= hi[:, 0])).mean()
            known = stats.nbinom(n, p).cdf(true_high) - stats.nbinom(n, p).cdf(true_low - 1)
            assert abs(coverage - known) < 0.015, (task, k, coverage, known)


def _two_scenarios(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Uncalibrated outputs for two scenarios (scenario feature -1 and +1), each distorted its
    own way: P(inactive) too sharp in one and too flat in the other; money with a point mass at
    zero (40% and 10%) that a q10 near 0.01 excludes; clicks negative binomial with a 10th-90th
    percentile band far too narrow."""
    group = rng.integers(0, 2, n)
    truth = rng.uniform(0.02, 0.98, n)
    logit = torch.logit(torch.tensor(truth))
    distorted = torch.where(
        torch.tensor(group == 0), torch.sigmoid(2.5 * logit + 0.7), torch.sigmoid(0.6 * logit - 0.5)
    ).float()
    zero = rng.uniform(size=n) < np.where(group == 0, 0.4, 0.1)
    spend = np.where(zero, 0.0, rng.lognormal(np.where(group == 0, 0.0, 1.0), 1.0))
    clicks = rng.negative_binomial(2.0, 0.25, n)  # mean 6
    jitter = rng.uniform(0.8, 1.25, n)  # per-sample predictions, as a model gives
    quantiles = torch.zeros(n, 3, 3)
    quantiles[:, 0] = torch.tensor(np.stack([4.0 * jitter, 5.0 * jitter, 7.0 * jitter], 1))
    quantiles[:, 1] = torch.tensor(np.stack([0.01 * jitter, 0.8 * jitter, 2.0 * jitter], 1))
    return {
        "group": torch.tensor(group),
        "scenario": torch.tensor(2.0 * group - 1.0, dtype=torch.float32)[:, None],
        "inactive": torch.tensor(rng.uniform(size=n) < truth),
        "p": distorted,
        "target": torch.tensor(np.stack([clicks, spend, np.zeros(n)], 1), dtype=torch.float32),
        "quantiles": quantiles,
    }


def _fitted(data: dict[str, torch.Tensor]) -> DistributionHead:
    head = DistributionHead(SPEC, 2)
    head.fit_calibration(
        data["quantiles"], data["p"], data["target"], data["inactive"], data["scenario"]
    )
    return head


def test_it_calibrates_each_scenario_by_its_own_distortion():
    rng = np.random.default_rng(2)
    head = _fitted(_two_scenarios(20000, rng))
    fresh = _two_scenarios(40000, rng)
    q, p = head.calibrated(fresh["quantiles"], fresh["p"], fresh["scenario"])
    y, group = fresh["inactive"].numpy(), fresh["group"].numpy()
    low, high = interval_bounds(q.numpy(), (1.0,) * 3, SPEC.tasks)
    raw_low, raw_high = interval_bounds(fresh["quantiles"].numpy(), (1.0,) * 3, SPEC.tasks)
    for g in (0, 1):
        rows = group == g
        before = decision_metrics.ece(y[rows], fresh["p"].numpy()[rows].astype(np.float64))
        after = decision_metrics.ece(y[rows], p.numpy()[rows].astype(np.float64))
        floor = decision_metrics.ece_floor(p.numpy()[rows].astype(np.float64))
        assert before > 0.05 and after < floor + 0.008, (g, before, after, floor)
        for task in (0, 1):  # clicks (a count: whole-count ends), expenditure
            actual = fresh["target"].numpy()[rows, task]
            raw = ((actual >= raw_low[rows, task]) & (actual <= raw_high[rows, task])).mean()
            covered = ((actual >= low[rows, task]) & (actual <= high[rows, task])).mean()
            assert raw < 0.6 and 0.77 <= covered <= 0.83, (g, task, raw, covered)


def test_it_gives_an_unseen_scenario_no_map_beyond_the_known_ones():
    rng = np.random.default_rng(3)
    head = _fitted(_two_scenarios(4000, rng))
    fresh = _two_scenarios(1000, rng)
    known, far = torch.ones(1000, 1), torch.full((1000, 1), 50.0)
    q_known, p_known = head.calibrated(fresh["quantiles"], fresh["p"], known)
    q_far, p_far = head.calibrated(fresh["quantiles"], fresh["p"], far)
    assert torch.allclose(p_far, p_known) and torch.allclose(q_far, q_known)
    assert not torch.allclose(p_known, head.calibrated(fresh["quantiles"], fresh["p"], -known)[1])


def test_it_starts_as_the_identity_and_stays_so_without_validation_samples():
    head = DistributionHead(SPEC, 2)
    data = _two_scenarios(50, np.random.default_rng(4))
    for _ in range(2):
        q, p = head.calibrated(data["quantiles"], data["p"], data["scenario"])
        assert torch.allclose(p, data["p"], atol=1e-6)
        assert torch.allclose(q, data["quantiles"], rtol=1e-5, atol=1e-6)
        empty = {k: v[:0] for k, v in data.items()}
        head.fit_calibration(
            empty["quantiles"], empty["p"], empty["target"], empty["inactive"], empty["scenario"]
        )


def test_it_conditions_on_what_the_scenario_is_not_on_its_state_at_the_as_of_date():
    spec = InputSpec(**{**SPEC.to_dict(), "n_scenario": 2, "n_scenario_static": 1})
    rng = np.random.default_rng(5)
    data = _two_scenarios(4000, rng)
    state = torch.tensor(rng.normal(size=(4000, 1)), dtype=torch.float32)  # e.g. the age
    scenario = torch.cat([data["scenario"], state], 1)
    head = DistributionHead(spec, 2)
    head.fit_calibration(data["quantiles"], data["p"], data["target"], data["inactive"], scenario)
    later = torch.cat([data["scenario"], state + 3.0], 1)  # the same scenarios, weeks older
    q_now, p_now = head.calibrated(data["quantiles"], data["p"], scenario)
    q_later, p_later = head.calibrated(data["quantiles"], data["p"], later)
    assert torch.equal(p_now, p_later) and torch.equal(q_now, q_later)
    assert head.platt.shape == (2, 2)  # [1, kind]: the state column has no coefficient
    with pytest.raises(ValueError, match="n_scenario_static must be between 0 and n_scenario=2"):
        InputSpec(**{**SPEC.to_dict(), "n_scenario": 2, "n_scenario_static": 3})
