"""k-arm figures beyond the pairwise comparisons: what each arm's incentives bought.

Pure numpy/scipy over `analysis.AdvertiserMetrics`, no Django. The reference is the no-task
group: a randomised arm with targeting "none" when the experiment has one, else the
experiment's global holdout. Both are randomised out of the same population as the arms, so a
difference of means against them is an unbiased estimate of the arm's total effect
(intention to treat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from abtest.analysis import HOLDOUT, AdvertiserMetrics

PER_BUDGET = 1000.0  # effects are shown per 1,000 of reward spent


def _interval(value: np.ndarray, se: np.ndarray, z: float) -> list[dict]:
    """Normal-approximation intervals, one dict per element; null where undefined."""
    out = []
    for v, s in zip(value.tolist(), se.tolist(), strict=True):
        if not (math.isfinite(v) and math.isfinite(s)):
            out.append({"value": v if math.isfinite(v) else None, "se": None, "ci_low": None,
                        "ci_high": None})  # fmt: skip
            continue
        out.append({"value": v, "se": s, "ci_low": v - z * s, "ci_high": v + z * s})
    return out


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _money(cents: float) -> str:
    cents = round(cents)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def incremental_vs_no_task(
    m: AdvertiserMetrics, *, reference: int, level: float = 0.95, budget: float = 0.0
) -> dict:
    """Per arm: incremental active advertisers and net revenue against the no-task group
    `reference` (a group code: a no-task arm, or 0 for the holdout), in total, per 1,000
    of reward spent and, when the experiment gives every arm the same `budget` (> 0), per
    1,000 of that budget, each with a `level` confidence interval.

    For arm g with n_g advertisers against the reference r, with y the per-advertiser value
    (a = 1 if active in the window, or net revenue v = expenditure - reward) and c the
    per-advertiser reward spent:

    - difference of means D = mean_g(y) - mean_r(y), Var(D) = s2_g/n_g + s2_r/n_r
      (s2 = p(1-p) for the active indicator, the n-1 sample variance for net revenue);
    - incremental total = n_g D, se = n_g sqrt(Var(D)) (the effect scaled to the arm's size);
    - per 1,000 of reward: R = 1000 D / mean_g(c) (= 1000 n_g D / total reward of arm g), by
      the delta method with the arm's spend random too:
      Var(R) = 1000^2 [Var(D)/c^2 + D^2 Var(c)/c^4 - 2 D Cov(D, c)/c^3], c = mean_g(c),
      Var(c) = s2_c/n_g, Cov(D, c) = cov_g(y, c)/n_g (the reference's mean is independent
      of arm g's rewards);
    - per 1,000 of budget: 1000 n_g D / budget, se 1000 n_g sqrt(Var(D)) / budget (the
      budget is fixed in advance, so only D is random): the figure to compare arms by, since
      an arm that leaves budget unspent is charged for it;
    - interval: estimate +- z se with z the normal quantile at (1 + level) / 2.

    Per-1,000 figures are null, with `not_estimable` giving the reason, when the arm spent
    nothing.
    """
    groups = m.group.astype(np.int64)
    k = m.n_groups
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    active = m.active
    net = m.spend - m.reward
    reward = m.reward

    def sums(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(groups, weights=weights, minlength=k).astype(float)

    n = sums()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a, mean_v, mean_c = sums(active) / n, sums(net) / n, sums(reward) / n
        var_a = mean_a * (1.0 - mean_a)  # proportion convention: no Bessel correction
        dof = n - 1.0
        var_v = (sums(net * net) - n * mean_v**2) / dof
        var_c = (sums(reward * reward) - n * mean_c**2) / dof
        cov_ac = (sums(active * reward) - n * mean_a * mean_c) / dof
        cov_vc = (sums(net * reward) - n * mean_v * mean_c) / dof

    arms = np.array([g for g in range(1, k) if g != reference], dtype=np.int64)
    r = reference
    sections = {}
    for name, mean, var, cov in (
        ("active", mean_a, var_a, cov_ac),
        ("net_revenue", mean_v, np.maximum(var_v, 0.0), cov_vc),
    ):
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = mean[arms] - mean[r]
            var_diff = var[arms] / n[arms] + var[r] / n[r]
            c = mean_c[arms]
            var_cbar = np.maximum(var_c[arms], 0.0) / n[arms]
            cov_dc = cov[arms] / n[arms]
            per = PER_BUDGET * diff / c
            var_per = PER_BUDGET**2 * (
                var_diff / c**2 + diff**2 * var_cbar / c**4 - 2.0 * diff * cov_dc / c**3
            )
        sections[name] = (
            _interval(n[arms] * diff, n[arms] * np.sqrt(var_diff), z),
            _interval(np.where(c > 0, per, np.nan), np.sqrt(np.maximum(var_per, 0.0)), z),
        )
    spent_cents = np.bincount(groups, weights=np.rint(reward * 100), minlength=k)
    rows = []
    for i, g in enumerate(arms.tolist()):
        spent = float(spent_cents[g])
        row = {
            "arm": m.group_name(g),
            "n": int(n[g]),
            "reward_spent": _money(spent),
            "incremental_active": sections["active"][0][i],
            "incremental_net_revenue": sections["net_revenue"][0][i],
            "incremental_active_per_1000": sections["active"][1][i] if spent > 0 else None,
            "incremental_net_revenue_per_1000": (
                sections["net_revenue"][1][i] if spent > 0 else None
            ),
            "not_estimable": None
            if spent > 0
            else "no reward spent in this arm: nothing to divide the effect by",
        }
        if budget > 0:
            total = sections["active"][0][i]
            row["incremental_active_per_1000_budget"] = _interval(
                np.array([_nan(total["value"]) * PER_BUDGET / budget]),
                np.array([_nan(total["se"]) * PER_BUDGET / budget]),
                z,
            )[0]
        rows.append(row)
    return {
        "reference": m.group_name(reference),
        "reference_kind": "holdout" if reference == HOLDOUT else "no-task arm",
        "n_reference": int(n[reference]),
        "level": level,
        "per_budget": PER_BUDGET,
        "budget_per_arm": budget if budget > 0 else None,
        "method": "difference of means against the no-task group scaled by the arm's size; "
        "per 1,000 of reward spent by the delta method (spend random); per 1,000 of the "
        "budget each arm was given (fixed); normal intervals",
        "arms": rows,
    }


def no_task_reference(m: AdvertiserMetrics, no_task_codes: Sequence[int]) -> int | None:
    """The group to measure increments against: the first no-task arm with members, else the
    holdout when it has members, else None (no section)."""
    counts = np.bincount(m.group.astype(np.int64), minlength=m.n_groups)
    for code in no_task_codes:
        if counts[code] > 0:
            return int(code)
    return HOLDOUT if counts[HOLDOUT] > 0 else None
