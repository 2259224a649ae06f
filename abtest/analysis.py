"""From per-advertiser metric arrays to the report's rows: no Django, no SQL.

`AdvertiserMetrics` holds one aligned numpy array per measure (one element per assigned
advertiser); every function here is vectorised over them. Group codes: 0 is the experiment's
holdout, k + 1 is arm k in hash-range order (so 1 is always the control, 2.. the treatments).
Populations:

- `targeted`: the advertisers each arm's model chose (the paper's comparison);
- `itt`: the whole arms, intention to treat (the unbiased comparison).

Every treatment arm is compared with the control for every metric, unadjusted and
CUPED-adjusted; with a winsorisation quantile set, the money and count metrics are also shown
capped. Holm's correction runs within one (population, adjustment, capping) block over all
treatment arms x metrics, with the primary metrics (active rate, ARPU) as one family (the
decision) and the secondary metrics as another, so a row's `significant` accounts for every
other arm and metric of its family.
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
HOLDOUT_NAME = "holdout"
POPULATIONS = ("targeted", "itt")
# The row a verdict reads: whole arms (unbiased), CUPED-adjusted (the most power), uncapped.
DECISION_ROW = {"population": "itt", "adjustment": "cuped", "capped": False}


@dataclass(frozen=True)
class AdvertiserMetrics:
    """One element per assigned advertiser; money in currency units (from integer cents)."""

    group: np.ndarray  # int: 0 holdout, k + 1 for arm_names[k] (1 is the control)
    targeted: np.ndarray  # bool
    spend: np.ndarray
    clicks: np.ndarray
    active_days: np.ndarray
    pre_spend: np.ndarray
    pre_clicks: np.ndarray
    pre_active_days: np.ndarray
    reward: np.ndarray
    first_active_day: np.ndarray  # int: first window day with spend, -1 when none
    arm_names: tuple[str, ...] = ("control", "treatment")

    @property
    def active(self) -> np.ndarray:
        return (self.active_days > 0).astype(float)

    @property
    def pre_active(self) -> np.ndarray:
        return (self.pre_active_days > 0).astype(float)

    @property
    def n_groups(self) -> int:
        """Group codes run from 0 (holdout) to len(arm_names)."""
        return len(self.arm_names) + 1

    def group_name(self, code: int) -> str:
        return HOLDOUT_NAME if code == HOLDOUT else self.arm_names[code - 1]


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    proportion: bool
    value: Callable[[AdvertiserMetrics], np.ndarray]
    pre: Callable[[AdvertiserMetrics], np.ndarray] | None
    cappable: bool  # heavy-tailed: winsorisation applies
    primary: bool = False
    numerator: str = ""
    denominator: str = "advertisers assigned to the group (targeted or whole arm)"


METRICS: tuple[MetricDef, ...] = (
    MetricDef("active_rate", "Active rate", True, lambda m: m.active, lambda m: m.pre_active,
              cappable=False, primary=True,
              numerator="advertisers with at least one day of positive expenditure"),
    MetricDef("arpu", "ARPU", False, lambda m: m.spend, lambda m: m.pre_spend,
              cappable=True, primary=True, numerator="expenditure"),
    MetricDef("clicks", "Clicks per advertiser", False, lambda m: m.clicks, lambda m: m.pre_clicks,
              cappable=True, numerator="clicks"),
    MetricDef("active_days", "Active days", False, lambda m: m.active_days,
              lambda m: m.pre_active_days, cappable=False,
              numerator="days with positive expenditure (a day counts once across scenarios)"),
    MetricDef("reward_cost", "Reward cost per advertiser", False, lambda m: m.reward, None,
              cappable=False, numerator="rewards of completed tasks of the experiment's campaigns"),
    MetricDef("net_arpu", "Net ARPU after rewards", False, lambda m: m.spend - m.reward,
              lambda m: m.pre_spend, cappable=True,
              numerator="expenditure minus rewards of completed tasks"),
)  # fmt: skip


def metric_definitions(*, window: str, scope: str) -> list[dict]:
    """The legend: what each metric counts, over which advertisers, window and scope."""
    return [
        {
            "metric": metric.key,
            "label": metric.label,
            "type": "proportion" if metric.proportion else "mean",
            "primary": metric.primary,
            "numerator": metric.numerator,
            "denominator": metric.denominator,
            "window": window,
            "scope": scope,
            "cuped_covariate": "the same measure over the pre-period" if metric.pre else None,
        }
        for metric in METRICS
    ]


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
        "se": _clean(estimate.se),
        "ci_low": _clean(estimate.ci_low),
        "ci_high": _clean(estimate.ci_high),
        "p_value": _clean(estimate.p_value),
    }


def _arm_labels(m: AdvertiserMetrics, population: str) -> np.ndarray:
    """Per advertiser: its group code, or 0 when outside the population (holdout included)."""
    if population == "targeted":
        return np.where(m.targeted, m.group, HOLDOUT)
    return m.group


def _group_moments(
    labels: np.ndarray, y: np.ndarray, x: np.ndarray | None, n_groups: int
) -> list[stats.Moments]:
    """Sufficient statistics of every group in one bincount per sum (no per-group copies)."""
    x = np.zeros_like(y) if x is None else x
    n = np.bincount(labels, minlength=n_groups)

    def sums(weights: np.ndarray) -> np.ndarray:
        return np.bincount(labels, weights=weights, minlength=n_groups)

    sum_y, sum_y2, sum_x, sum_x2, sum_xy = (sums(w) for w in (y, y * y, x, x * x, x * y))
    return [
        stats.Moments(n=int(n[g]), sum_y=float(sum_y[g]), sum_y2=float(sum_y2[g]),
                      sum_x=float(sum_x[g]), sum_x2=float(sum_x2[g]), sum_xy=float(sum_xy[g]))
        for g in range(n_groups)
    ]  # fmt: skip


def _capped(values: np.ndarray, in_test: np.ndarray, quantile: float) -> np.ndarray:
    """Values clipped at the pooled quantiles of the advertisers under test."""
    limits = stats.winsor_limits(values[in_test], quantile=quantile)
    return stats.winsorise(values, limits=limits)


def _mde(summary: stats.Summary, n_treatment: int, alpha: float) -> float | None:
    """The relative lift this comparison could detect with 80% power (from the control)."""
    if summary.n < 2 or not math.isfinite(summary.mean) or summary.mean == 0:
        return None
    return _clean(
        stats.mde_relative(mean=summary.mean, variance=summary.variance, n_control=summary.n,
                           n_treatment=n_treatment, alpha=alpha)
    )  # fmt: skip


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
    not_estimable = getattr(comparison, "not_estimable", None)
    relative_not_estimable = getattr(comparison, "relative_not_estimable", None)
    if not_estimable is None and (comparison.control.n < 2 or comparison.treatment.n < 2):
        not_estimable = (
            f"too few advertisers to test: control n={comparison.control.n}, treatment "
            f"n={comparison.treatment.n} (need 2 per arm)"
        )
    # The relative lift is the headline (as in gbstats); absolute when it is not estimable.
    p_of = "relative" if comparison.relative is not None else "absolute"
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
        "p_value": None if not_estimable else _clean(headline.p_value),
        "p_value_of": p_of,
        "not_estimable": not_estimable,
        "relative_not_estimable": relative_not_estimable,
        "mde_relative": _mde(comparison.control, comparison.treatment.n, alpha),
        "theta": _clean(theta),
    }


def _population_moments(
    m: AdvertiserMetrics, population: str, winsor_quantile: float | None
) -> dict[tuple[str, bool], list[stats.Moments]]:
    """(metric, capped) -> every group's moments; capping limits pooled over the population."""
    labels = _arm_labels(m, population)
    in_test = labels != HOLDOUT
    out = {}
    for metric in METRICS:
        y = metric.value(m)
        x = metric.pre(m) if metric.pre else None
        out[(metric.key, False)] = _group_moments(labels, y, x, m.n_groups)
        if winsor_quantile and metric.cappable:
            capped_x = None if x is None else _capped(x, in_test, winsor_quantile)
            out[(metric.key, True)] = _group_moments(
                labels, _capped(y, in_test, winsor_quantile), capped_x, m.n_groups
            )
    return out


