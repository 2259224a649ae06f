"""The simulator's oracle: the upper bound of any targeting policy in the lab.

It knows what no model can: each advertiser's latent state, hence the true probability that an
offer is taken up (the simulator's incentive-response formula, averaged over its per-task noise)
and the counterfactual activity without a task. Its expected gains per (candidate, offer) feed
the same multiple-choice knapsack as the uplift policy, so the gap between the two arms is the
cost of not knowing the world, not of a different allocator.

Expected gain in P(active in the window) of an offer:
    gain = P(take up) x (P(active | took it up) - P(active | no task)),
with P(active | took it up) ~ 1 (a responder is active on most days of the window,
simulator docstring "Incentive response") and P(active | no task) the simulator's own
`active_probability` combined over scenarios as 1 - prod_k (1 - p_k).
Expected gain in net revenue: P(take up) x (expected extra spend - reward), where a responder
spends about the target (spend tasks), the target x cpc (click tasks) or its usual daily spend
on the extra active days (day tasks), above what it would spend anyway.
"""

from __future__ import annotations

import numpy as np

from advertisers.simulator import IncentiveBatch, Incentives, World

# Gauss-Hermite nodes (probabilists') for E over the response noise eps ~ N(0, 1).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(9)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def oracle_gains(world: World, incentives: Incentives) -> tuple[np.ndarray, np.ndarray]:
    """(gain_active [n], gain_revenue [n]) of each offer on its own, from the world's state."""
    if not len(incentives):
        return np.zeros(0), np.zeros(0)
    batch = incentives if isinstance(incentives, IncentiveBatch) else IncentiveBatch.of(incentives)
    take_up = _WEIGHTS @ world.response_probability(batch, noise=_NODES)  # [9] @ [9, n]
    ai = world.advertiser_index(batch.advertiser_id, what="oracle offers")
    window = int(batch.valid_days.max())
    p_active = 1.0 - np.prod(1.0 - world.active_probability(days=window), axis=1)  # [A]
    gain_active = take_up * (1.0 - p_active[ai])
    extra_spend = world.response_extra_spend(batch)
    reward = batch.reward.astype(np.float64)
    gain_revenue = take_up * (extra_spend - reward)
    return gain_active, gain_revenue


class OracleScorer:
    """campaigns' OfferScorer with the world's true expected gains (module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self, candidates, offers) -> tuple[np.ndarray, np.ndarray]:
        n, k = offers.target.shape
        batch = IncentiveBatch(  # row i * k + j: candidate i, offer j
            advertiser_id=np.repeat(np.asarray(candidates.advertiser_id, dtype=str), k),
            scenario=np.tile(np.array([s or "" for s in offers.scenario], dtype=str), n),
            kind=np.tile(np.asarray(offers.kind, dtype=str), n),
            target=np.asarray(offers.target, dtype=np.float64).ravel(),
            reward=np.asarray(offers.reward, dtype=np.float64).ravel(),
            valid_days=np.tile(np.asarray(offers.valid_days, dtype=np.int64), n),
        )
        gain_active, gain_revenue = oracle_gains(self.world, batch)
        return gain_active.reshape(n, k), gain_revenue.reshape(n, k)
