"""Benchmark: uplift allocation (campaigns.allocation) against its references, in one run.

    python bench/allocation.py [--candidates 100000] [--offers 12] [--repeats 3] [--exact 2000]

1. speed: the Lagrangian multiple-choice knapsack on `--candidates` x `--offers` random gains
   and costs, median of `--repeats`, against greedy by value-per-cost over every (candidate,
   offer) with one offer per candidate (the simple reference a practitioner would write);
2. quality: on a `--exact`-candidate subset, its value against the exact optimum of the 0/1
   problem from scipy's MILP solver (HiGHS), and against greedy by risk (the most at-risk
   first, the default offer) — the policy "least predicted activity" is.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array, hstack, identity, kron

from campaigns.allocation import NONE, allocate, greedy_by_risk


def problem(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    responsiveness = rng.beta(1.2, 4.0, n)  # who responds at all
    risk = rng.uniform(0, 1, n)  # unrelated to responsiveness: risk is not uplift
    reward = np.tile(np.linspace(5, 60, k), (n, 1)) * rng.uniform(0.7, 1.3, (n, 1))
    value = responsiveness[:, None] * (1 - np.exp(-reward / 30.0))
    return value, reward, risk, float(0.05 * n * 30)


def greedy_ratio(value: np.ndarray, cost: np.ndarray, budget: float) -> float:
    order = np.argsort(-(value / cost), axis=None, kind="stable")
    rows, cols = np.unravel_index(order, value.shape)
    taken = np.zeros(len(value), bool)
    spent = total = 0.0
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):  # the reference's own loop
        if taken[r] or spent + cost[r, c] > budget:
            continue
        taken[r], spent, total = True, spent + cost[r, c], total + value[r, c]
    return total


def exact(value: np.ndarray, cost: np.ndarray, budget: float) -> float:
    n, k = value.shape
    one_per = kron(identity(n, format="csr"), csr_array(np.ones((1, k))))
    constraints = [
        LinearConstraint(csr_array(cost.reshape(1, -1)), -np.inf, budget),
        LinearConstraint(hstack([one_per]), -np.inf, np.ones(n)),
    ]
    res = milp(
        -value.ravel(),
        constraints=constraints,
        integrality=np.ones(n * k),
        bounds=Bounds(0, 1),
        options={"time_limit": 60},
    )
    return float(-res.fun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact", type=int, default=2000)
    args = parser.parse_args()

    value, cost, _, budget = problem(args.candidates, args.offers, 0)
    ours, ref = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = allocate(value, cost, budget)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref_value = greedy_ratio(value, cost, budget)
        ref.append(time.perf_counter() - t0)
    print(f"{args.candidates:,} candidates x {args.offers} offers, budget {budget:,.0f}:")
    print(f"  allocate      {statistics.median(ours):7.3f} s  value {result.value:,.1f}")
    print(f"  greedy ratio  {statistics.median(ref):7.3f} s  value {ref_value:,.1f}")
    print(f"  speed ratio (greedy / ours): {statistics.median(ref) / statistics.median(ours):.1f}x")

    value, cost, risk, budget = problem(args.exact, args.offers, 1)
    found = allocate(value, cost, budget)
    optimum = exact(value, cost, budget)
    default = args.offers // 2
    chosen = greedy_by_risk(np.argsort(-risk), cost[:, default], budget)
    by_risk = float(value[chosen, default].sum())
    assert (found.choice >= NONE).all()
    print(
        f"{args.exact:,} candidates: allocate {found.value:.2f}, exact (MILP) {optimum:.2f} "
        f"-> {found.value / optimum:.4f} of the optimum; greedy by risk {by_risk:.2f} "
        f"-> allocation / greedy-by-risk {found.value / by_risk:.2f}x"
    )


if __name__ == "__main__":
    main()