def row_id(row: dict) -> str:
    """A row's stable id: arm, population, metric, adjustment and capping."""
    capped = "-capped" if row["capped"] else ""
    return f"{row['arm']}-{row['population']}-{row['metric']}-{row['adjustment']}{capped}"


def report_rows(m: AdvertiserMetrics, *, alpha: float, winsor_quantile: float | None) -> list[dict]:
    """Every (treatment arm, population, capping, adjustment, metric) comparison with the
    control, Holm-corrected over arms x metrics per family (primary / secondary) of a block."""
    rows: list[dict] = []
    cappings = [False] + ([True] if winsor_quantile else [])
    control = m.arm_names[0]
    for population in POPULATIONS:
        moments = _population_moments(m, population, winsor_quantile)
        for capped in cappings:
            for cuped in (False, True):
                block = []
                for code in range(TREATMENT, m.n_groups):
                    for metric in METRICS:
                        if (capped and not metric.cappable) or (cuped and not metric.pre):
                            continue
                        groups = moments[(metric.key, capped)]
                        row = _row(metric, (groups[CONTROL], groups[code]), cuped=cuped,
                                   alpha=alpha)  # fmt: skip
                        row.update(arm=m.group_name(code), control_arm=control,
                                   population=population, capped=capped,
                                   adjustment="cuped" if cuped else "none")  # fmt: skip
                        block.append(row)
                for primary in (True, False):
                    family = [r for r in block if r["primary"] is primary]
                    p_values = [np.nan if r["p_value"] is None else r["p_value"] for r in family]
                    adjusted = stats.holm(p_values)
                    fdr = stats.benjamini_hochberg(p_values)
                    for row, p_holm, p_bh in zip(family, adjusted, fdr, strict=True):
                        row.update(
                            holm_family="primary" if primary else "secondary",
                            holm_family_size=len(family),
                            p_value_holm=_clean(p_holm),
                            p_value_bh=_clean(p_bh),
                            significant=bool(np.isfinite(p_holm) and p_holm < alpha),
                        )
                rows.extend(block)
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def verdicts(rows: list[dict], *, alpha: float) -> list[dict]:
    """One decision line per treatment arm and primary metric, read from the decision row
    (whole arms, CUPED-adjusted, uncapped; unadjusted where CUPED is missing).

    "ARPU, m2m vs single-task: +2.1% [+0.4%, +3.8%], significant after Holm" or
    "... not significant; the minimum detectable effect at this size was 9.98%".
    """

    def key(r: dict) -> tuple:
        return r["arm"], r["metric"], r["population"], r["adjustment"], r["capped"]

    by_key = {key(r): r for r in rows}
    out = []
    seen = set()
    for r in rows:
        if not r["primary"] or (r["arm"], r["metric"]) in seen:
            continue
        seen.add((r["arm"], r["metric"]))
        row = by_key.get((r["arm"], r["metric"], "itt", "cuped", False)) or by_key.get(
            (r["arm"], r["metric"], "itt", "none", False)
        )
        if row is None:
            continue
        head = f"{row['label']}, {row['arm']} vs {row['control_arm']}"
        estimate = row["relative"] if row["p_value_of"] == "relative" else row["absolute"]
        if row["not_estimable"] or estimate is None or estimate["p_value"] is None:
            reason = row["not_estimable"] or "no interval could be computed"
            text, status = f"{head}: not estimable ({reason})", "not_estimable"
        else:
            if row["p_value_of"] == "relative":
                lift = (
                    f"{_pct(estimate['value'])} [{_pct(estimate['ci_low'])}, "
                    f"{_pct(estimate['ci_high'])}]"
                )
            else:
                lift = (f"{estimate['value']:+.4f} [{estimate['ci_low']:+.4f}, "
                        f"{estimate['ci_high']:+.4f}] (absolute)")  # fmt: skip
            if row["significant"]:
                text, status = f"{head}: {lift}, significant after Holm", "significant"
            else:
                mde = row["mde_relative"]
                tail = (f"; the minimum detectable effect at this size was {mde:.2%}"
                        if mde is not None else "")  # fmt: skip
                text, status = f"{head}: {lift}, not significant{tail}", "not_significant"
        out.append(
            {"arm": row["arm"], "metric": row["metric"], "label": row["label"], "text": text,
             "status": status, "significant": status == "significant",
             "p_value_of": row["p_value_of"], "p_value": row["p_value"],
             "p_value_holm": row["p_value_holm"], "alpha": alpha, "row": row_id(row)}
        )  # fmt: skip
    return out


