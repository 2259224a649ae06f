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

from advertisers.simulator import Incentive, World

# Gauss-Hermite nodes (probabilists') for E over the response noise eps ~ N(0, 1).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(9)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def oracle_gains(world: World, incentives: list[Incentive]) -> tuple[np.ndarray, np.ndarray]:
    """(gain_active [n], gain_revenue [n]) of each offer on its own, from the world's state."""
    if not incentives:
        return np.zeros(0), np.zeros(0)
    take_up = np.zeros(len(incentives))
    for node, weight in zip(_NODES, _WEIGHTS, strict=True):
        take_up += weight * world.response_probability(incentives, noise=float(node))
    ai = world.advertiser_index([i.advertiser_id for i in incentives], what="oracle offers")
    window = max(i.valid_days for i in incentives)
    p_active = 1.0 - np.prod(1.0 - world.active_probability(days=window), axis=1)  # [A]
    gain_active = take_up * (1.0 - p_active[ai])
    extra_spend = world.response_extra_spend(incentives)
    reward = np.array([i.reward for i in incentives], dtype=np.float64)
    gain_revenue = take_up * (extra_spend - reward)
    return gain_active, gain_revenue


class OracleScorer:
    """campaigns' OfferScorer with the world's true expected gains (module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self, candidates, offers) -> tuple[np.ndarray, np.ndarray]:
        n, k = offers.target.shape
        incentives = [
            Incentive(
                advertiser_id=candidates.advertiser_id[i],
                scenario=offers.scenario[j],
                kind=offers.kind[j],
                target=float(offers.target[i, j]),
                reward=float(offers.reward[i, j]),
                valid_days=int(offers.valid_days[j]),
            )
            for i in range(n)
            for j in range(k)
        ]
        gain_active, gain_revenue = oracle_gains(self.world, incentives)
        return gain_active.reshape(n, k), gain_revenue.reshape(n, k)
