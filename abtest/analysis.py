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
other arm and metric of its family; Benjamini-Hochberg's false discovery rate is shown beside.

Revenue per active advertiser is a ratio metric (sum of expenditure over the number of active
advertisers), compared by the delta method; it has no CUPED row.

Each row holds three analyses of the same sufficient statistics:

- frequentist (the row's top level): fixed-horizon Welch t, valid when looked at once;
- `sequential`: gbstats' always-valid confidence sequences with the experiment's tuning
  parameter, Holm/BH-corrected like the fixed-horizon p-values, valid however often ops
  staff look at a running experiment;
- `bayesian`: gbstats' Gaussian effect-size engine with the experiment's prior on the
  relative lift: posterior mean, credible interval, chance to win and risk (expected loss).

The experiment's analysis mode picks which one a row's `significant` and the verdicts follow.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from abtest import stats

CONTROL, TREATMENT, HOLDOUT = 1, 2, 0
HOLDOUT_NAME = "holdout"
POPULATIONS = ("targeted", "itt")
FREQUENTIST, SEQUENTIAL, BAYESIAN = "frequentist", "sequential", "bayesian"
MODES = (FREQUENTIST, SEQUENTIAL, BAYESIAN)
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
    advertiser_id: np.ndarray | None = None  # sorted ascending; what the panels align with

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
    # A ratio metric sum(value) / sum(per) over the group's advertisers (delta method).
    per: Callable[[AdvertiserMetrics], np.ndarray] | None = None

    @property
    def type(self) -> str:
        if self.per is not None:
            return "ratio"
        return "proportion" if self.proportion else "mean"


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
    MetricDef("revenue_per_active", "Revenue per active advertiser", False, lambda m: m.spend,
              None, cappable=False, numerator="expenditure",
              denominator="advertisers with at least one day of positive expenditure",
              per=lambda m: m.active),
)  # fmt: skip


def metric_definitions(*, window: str, scope: str) -> list[dict]:
    """The legend: what each metric counts, over which advertisers, window and scope."""
    return [
        {
            "metric": metric.key,
            "label": metric.label,
            "type": metric.type,
            "primary": metric.primary,
            "numerator": metric.numerator,
            "denominator": metric.denominator,
            "window": window,
            "scope": scope,
            "cuped_covariate": "the same measure over the pre-period" if metric.pre else None,
        }
        for metric in METRICS
    ]