def _money(cents: float) -> str:
    """Integer cents as a decimal string (money is never a float in the report)."""
    cents = round(cents)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def group_totals(m: AdvertiserMetrics) -> dict[str, dict]:
    """Size, targets, active advertisers and money totals per arm (and the holdout if used).

    One bincount per measure over the group codes.
    """
    groups = m.group.astype(np.int64)
    k = m.n_groups

    def total(weights: np.ndarray) -> np.ndarray:
        return np.bincount(groups, weights=weights, minlength=k)

    assigned = np.bincount(groups, minlength=k)
    targeted = np.bincount(groups[m.targeted], minlength=k)
    active = np.bincount(groups[m.active_days > 0], minlength=k)
    spend_cents = total(np.rint(m.spend * 100))
    reward_cents = total(np.rint(m.reward * 100))
    totals = {}
    for code in [*range(1, k), HOLDOUT]:
        if code == HOLDOUT and assigned[HOLDOUT] == 0:
            continue
        totals[m.group_name(code)] = {
            "assigned": int(assigned[code]),
            "targeted": int(targeted[code]),
            "active": int(active[code]),
            "expenditure": _money(spend_cents[code]),
            "reward_cost": _money(reward_cents[code]),
            "net_expenditure": _money(spend_cents[code] - reward_cents[code]),
        }
    return totals


