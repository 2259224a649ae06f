"""The report's views over time and by segment: no Django, no SQL.

- **Daily series** (`daily_series`): per group and population, for every evaluation day, the
  cumulative active rate and ARPU (everything from the first day through that day) and the
  day's own active rate and ARPU, each with a normal confidence band at the experiment's
  level (1 - alpha). A band is an interval for that group's mean on that day, not for a lift;
  read the lifts in the report's rows.
- **Breakdowns** (`breakdowns`): each treatment arm against the control, whole arms (intention
  to treat), unadjusted, by scenario and by business scale:
  - by scenario: every assigned advertiser counts, with the active rate meaning "active in that
    scenario" and ARPU that scenario's expenditure per advertiser, so randomisation holds in
    every cell;
  - by business scale: the advertisers of that scale only (a subgroup; randomisation holds
    within it).
  Segments are exploratory: each cell has its own Welch p-value, with Benjamini-Hochberg's
  adjustment over the cells of one dimension and metric beside it; the decision stays with the
  report's primary rows.

Arrays are aligned with `AdvertiserMetrics` (one row per assigned advertiser, by advertiser id).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from abtest import stats
from abtest.analysis import (
    CONTROL,
    HOLDOUT,
    POPULATIONS,
    TREATMENT,
    AdvertiserMetrics,
    estimate_dict,
    json_float,
)

DIMENSIONS = ("scenario", "business_scale")
BREAKDOWN_METRICS = (("active_rate", "Active rate", True), ("arpu", "ARPU", False))


@dataclass(frozen=True)
class DailyPanel:
    """Per assigned advertiser and evaluation day: expenditure and whether it was active."""

    spend: np.ndarray  # [n, days] float, currency units
    active: np.ndarray  # [n, days] bool: any expenditure that day

    @classmethod
    def from_rows(cls, rows: np.ndarray, advertiser_ids: np.ndarray, days: int) -> DailyPanel:
        """From (advertiser_id, day, spend cents, active 0/1) rows; ids sorted ascending."""
        spend = np.zeros((advertiser_ids.size, days))
        active = np.zeros((advertiser_ids.size, days), dtype=bool)
        index, inside = _positions(advertiser_ids, rows[:, 0])
        day = rows[inside, 1]
        spend[index[inside], day] = rows[inside, 2] / 100.0
        active[index[inside], day] = rows[inside, 3] > 0
        return cls(spend=spend, active=active)


@dataclass(frozen=True)
class SegmentPanel:
    """What the breakdowns need: each advertiser's business scale and per-scenario outcomes."""

    business_scale: np.ndarray  # [n] int
    scenario_codes: tuple[str, ...]
    scenario_spend: np.ndarray  # [n, S] float, currency units
    scenario_active: np.ndarray  # [n, S] bool: any active day in that scenario

    @classmethod
    def from_rows(
        cls,
        *,
        advertiser_ids: np.ndarray,
        scales: np.ndarray,
        scenario_rows: np.ndarray,
        scenario_codes: dict[int, str],
    ) -> SegmentPanel:
        """`scales`: (advertiser_id, business_scale) rows; `scenario_rows`: (advertiser_id,
        scenario_id, spend cents, active 0/1); `scenario_codes`: scenario id -> code."""
        scale = np.zeros(advertiser_ids.size, dtype=np.int64)
        index, inside = _positions(advertiser_ids, scales[:, 0])
        scale[index[inside]] = scales[inside, 1]
        ids = np.array(sorted(scenario_codes), dtype=np.int64)
        spend = np.zeros((advertiser_ids.size, ids.size))
        active = np.zeros((advertiser_ids.size, ids.size), dtype=bool)
        index, inside = _positions(advertiser_ids, scenario_rows[:, 0])
        column, known = _positions(ids, scenario_rows[:, 1])
        keep = inside & known
        spend[index[keep], column[keep]] = scenario_rows[keep, 2] / 100.0
        active[index[keep], column[keep]] = scenario_rows[keep, 3] > 0
        return cls(
            business_scale=scale,
            scenario_codes=tuple(scenario_codes[int(i)] for i in ids),
            scenario_spend=spend,
            scenario_active=active,
        )


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each of `ids` in `sorted_ids`, and whether it is there at all."""
    if sorted_ids.size == 0:
        return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
    index = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return index, sorted_ids[index] == ids


def _floats(values: np.ndarray) -> list[float | None]:
    """JSON-ready: NaN and infinities become null."""
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def _band(values: np.ndarray, *, z: float, proportion: bool) -> dict[str, list[float | None]]:
    """Mean over rows [n, days] per day with its normal band (proportions: p(1-p)/n)."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    if proportion:
        variance = mean * (1.0 - mean)
    else:
        variance = values.var(axis=0, ddof=1) if n > 1 else np.full_like(mean, np.nan)
    se = np.sqrt(variance / n)
    return {"value": _floats(mean), "low": _floats(mean - z * se), "high": _floats(mean + z * se)}