def json_float(value: float | None) -> float | None:
    """JSON has no NaN or infinity: undefined figures become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def estimate_dict(estimate: stats.Estimate | None) -> dict | None:
    if estimate is None:
        return None
    return {
        "value": json_float(estimate.value),
        "se": json_float(estimate.se),
        "ci_low": json_float(estimate.ci_low),
        "ci_high": json_float(estimate.ci_high),
        "p_value": json_float(estimate.p_value),
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
    return json_float(
        stats.mde_relative(mean=summary.mean, variance=summary.variance, n_control=summary.n,
                           n_treatment=n_treatment, alpha=alpha)
    )  # fmt: skip


@dataclass(frozen=True)
class AnalysisSettings:
    """The experiment's analysis mode (what verdicts follow) and its two engines' parameters."""

    mode: str = FREQUENTIST
    tuning: float = stats.DEFAULT_SEQUENTIAL_TUNING
    prior: stats.GaussianPrior = field(default_factory=stats.GaussianPrior)


def _compare(
    metric: MetricDef, moments: tuple, *, cuped: bool, alpha: float
) -> tuple[stats.Comparison, float | None, float | None]:
    """The fixed-horizon comparison, CUPED's theta, and the unadjusted control mean that a
    Bayesian prior on the relative lift is rescaled by (None: the comparison's own)."""
    a, b = moments
    if metric.per is not None:
        return stats.compare_ratio(a, b, alpha=alpha, metric=metric.key), None, None
    if cuped:
        comparison, theta = stats.compare_cuped(
            a, b, proportion=metric.proportion, alpha=alpha, metric=metric.key
        )
        return comparison, theta, (a.sum_y / a.n if a.n else math.nan)
    summaries = (m.summary(proportion=metric.proportion) for m in moments)
    return stats.compare(*summaries, alpha=alpha), None, None


def _posterior_dict(result: stats.BayesianResult | None) -> dict | None:
    if result is None:
        return None
    return {
        "value": json_float(result.expected),  # the posterior mean
        "sd": json_float(result.sd),
        "ci_low": json_float(result.ci_low),
        "ci_high": json_float(result.ci_high),
        "chance_to_win": json_float(result.chance_to_win),
        "risk_control": json_float(result.risk_control),
        "risk_treatment": json_float(result.risk_treatment),
    }


def _sequential_section(
    comparison: stats.Comparison, p_of: str, *, alpha: float, tuning: float
) -> dict:
    sequential = stats.compare_sequential(comparison, alpha=alpha, tuning=tuning)
    headline = sequential.relative if p_of == "relative" else sequential.absolute
    return {
        "absolute": estimate_dict(sequential.absolute),
        "relative": estimate_dict(sequential.relative),
        "p_value": None if comparison.not_estimable else json_float(headline.p_value),
        "tuning": tuning,
    }


def _bayesian_section(
    comparison: stats.Comparison,
    p_of: str,
    *,
    alpha: float,
    prior: stats.GaussianPrior,
    baseline: float | None,
) -> dict:
    """Posteriors of both lifts; decisive (`significant`) when the chance to win is at least
    1 - alpha or at most alpha (GrowthBook's 95% / 5% at alpha 0.05). No multiplicity
    correction: gbstats applies none to chance to win."""
    bayes = stats.compare_bayesian(comparison, prior=prior, alpha=alpha, baseline=baseline)
    headline = bayes.relative if p_of == "relative" else bayes.absolute
    chance = None if headline is None else json_float(headline.chance_to_win)
    return {
        "absolute": _posterior_dict(bayes.absolute),
        "relative": _posterior_dict(bayes.relative),
        "chance_to_win": chance,
        "significant": chance is not None and (chance >= 1 - alpha or chance <= alpha),
        "prior": {"proper": prior.proper, "mean": prior.mean, "stddev": math.sqrt(prior.variance)},
    }


def _row(
    metric: MetricDef,
    moments: tuple,
    *,
    cuped: bool,
    alpha: float,
    settings: AnalysisSettings,
) -> dict:
    """One comparison with its fixed-horizon (top level), sequential and Bayesian results."""
    comparison, theta, baseline = _compare(metric, moments, cuped=cuped, alpha=alpha)
    not_estimable = comparison.not_estimable
    # The relative lift is the headline (as in gbstats); absolute when it is not estimable.
    p_of = "relative" if comparison.relative is not None else "absolute"
    headline = comparison.relative or comparison.absolute
    return {
        "metric": metric.key,
        "label": metric.label,
        "type": metric.type,
        "primary": metric.primary,
        "control": {"n": comparison.control.n, "mean": json_float(comparison.control.mean)},
        "treatment": {"n": comparison.treatment.n, "mean": json_float(comparison.treatment.mean)},
        "absolute": estimate_dict(comparison.absolute),
        "relative": estimate_dict(comparison.relative),
        "p_value": None if not_estimable else json_float(headline.p_value),
        "p_value_of": p_of,
        "not_estimable": not_estimable,
        "relative_not_estimable": comparison.relative_not_estimable,
        "mde_relative": _mde(comparison.control, comparison.treatment.n, alpha),
        "theta": json_float(theta),
        "analysis_mode": settings.mode,
        "sequential": _sequential_section(comparison, p_of, alpha=alpha, tuning=settings.tuning),
        "bayesian": _bayesian_section(
            comparison, p_of, alpha=alpha, prior=settings.prior, baseline=baseline
        ),
    }


def _ratio_moments(groups: list[stats.Moments]) -> list[stats.RatioMoments]:
    """Moments of (numerator y, denominator x) as the ratio metric's sufficient statistics."""
    return [
        stats.RatioMoments(n=g.n, sum_m=g.sum_y, sum_m2=g.sum_y2, sum_d=g.sum_x,
                           sum_d2=g.sum_x2, sum_md=g.sum_xy)
        for g in groups
    ]  # fmt: skip


def _population_moments(
    m: AdvertiserMetrics, population: str, winsor_quantile: float | None
) -> dict[tuple[str, bool], list]:
    """(metric, capped) -> every group's moments (RatioMoments for a ratio metric); capping
    limits pooled over the population."""
    labels = _arm_labels(m, population)
    in_test = labels != HOLDOUT
    out: dict[tuple[str, bool], list] = {}
    for metric in METRICS:
        y = metric.value(m)
        if metric.per is not None:
            out[(metric.key, False)] = _ratio_moments(
                _group_moments(labels, y, metric.per(m), m.n_groups)
            )
            continue
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


def _correct_family(family: list[dict], *, alpha: float, primary: bool) -> None:
    """Holm and Benjamini-Hochberg over one family, for the fixed-horizon p-values (top level)
    and the always-valid ones (Holm holds for any valid p-values, sequential ones included)."""
    for section in (None, "sequential"):
        targets = [row if section is None else row[section] for row in family]
        p_values = [np.nan if t["p_value"] is None else t["p_value"] for t in targets]
        adjusted, fdr = stats.holm(p_values), stats.benjamini_hochberg(p_values)
        for target, p_holm, p_bh in zip(targets, adjusted, fdr, strict=True):
            target.update(
                p_value_holm=json_float(p_holm),
                p_value_bh=json_float(p_bh),
                significant=bool(np.isfinite(p_holm) and p_holm < alpha),
            )
    for row in family:
        row.update(holm_family="primary" if primary else "secondary",
                   holm_family_size=len(family))  # fmt: skip
        # The top level holds the fixed-horizon figures; `significant` follows the mode.
        row["significant_frequentist"] = row["significant"]
        row["significant"] = {
            FREQUENTIST: row["significant_frequentist"],
            SEQUENTIAL: row["sequential"]["significant"],
            BAYESIAN: row["bayesian"]["significant"],
        }[row["analysis_mode"]]


def report_rows(
    m: AdvertiserMetrics,
    *,
    alpha: float,
    winsor_quantile: float | None,
    settings: AnalysisSettings | None = None,
) -> list[dict]:
    """Every (treatment arm, population, capping, adjustment, metric) comparison with the
    control, Holm- and BH-corrected over arms x metrics per family (primary / secondary) of a
    block; each row also carries the sequential and Bayesian results, and `significant`
    follows `settings.mode`."""
    settings = settings or AnalysisSettings()
    if settings.mode not in MODES:
        raise ValueError(f"analysis mode {settings.mode!r} is not one of {', '.join(MODES)}")
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
                                   alpha=alpha, settings=settings)  # fmt: skip
                        row.update(arm=m.group_name(code), control_arm=control,
                                   population=population, capped=capped,
                                   adjustment="cuped" if cuped else "none")  # fmt: skip
                        block.append(row)
                for primary in (True, False):
                    family = [r for r in block if r["primary"] is primary]
                    _correct_family(family, alpha=alpha, primary=primary)
                rows.extend(block)
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _lift(estimate: dict, p_of: str) -> str:
    """ "+2.1% [+0.4%, +3.8%]", or the absolute lift to 4 places marked "(absolute)"."""
    low, high = estimate["ci_low"], estimate["ci_high"]
    if p_of == "relative":
        return f"{_pct(estimate['value'])} [{_pct(low)}, {_pct(high)}]"
    return f"{estimate['value']:+.4f} [{low:+.4f}, {high:+.4f}] (absolute)"