def _ratio(numerator: float, denominator: float) -> float | None:
    """Cost per incremental active advertiser: undefined unless actives actually increased."""
    if not np.isfinite(denominator) or denominator <= 0:
        return None
    return _clean(numerator / denominator)


def cost_per_incremental_active(m: AdvertiserMetrics) -> dict:
    """Extra reward spent per extra active advertiser.

    Each treatment arm over the control per population ("<arm>_vs_control_<population>");
    each arm over the no-incentive holdout when there is one ("<arm>_vs_holdout", the total
    cost of an arm's incentives per advertiser they activated). Null when the active rate did
    not increase.
    """
    out: dict[str, float | None] = {}
    active = m.active
    for population in POPULATIONS:
        labels = _arm_labels(m, population)
        a = labels == CONTROL
        for code in range(TREATMENT, m.n_groups):
            b = labels == code
            if a.any() and b.any():
                out[f"{m.group_name(code)}_vs_control_{population}"] = _ratio(
                    m.reward[b].mean() - m.reward[a].mean(), active[b].mean() - active[a].mean()
                )
    holdout = m.group == HOLDOUT
    if holdout.any():
        for code in range(CONTROL, m.n_groups):
            arm = m.group == code
            if arm.any():
                out[f"{m.group_name(code)}_vs_holdout"] = _ratio(
                    m.reward[arm].mean(), active[arm].mean() - active[holdout].mean()
                )
    return out


def daily_series(m: AdvertiserMetrics, spend_rows: np.ndarray, n_days: int) -> list[dict]:
    """Cumulative active rate and ARPU per group and population over the evaluation days.

    `spend_rows` are (group, targeted, day number, spend) aggregates. Day d's figures count
    everything from the first evaluation day through d.
    """
    series = []
    for code in [*range(1, m.n_groups), HOLDOUT]:
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
                    "group": m.group_name(code),
                    "population": population,
                    "n": n,
                    "active_rate": (np.cumsum(new_active) / n).tolist(),
                    "arpu": (np.cumsum(day_spend) / n).tolist(),
                }
            )
    return series


CSV_COLUMNS = (
    "arm", "control_arm", "metric", "population", "adjustment", "capped", "control_n",
    "control_mean", "treatment_n", "treatment_mean", "absolute_lift", "absolute_se",
    "absolute_ci_low", "absolute_ci_high", "relative_lift", "relative_se", "relative_ci_low",
    "relative_ci_high", "p_value", "p_value_of", "p_value_holm", "holm_family", "significant",
    "alpha", "mde_relative", "not_estimable", "srm_p_value", "srm_flagged",
)  # fmt: skip
DAILY_CSV_COLUMNS = ("date", "group", "population", "n", "cumulative_active_rate",
                     "cumulative_arpu")  # fmt: skip


def report_csv(report: dict) -> str:
    """The report as CSV: one row per comparison (with standard errors, alpha and the SRM
    result), then, after a blank line, the daily series in long form (one row per day, group
    and population)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    alpha = report.get("experiment", {}).get("alpha")
    srm = report.get("srm") or {}
    for row in report["rows"]:
        absolute = row["absolute"] or {}
        relative = row["relative"] or {}
        writer.writerow(
            [
                row.get("arm"), row.get("control_arm"), row["metric"], row["population"],
                row["adjustment"], row["capped"], row["control"]["n"], row["control"]["mean"],
                row["treatment"]["n"], row["treatment"]["mean"], absolute.get("value"),
                absolute.get("se"), absolute.get("ci_low"), absolute.get("ci_high"),
                relative.get("value"), relative.get("se"), relative.get("ci_low"),
                relative.get("ci_high"), row["p_value"], row.get("p_value_of"),
                row["p_value_holm"], row.get("holm_family"), row["significant"], alpha,
                row.get("mde_relative"), row.get("not_estimable") or "",
                srm.get("p_value"), srm.get("flagged"),
            ]
        )  # fmt: skip
    daily = report.get("daily") or {}
    if daily.get("series"):
        writer.writerow([])
        writer.writerow(DAILY_CSV_COLUMNS)
        dates = daily["dates"]
        for series in daily["series"]:
            for i, date in enumerate(dates):
                writer.writerow([date, series["group"], series["population"], series["n"],
                                 series["active_rate"][i], series["arpu"][i]])  # fmt: skip
    return out.getvalue()
