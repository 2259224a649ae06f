"""The distribution heads against known distributions: calibrated P(0), covering intervals."""

from __future__ import annotations

import numpy as np
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


def test_it_calibrates_a_distorted_probability_and_an_interval_that_misses_zeros():
    rng = np.random.default_rng(2)
    n = 20000
    truth = rng.uniform(0.02, 0.98, n)
    inactive = rng.uniform(size=n) < truth
    distorted = torch.sigmoid(2.5 * torch.logit(torch.tensor(truth)) + 0.7).float()
    # Money with a point mass at zero (40%) that a q10 of 0.01 excludes, and a lognormal tail.
    spend = np.where(rng.uniform(size=n) < 0.4, 0.0, rng.lognormal(0.0, 1.0, n))
    target = torch.tensor(np.stack([spend, spend, spend], 1), dtype=torch.float32)
    quantiles = torch.tensor([0.01, 0.8, 2.0]).expand(n, 3, 3).clone()
    head = DistributionHead(SPEC, 2)
    before = decision_metrics.ece(inactive, distorted.numpy().astype(np.float64))
    head.fit_calibration(quantiles, distorted, target, torch.tensor(inactive))
    q, p = head.calibrated(quantiles, distorted)
    after = decision_metrics.ece(inactive, p.numpy().astype(np.float64))
    assert before > 0.1 and after < 0.01
    covered = ((spend >= q[:, 1, 0].numpy()) & (spend <= q[:, 1, 2].numpy())).mean()
    assert ((spend >= 0.01) & (spend <= 2.0)).mean() < 0.55  # the uncalibrated interval
    # Conformal: at least 80%. Every zero ties at one score, so the shift that covers them
    # also lifts the top end a little: 0.4 + 0.6 P(lognormal <= 2.02) = 0.855.
    assert 0.8 <= covered <= 0.87
    assert (q[spend == 0, 1, 0] == 0).all()
    assert torch.equal(q[:, 0], quantiles[:, 0])  # clicks: a count, left as it is