def _winner(row: dict, value: float, decisive: bool) -> str | None:
    """The arm a decisive result favours (primary metrics: higher is better), else None."""
    if not decisive or value == 0:
        return None
    return row["arm"] if value > 0 else row["control_arm"]


def _verdict_frequentist(row: dict, head: str, sequential: bool) -> tuple[str, str, str | None]:
    section = row["sequential"] if sequential else row
    estimate = section["relative"] if row["p_value_of"] == "relative" else section["absolute"]
    lift = _lift(estimate, row["p_value_of"])
    kind = " (always valid)" if sequential else ""
    winner = _winner(row, estimate["value"], row["significant"])
    if row["significant"]:
        return f"{head}: {lift}{kind}, significant after Holm", "significant", winner
    mde = row["mde_relative"]
    tail = ""
    if mde is not None:
        at = "a fixed-horizon test at this size" if sequential else "this size"
        tail = f"; the minimum detectable effect at {at} was {mde:.2%}"
    return f"{head}: {lift}{kind}, not significant{tail}", "not_significant", None


def _verdict_bayesian(row: dict, head: str, alpha: float) -> tuple[str, str, str | None]:
    relative = row["p_value_of"] == "relative"
    posterior = row["bayesian"]["relative" if relative else "absolute"]
    chance = posterior["chance_to_win"]
    risk = _pct(posterior["risk_treatment"]) if relative else f"{posterior['risk_treatment']:.4f}"
    text = (f"{head}: {_lift(posterior, row['p_value_of'])} credible, chance to win "
            f"{chance:.1%}, risk if shipped {risk.lstrip('+')}")  # fmt: skip
    winner = _winner(row, chance - 0.5, row["bayesian"]["significant"])
    if winner is not None:
        return f"{text}: {winner} wins", "significant", winner
    return (f"{text}: inconclusive (chance to win between {alpha:.0%} and {1 - alpha:.0%})",
            "not_significant", None)  # fmt: skip


