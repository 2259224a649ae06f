"""Budget allocation: at most one offer (or none) per candidate, the most expected value under
the budget. Pure numpy, no Django.

The problem is a multiple-choice knapsack: candidates i = 1..N, offers k = 1..K with expected
value v_ik (incremental active probability or net revenue) and cost c_ik (the reward reserved),
    max sum_ik v_ik x_ik  s.t.  sum_ik c_ik x_ik <= B,  sum_k x_ik <= 1,  x_ik in {0, 1}.

Lagrangian relaxation: for a multiplier lam >= 0 every candidate independently takes
    k*(lam) = argmax_k (v_ik - lam c_ik)  if that is > 0, else nothing,
and the spend S(lam) falls as lam grows. Bisection finds the smallest lam with S(lam) <= B
(the relaxation's optimum is within one candidate's value of the true one). The budget the
rounding leaves is then filled greedily: candidates (with or without an offer) upgrade to the
offer with the best extra value per extra cost while it fits. O(N K) per bisection step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BISECTION_STEPS = 60
NONE = -1


@dataclass(frozen=True)
class Allocation:
    choice: np.ndarray  # [N] int64: the offer index per candidate, NONE for no offer
    spent: float
    value: float
    multiplier: float  # lam: the value of one more unit of budget at the margin

    @property
    def chosen(self) -> np.ndarray:
        """Indices of the candidates given an offer."""
        return np.flatnonzero(self.choice != NONE)


def _check(value: np.ndarray, cost: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    value = np.asarray(value, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if value.ndim != 2 or value.shape != cost.shape:
        raise ValueError(
            f"allocate: value and cost must both be [candidates, offers]; got {value.shape} "
            f"and {cost.shape}."
        )
    if not np.isfinite(value).all() or not np.isfinite(cost).all():
        raise ValueError("allocate: value and cost must be finite.")
    if (cost <= 0).any():
        raise ValueError("allocate: every offer must cost more than 0.")
    if not np.isfinite(budget) or budget < 0:
        raise ValueError(f"allocate: budget must be a finite number >= 0, got {budget}.")
    return value, cost


def _pick(value: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    score = value - lam * cost  # [N, K]
    best = score.argmax(axis=1)
    best_score = score[np.arange(len(score)), best]
    return np.where(best_score > 0, best, NONE)


def _spend(cost: np.ndarray, choice: np.ndarray) -> float:
    rows = np.flatnonzero(choice != NONE)
    return float(cost[rows, choice[rows]].sum())


def allocate(value: np.ndarray, cost: np.ndarray, budget: float) -> Allocation:
    """The offer per candidate (module docstring); offers of value <= 0 are never chosen."""
    value, cost = _check(value, cost, budget)
    n = len(value)
    if n == 0 or value.shape[1] == 0:
        return Allocation(np.full(n, NONE, dtype=np.int64), 0.0, 0.0, 0.0)
    choice = _pick(value, cost, 0.0)
    lam = 0.0
    if _spend(cost, choice) > budget:
        lo, hi = 0.0, float((np.maximum(value, 0) / cost).max()) + 1.0
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if _spend(cost, _pick(value, cost, mid)) > budget:
                lo = mid
            else:
                hi = mid
        lam = hi
        choice = _pick(value, cost, hi)
        choice = _fill(value, cost, choice, budget - _spend(cost, choice))
    rows = np.flatnonzero(choice != NONE)
    return Allocation(
        choice=choice.astype(np.int64),
        spent=float(cost[rows, choice[rows]].sum()),
        value=float(value[rows, choice[rows]].sum()),
        multiplier=lam,
    )


def _fill(value: np.ndarray, cost: np.ndarray, choice: np.ndarray, left: float) -> np.ndarray:
    """Spend what the relaxation left: upgrades by extra value per extra cost while they fit.

    Each round takes, per candidate, its best upgrade (more value, more cost), then the rounds'
    upgrades in order of efficiency while they fit; a few rounds suffice in practice.
    """
    choice = choice.copy()
    rows = np.arange(len(value))
    for _ in range(4):
        has = choice != NONE
        cur_v = np.where(has, value[rows, np.maximum(choice, 0)], 0.0)
        cur_c = np.where(has, cost[rows, np.maximum(choice, 0)], 0.0)
        extra_v = value - cur_v[:, None]
        extra_c = cost - cur_c[:, None]
        ok = (extra_v > 0) & (extra_c > 0) & (extra_c <= left)
        if not ok.any():
            break
        ratio = np.where(ok, extra_v / np.where(ok, extra_c, 1.0), -np.inf)
        best = ratio.argmax(axis=1)
        cand = np.flatnonzero(np.isfinite(ratio[rows, best]))
        order = cand[np.argsort(-ratio[cand, best[cand]], kind="stable")]
        step_cost = extra_c[order, best[order]]
        taken = np.cumsum(step_cost) <= left
        if not taken.any():
            break
        take = order[taken]
        choice[take] = best[take]
        left -= float(step_cost[taken].sum())
    return choice


def greedy_by_risk(order: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """The baseline: candidates in `order` (most at risk first) get their default offer
    (cost [N]) while it fits; returns the chosen candidates' indices."""
    order = np.asarray(order, dtype=np.int64)
    spent = np.cumsum(np.asarray(cost, dtype=np.float64)[order])
    return order[spent <= budget]