def daily_series(m: AdvertiserMetrics, panel: DailyPanel, *, alpha: float) -> list[dict]:
    """Per group (the arms, then the holdout) and population: the cumulative and daily active
    rate and ARPU with their 1 - alpha bands (module docstring). Keys per series: `group`,
    `population`, `n`, and for each of `active_rate`, `arpu`, `daily_active_rate`,
    `daily_arpu` the values, with `<key>_low` and `<key>_high` their band."""
    z = float(sps.norm.ppf(1.0 - alpha / 2.0))
    series = []
    for code in [*range(CONTROL, m.n_groups), HOLDOUT]:
        for population in POPULATIONS:
            members = m.group == code
            if population == "targeted":
                members &= m.targeted
            n = int(members.sum())
            if n == 0:
                continue
            spend, active = panel.spend[members], panel.active[members]
            entry: dict = {"group": m.group_name(code), "population": population, "n": n}
            for key, values, proportion in (
                ("active_rate", np.maximum.accumulate(active, axis=1).astype(float), True),
                ("arpu", np.cumsum(spend, axis=1), False),
                ("daily_active_rate", active.astype(float), True),
                ("daily_arpu", spend, False),
            ):
                band = _band(values, z=z, proportion=proportion)
                entry[key], entry[f"{key}_low"], entry[f"{key}_high"] = (
                    band["value"], band["low"], band["high"],
                )  # fmt: skip
            series.append(entry)
    return series


def _summary(values: np.ndarray, *, proportion: bool) -> stats.Summary:
    if proportion:
        return stats.proportion_summary(n=values.size, successes=float(values.sum()))
    return stats.mean_summary(
        n=values.size, total=float(values.sum()), total_sq=float(values @ values)
    )


def _segments(m: AdvertiserMetrics, panel: SegmentPanel, dimension: str):
    """(label, members mask, active [n], spend [n]) per segment of one dimension."""
    if dimension == "scenario":
        everyone = np.ones(m.group.size, dtype=bool)
        for j, code in enumerate(panel.scenario_codes):
            yield code, everyone, panel.scenario_active[:, j], panel.scenario_spend[:, j]
        return
    for scale in np.unique(panel.business_scale).tolist():
        yield f"scale {scale}", panel.business_scale == scale, m.active > 0, m.spend


def breakdowns(m: AdvertiserMetrics, panel: SegmentPanel, *, alpha: float) -> dict:
    """Each treatment arm against the control by scenario and by business scale (module
    docstring): {dimension: [cell, ...]}, a cell per (segment, arm, metric) with both arms'
    n and mean, the absolute and relative lift with CI and p-value, the BH-adjusted p-value
    over the dimension's cells of that metric, or `not_estimable` with the reason."""
    out: dict[str, list[dict]] = {}
    control = m.group_name(CONTROL)
    for dimension in DIMENSIONS:
        cells = []
        for label, members, active, spend in _segments(m, panel, dimension):
            for code in range(TREATMENT, m.n_groups):
                a, b = members & (m.group == CONTROL), members & (m.group == code)
                for metric, metric_label, proportion in BREAKDOWN_METRICS:
                    values = active.astype(float) if proportion else spend
                    comparison = stats.compare(
                        _summary(values[a], proportion=proportion),
                        _summary(values[b], proportion=proportion),
                        alpha=alpha,
                    )
                    cells.append(_cell(comparison, label, m.group_name(code), control,
                                       metric, metric_label))  # fmt: skip
        for metric, _, _ in BREAKDOWN_METRICS:
            family = [c for c in cells if c["metric"] == metric]
            p = [math.nan if c["p_value"] is None else c["p_value"] for c in family]
            for cell, adjusted in zip(family, stats.benjamini_hochberg(p), strict=True):
                cell["p_value_bh"] = None if math.isnan(adjusted) else float(adjusted)
        out[dimension] = cells
    return out


def _cell(
    comparison: stats.Comparison,
    segment: str,
    arm: str,
    control: str,
    metric: str,
    label: str,
) -> dict:
    relative = estimate_dict(comparison.relative)
    absolute = estimate_dict(comparison.absolute)
    headline = relative if relative is not None else absolute
    return {
        "segment": segment,
        "arm": arm,
        "control_arm": control,
        "metric": metric,
        "label": label,
        "control": {"n": comparison.control.n, "mean": json_float(comparison.control.mean)},
        "treatment": {"n": comparison.treatment.n, "mean": json_float(comparison.treatment.mean)},
        "absolute": absolute,
        "relative": relative,
        "p_value": None if headline is None else headline["p_value"],
        "not_estimable": comparison.not_estimable or None,
    }