def verdicts(rows: list[dict], *, alpha: float) -> list[dict]:
    """One decision line per treatment arm and primary metric, read from the decision row
    (whole arms, CUPED-adjusted, uncapped; unadjusted where CUPED is missing) in the
    analysis mode the rows were made in.

    Frequentist: "ARPU, m2m vs single-task: +2.1% [+0.4%, +3.8%], significant after Holm" or
    "... not significant; the minimum detectable effect at this size was 9.98%"; sequential
    the same with always-valid intervals; Bayesian "...: +2.1% [+0.4%, +3.8%] credible, chance
    to win 99.1%, risk if shipped 0.0%: m2m wins". `winner` names the arm a decisive result
    favours.
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
        mode = row.get("analysis_mode", FREQUENTIST)
        head = f"{row['label']}, {row['arm']} vs {row['control_arm']}"
        section = row["sequential"] if mode == SEQUENTIAL else row
        estimate = row["relative"] if row["p_value_of"] == "relative" else row["absolute"]
        winner = None
        if row["not_estimable"] or estimate is None or estimate["p_value"] is None:
            reason = row["not_estimable"] or "no interval could be computed"
            text, status = f"{head}: not estimable ({reason})", "not_estimable"
        elif mode == BAYESIAN:
            text, status, winner = _verdict_bayesian(row, head, alpha)
        else:
            text, status, winner = _verdict_frequentist(row, head, mode == SEQUENTIAL)
        out.append(
            {"arm": row["arm"], "metric": row["metric"], "label": row["label"], "text": text,
             "status": status, "significant": status == "significant", "winner": winner,
             "analysis_mode": mode, "p_value_of": row["p_value_of"],
             "p_value": None if mode == BAYESIAN else section["p_value"],
             "p_value_holm": None if mode == BAYESIAN else section["p_value_holm"],
             "chance_to_win": row["bayesian"]["chance_to_win"], "alpha": alpha,
             "row": row_id(row)}
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


def _incremental_entry(
    reference: stats.RatioMoments,
    arm: stats.RatioMoments,
    *,
    names: tuple[str, str, str],
    alpha: float,
) -> dict:
    """One cost per incremental active advertiser with its interval, or the reason for none."""
    arm_name, reference_name, population = names
    estimate, reason = stats.incremental_ratio(reference, arm, alpha=alpha)
    if reason is None and estimate.p_value != estimate.p_value:  # NaN: no spread at all
        reason = (
            "reward cost does not vary between advertisers (for example none was paid), so "
            "an interval would look certain"
        )
    return {"arm": arm_name, "reference": reference_name, "population": population,
            **estimate_dict(estimate), "not_estimable": reason}  # fmt: skip


def cost_per_incremental_active(m: AdvertiserMetrics, *, alpha: float) -> dict[str, dict]:
    """Extra reward spent per extra active advertiser, by the delta method with its interval
    (`stats.incremental_ratio`: a ratio of two differences of means).

    Each treatment arm over the control per population ("<arm>_vs_control_<population>");
    each arm over the no-incentive holdout when there is one ("<arm>_vs_holdout", the total
    cost of an arm's incentives per advertiser they activated, whole arms). Not estimable,
    with the reason, unless the active rate rose significantly (near a zero denominator the
    ratio means nothing).
    """
    out: dict[str, dict] = {}
    control = m.group_name(CONTROL)
    for population in POPULATIONS:
        labels = _arm_labels(m, population)
        groups = _ratio_moments(_group_moments(labels, m.reward, m.active, m.n_groups))
        for code in range(TREATMENT, m.n_groups):
            if groups[CONTROL].n and groups[code].n:
                name = m.group_name(code)
                out[f"{name}_vs_control_{population}"] = _incremental_entry(
                    groups[CONTROL], groups[code], names=(name, control, population), alpha=alpha
                )
    groups = _ratio_moments(_group_moments(m.group, m.reward, m.active, m.n_groups))
    if groups[HOLDOUT].n:
        for code in range(CONTROL, m.n_groups):
            if groups[code].n:
                name = m.group_name(code)
                out[f"{name}_vs_holdout"] = _incremental_entry(
                    groups[HOLDOUT], groups[code], names=(name, HOLDOUT_NAME, "itt"), alpha=alpha
                )
    return out


CSV_COLUMNS = (
    "arm", "control_arm", "metric", "population", "adjustment", "capped", "control_n",
    "control_mean", "treatment_n", "treatment_mean", "absolute_lift", "absolute_se",
    "absolute_ci_low", "absolute_ci_high", "relative_lift", "relative_se", "relative_ci_low",
    "relative_ci_high", "p_value", "p_value_of", "p_value_holm", "holm_family", "significant",
    "alpha", "mde_relative", "not_estimable", "srm_p_value", "srm_flagged", "analysis_mode",
    "significant_frequentist", "p_value_bh", "sequential_ci_low", "sequential_ci_high",
    "sequential_p_value", "sequential_p_value_holm", "sequential_significant", "chance_to_win",
    "risk_control", "risk_treatment", "credible_low", "credible_high", "bayesian_significant",
)  # fmt: skip
DAILY_CSV_KEYS = ("active_rate", "arpu", "daily_active_rate", "daily_arpu")
DAILY_CSV_COLUMNS = (
    "date", "group", "population", "n",
    "cumulative_active_rate", "cumulative_active_rate_low", "cumulative_active_rate_high",
    "cumulative_arpu", "cumulative_arpu_low", "cumulative_arpu_high",
    "daily_active_rate", "daily_active_rate_low", "daily_active_rate_high",
    "daily_arpu", "daily_arpu_low", "daily_arpu_high",
)  # fmt: skip


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
        # The sequential and Bayesian figures of the headline lift (the one p_value_of names).
        lift = "relative" if row.get("p_value_of") == "relative" else "absolute"
        sequential = row.get("sequential") or {}
        bayesian = row.get("bayesian") or {}
        seq, post = sequential.get(lift) or {}, bayesian.get(lift) or {}
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
                srm.get("p_value"), srm.get("flagged"), row.get("analysis_mode"),
                row.get("significant_frequentist"), row.get("p_value_bh"), seq.get("ci_low"),
                seq.get("ci_high"), sequential.get("p_value"), sequential.get("p_value_holm"),
                sequential.get("significant"), post.get("chance_to_win"),
                post.get("risk_control"), post.get("risk_treatment"), post.get("ci_low"),
                post.get("ci_high"), bayesian.get("significant"),
            ]
        )  # fmt: skip
    daily = report.get("daily") or {}
    if daily.get("series"):
        writer.writerow([])
        writer.writerow(DAILY_CSV_COLUMNS)
        dates = daily["dates"]
        for series in daily["series"]:
            # A report frozen before the bands and the daily view has the cumulative values only.
            columns = [series.get(f"{key}{suffix}") or [None] * len(dates)
                       for key in DAILY_CSV_KEYS for suffix in ("", "_low", "_high")]  # fmt: skip
            for i, date in enumerate(dates):
                writer.writerow([date, series["group"], series["population"], series["n"],
                                 *(column[i] for column in columns)])  # fmt: skip
    return out.getvalue()
