"""From per-advertiser metric arrays to the report's rows: no Django, no SQL.

`AdvertiserMetrics` holds one aligned numpy array per measure (one element per assigned
advertiser); every function here is vectorised over them. Populations:

- `targeted`: the advertisers each arm's model chose (the paper's comparison);
- `itt`: the whole arms, intention to treat (the unbiased comparison).

Each metric is compared unadjusted and CUPED-adjusted; with a winsorisation quantile set, the
money and count metrics are also shown capped. Holm's correction runs across the metrics of one
(population, adjustment, capping) family, so a row's `significant` accounts for the others.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from abtest import stats

CONTROL, TREATMENT, HOLDOUT = 1, 2, 0
GROUP_NAMES = {HOLDOUT: "holdout", CONTROL: "control", TREATMENT: "treatment"}
POPULATIONS = ("targeted", "itt")


@dataclass(frozen=True)
class AdvertiserMetrics:
    """One element per assigned advertiser; money in currency units (from integer cents)."""

    group: np.ndarray  # int: 0 holdout, 1 control, 2 treatment
    targeted: np.ndarray  # bool
    spend: np.ndarray
    clicks: np.ndarray
    active_days: np.ndarray
    pre_spend: np.ndarray
    pre_clicks: np.ndarray
    pre_active_days: np.ndarray
    reward: np.ndarray
    first_active_day: np.ndarray  # int: first window day with spend, -1 when none

    @property
    def active(self) -> np.ndarray:
        return (self.active_days > 0).astype(float)

    @property
    def pre_active(self) -> np.ndarray:
        return (self.pre_active_days > 0).astype(float)


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    proportion: bool
    value: Callable[[AdvertiserMetrics], np.ndarray]
    pre: Callable[[AdvertiserMetrics], np.ndarray] | None
    cappable: bool  # heavy-tailed: winsorisation applies
    primary: bool = False


METRICS: tuple[MetricDef, ...] = (
    MetricDef("active_rate", "Active rate", True, lambda m: m.active, lambda m: m.pre_active,
              cappable=False, primary=True),
    MetricDef("arpu", "ARPU", False, lambda m: m.spend, lambda m: m.pre_spend,
              cappable=True, primary=True),
    MetricDef("clicks", "Clicks per advertiser", False, lambda m: m.clicks, lambda m: m.pre_clicks,
              cappable=True),
    MetricDef("active_days", "Active days", False, lambda m: m.active_days,
              lambda m: m.pre_active_days, cappable=False),
    MetricDef("reward_cost", "Reward cost per advertiser", False, lambda m: m.reward, None,
              cappable=False),
    MetricDef("net_arpu", "Net ARPU after rewards", False, lambda m: m.spend - m.reward,
              lambda m: m.pre_spend, cappable=True),
)  # fmt: skip


def _clean(value: float | None) -> float | None:
    """JSON has no NaN or infinity: undefined figures become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _estimate_dict(estimate: stats.Estimate | None) -> dict | None:
    if estimate is None:
        return None
    return {
        "value": _clean(estimate.value),
        "ci_low": _clean(estimate.ci_low),
        "ci_high": _clean(estimate.ci_high),
        "p_value": _clean(estimate.p_value),
    }


def _population_masks(m: AdvertiserMetrics, population: str) -> tuple[np.ndarray, np.ndarray]:
    labels = _arm_labels(m, population)
    return labels == CONTROL, labels == TREATMENT


def _arm_labels(m: AdvertiserMetrics, population: str) -> np.ndarray:
    """Per advertiser: 1 control, 2 treatment, 0 outside the population (holdout included)."""
    if population == "targeted":
        return np.where(m.targeted, m.group, HOLDOUT)
    return m.group


def _arm_moments(
    labels: np.ndarray, y: np.ndarray, x: np.ndarray | None
) -> tuple[stats.Moments, stats.Moments]:
    """Sufficient statistics of both arms in one bincount per sum (no per-arm copies)."""
    x = np.zeros_like(y) if x is None else x
    n = np.bincount(labels, minlength=3)

    def sums(weights: np.ndarray) -> np.ndarray:
        return np.bincount(labels, weights=weights, minlength=3)

    sum_y, sum_y2, sum_x, sum_x2, sum_xy = (sums(w) for w in (y, y * y, x, x * x, x * y))
    return tuple(
        stats.Moments(n=int(n[arm]), sum_y=float(sum_y[arm]), sum_y2=float(sum_y2[arm]),
                      sum_x=float(sum_x[arm]), sum_x2=float(sum_x2[arm]),
                      sum_xy=float(sum_xy[arm]))
        for arm in (CONTROL, TREATMENT)
    )  # type: ignore[return-value]  # fmt: skip


def _capped(values: np.ndarray, in_test: np.ndarray, quantile: float) -> np.ndarray:
    """Values clipped at the pooled quantiles of the advertisers under test."""
    limits = stats.winsor_limits(values[in_test], quantile=quantile)
    return stats.winsorise(values, limits=limits)


def _row(
    metric: MetricDef,
    moments: tuple[stats.Moments, stats.Moments],
    *,
    cuped: bool,
    alpha: float,
) -> dict:
    moments_a, moments_b = moments
    theta = None
    if cuped:
        comparison, theta = stats.compare_cuped(
            moments_a, moments_b, proportion=metric.proportion, alpha=alpha, metric=metric.key
        )
    else:
        a_sum = moments_a.summary(proportion=metric.proportion)
        b_sum = moments_b.summary(proportion=metric.proportion)
        comparison = stats.compare(a_sum, b_sum, alpha=alpha)
    # The relative lift is the headline (as in gbstats); absolute when the control mean is 0.
    headline = comparison.relative or comparison.absolute
    return {
        "metric": metric.key,
        "label": metric.label,
        "type": "proportion" if metric.proportion else "mean",
        "primary": metric.primary,
        "control": {"n": comparison.control.n, "mean": _clean(comparison.control.mean)},
        "treatment": {"n": comparison.treatment.n, "mean": _clean(comparison.treatment.mean)},
        "absolute": _estimate_dict(comparison.absolute),
        "relative": _estimate_dict(comparison.relative),
        "p_value": _clean(headline.p_value),
        "theta": _clean(theta),
        "not_estimable": comparison.not_estimable,
        "relative_not_estimable": comparison.relative_not_estimable,
    }


def _population_moments(
    m: AdvertiserMetrics, population: str, winsor_quantile: float | None
) -> dict[tuple[str, bool], tuple[stats.Moments, stats.Moments]]:
    """(metric, capped) -> both arms' moments; capping limits pooled over the population."""
    labels = _arm_labels(m, population)
    in_test = labels != HOLDOUT
    out = {}
    for metric in METRICS:
        y = metric.value(m)
        x = metric.pre(m) if metric.pre else None
        out[(metric.key, False)] = _arm_moments(labels, y, x)
        if winsor_quantile and metric.cappable:
            capped_x = None if x is None else _capped(x, in_test, winsor_quantile)
            out[(metric.key, True)] = _arm_moments(
                labels, _capped(y, in_test, winsor_quantile), capped_x
            )
    return out


def report_rows(m: AdvertiserMetrics, *, alpha: float, winsor_quantile: float | None) -> list[dict]:
    """Every (population, capping, adjustment, metric) comparison, Holm-corrected per family."""
    rows: list[dict] = []
    cappings = [False] + ([True] if winsor_quantile else [])
    for population in POPULATIONS:
        moments = _population_moments(m, population, winsor_quantile)
        for capped in cappings:
            for cuped in (False, True):
                family = [
                    _row(metric, moments[(metric.key, capped)], cuped=cuped, alpha=alpha)
                    for metric in METRICS
                    if (not capped or metric.cappable) and (not cuped or metric.pre)
                ]
                p_values = [np.nan if r["p_value"] is None else r["p_value"] for r in family]
                adjusted = stats.holm(p_values)
                fdr = stats.benjamini_hochberg(p_values)
                for row, p_holm, p_bh in zip(family, adjusted, fdr, strict=True):
                    row.update(
                        population=population,
                        adjustment="cuped" if cuped else "none",
                        capped=capped,
                        p_value_holm=_clean(p_holm),
                        p_value_bh=_clean(p_bh),
                        significant=bool(np.isfinite(p_holm) and p_holm < alpha),
                    )
                rows.extend(family)
    return rows


def _money(cents: float) -> str:
    """Integer cents as a decimal string (money is never a float in the report)."""
    cents = round(cents)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def group_totals(m: AdvertiserMetrics) -> dict[str, dict]:
    """Size, targets, active advertisers and money totals per group (holdout only if used)."""
    totals = {}
    for code, name in GROUP_NAMES.items():
        mask = m.group == code
        if code == HOLDOUT and not mask.any():
            continue
        spend_cents = float(np.rint(m.spend[mask] * 100).sum())
        reward_cents = float(np.rint(m.reward[mask] * 100).sum())
        totals[name] = {
            "assigned": int(mask.sum()),
            "targeted": int((mask & m.targeted).sum()),
            "active": int((m.active_days[mask] > 0).sum()),
            "expenditure": _money(spend_cents),
            "reward_cost": _money(reward_cents),
            "net_expenditure": _money(spend_cents - reward_cents),
        }
    return totals


def _ratio(numerator: float, denominator: float) -> float | None:
    """Cost per incremental active advertiser: undefined unless actives actually increased."""
    if not np.isfinite(denominator) or denominator <= 0:
        return None
    return _clean(numerator / denominator)


def cost_per_incremental_active(m: AdvertiserMetrics) -> dict:
    """Extra reward spent per extra active advertiser.

    Treatment over control per population; each arm over the no-incentive holdout when there is
    one (the total cost of an arm's incentives per advertiser they activated). Null when the
    active rate did not increase.
    """
    out: dict[str, float | None] = {}
    for population in POPULATIONS:
        a, b = _population_masks(m, population)
        if a.any() and b.any():
            out[f"treatment_vs_control_{population}"] = _ratio(
                m.reward[b].mean() - m.reward[a].mean(), m.active[b].mean() - m.active[a].mean()
            )
    holdout = m.group == HOLDOUT
    if holdout.any():
        for code in (CONTROL, TREATMENT):
            arm = m.group == code
            if arm.any():
                out[f"{GROUP_NAMES[code]}_vs_holdout"] = _ratio(
                    m.reward[arm].mean(), m.active[arm].mean() - m.active[holdout].mean()
                )
    return out


def daily_series(m: AdvertiserMetrics, spend_rows: np.ndarray, n_days: int) -> list[dict]:
    """Cumulative active rate and ARPU per group and population over the evaluation days.

    `spend_rows` are (group, targeted, day number, spend) aggregates. Day d's figures count
    everything from the first evaluation day through d.
    """
    series = []
    for code, name in GROUP_NAMES.items():
        for population in POPULATIONS:
            members = m.group == code
            if population == "targeted":
                members &= m.targeted
            n = int(members.sum())
            if n == 0:
                continue
            firsts = m.first_active_day[members]
            new_active = np.bincount(firsts[firsts >= 0], minlength=n_days)[:n_days]
            rows = spend_rows[spend_rows[:, 0] == code]
            if population == "targeted":
                rows = rows[rows[:, 1] == 1]
            day_spend = np.bincount(rows[:, 2].astype(np.int64), weights=rows[:, 3],
                                    minlength=n_days)[:n_days]  # fmt: skip
            series.append(
                {
                    "group": name,
                    "population": population,
                    "n": n,
                    "active_rate": (np.cumsum(new_active) / n).tolist(),
                    "arpu": (np.cumsum(day_spend) / n).tolist(),
                }
            )
    return series


CSV_COLUMNS = (
    "metric", "population", "adjustment", "capped", "control_n", "control_mean", "treatment_n",
    "treatment_mean", "absolute_lift", "absolute_ci_low", "absolute_ci_high", "relative_lift",
    "relative_ci_low", "relative_ci_high", "p_value", "p_value_holm", "significant",
)  # fmt: skip


def report_csv(report: dict) -> str:
    """The summary table as CSV (one row per comparison)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in report["rows"]:
        absolute = row["absolute"] or {}
        relative = row["relative"] or {}
        writer.writerow(
            [
                row["metric"], row["population"], row["adjustment"], row["capped"],
                row["control"]["n"], row["control"]["mean"], row["treatment"]["n"],
                row["treatment"]["mean"], absolute.get("value"), absolute.get("ci_low"),
                absolute.get("ci_high"), relative.get("value"), relative.get("ci_low"),
                relative.get("ci_high"), row["p_value"], row["p_value_holm"], row["significant"],
            ]
        )  # fmt: skip
    return out.getvalue()
