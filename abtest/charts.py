"""The report's charts, drawn by matplotlib and inlined as SVG (nothing loads from a CDN).

- `report_charts`: the active rate and ARPU per arm over the evaluation days, cumulative and
  daily, each line with its confidence band (solid: whole arm, dashed: targeted; the holdout
  grey);
- `breakdown_charts`: the relative lift of each treatment over the control by scenario and by
  business scale, with its interval;
- `incremental_figure` / `incremental_chart`: incremental active advertisers per 1,000 of
  budget by arm, with the interval; the lab saves the same figure as a PNG.

Text stays text in the SVG (`svg.fonttype: none`) so pages stay small and searchable, and the
ids are salted with the chart's title so two charts on one page never share a clip path.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

# One colour per arm in report order (control first); the holdout is always grey.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
HOLDOUT_COLOUR = "#7f7f7f"
MUTED_COLOUR = "#999999"
TIME_METRICS = (
    # key, view, title, y label, percent axis
    ("active_rate", "cumulative", "Cumulative active rate", "active since day 1", True),
    ("arpu", "cumulative", "Cumulative ARPU", "expenditure per advertiser", False),
    ("daily_active_rate", "daily", "Daily active rate", "active that day", True),
    ("daily_arpu", "daily", "Daily ARPU", "expenditure per advertiser that day", False),
)


def _svg(fig: Figure, salt: str) -> str:
    """The figure as an inline <svg> element (no XML prolog or DOCTYPE)."""
    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _finite(values: Sequence[float | None] | None) -> list[float]:
    return [math.nan if v is None else float(v) for v in (values or [])]


def _colours(groups: Sequence[str]) -> dict[str, str]:
    arms = [g for g in dict.fromkeys(groups) if g != "holdout"]
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(arms)}
    colours["holdout"] = HOLDOUT_COLOUR
    return colours


def time_chart(
    *, title: str, dates: Sequence[str], series: Sequence[dict], key: str, ylabel: str,
    percent: bool, level: float | None,
) -> str:  # fmt: skip
    """One metric over the days, a line per series with its band where the series has one."""
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    x = list(range(len(dates)))
    colours = _colours([s["group"] for s in series])
    for s in series:
        targeted = s["population"] == "targeted"
        colour = colours[s["group"]]
        ax.plot(x, _finite(s.get(key)), color=colour, linewidth=1.8,
                linestyle="--" if targeted else "-",
                label=f"{s['group']}{' (targeted)' if targeted else ''}")  # fmt: skip
        low, high = _finite(s.get(f"{key}_low")), _finite(s.get(f"{key}_high"))
        if low and high:
            ax.fill_between(x, low, high, color=colour, alpha=0.08 if targeted else 0.15,
                            linewidth=0)  # fmt: skip
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(
        f"evaluation day{f' (bands: {level:.0%} confidence)' if level else ''}", fontsize=9
    )
    step = max(1, math.ceil(len(dates) / 7))
    ax.set_xticks(x[::step], [d[5:] for d in dates[::step]])
    ax.yaxis.set_major_formatter(
        PercentFormatter(1.0, decimals=0) if percent else FuncFormatter(lambda v, _: f"{v:,.0f}")
    )
    ax.grid(axis="y", color="#dddddd")
    ax.set_ylim(bottom=0)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _svg(fig, title)


def report_charts(daily: dict) -> list[dict]:
    """The four time charts: {"key", "view" (cumulative or daily), "title", "svg"}."""
    series, dates = daily.get("series", []), daily.get("dates", [])
    if not series or not dates:
        return []
    charts = []
    for key, view, title, ylabel, percent in TIME_METRICS:
        if not any(s.get(key) for s in series):  # a report frozen before the daily view
            continue
        svg = time_chart(title=title, dates=dates, series=series, key=key, ylabel=ylabel,
                         percent=percent, level=daily.get("level"))  # fmt: skip
        charts.append({"key": key, "view": view, "title": title, "svg": svg})
    return charts


def lift_chart(*, title: str, cells: Sequence[dict]) -> str:
    """Relative lift over the control with its interval: a row per segment, a marker per arm."""
    segments = list(dict.fromkeys(c["segment"] for c in cells))
    arms = list(dict.fromkeys(c["arm"] for c in cells))
    colours = _colours(["control", *arms])
    fig = Figure(figsize=(5.6, 0.9 + 0.32 * len(segments) * max(len(arms), 1)),
                 layout="constrained")  # fmt: skip
    ax = fig.add_subplot()
    offsets = [(i - (len(arms) - 1) / 2) * 0.8 / max(len(arms), 1) for i in range(len(arms))]
    for arm, offset in zip(arms, offsets, strict=True):
        ys, values, below, above = [], [], [], []
        for y, segment in enumerate(segments):
            cell = next((c for c in cells if c["arm"] == arm and c["segment"] == segment), None)
            relative = (cell or {}).get("relative") or {}
            value, low, high = (relative.get(k) for k in ("value", "ci_low", "ci_high"))
            if value is None or low is None or high is None:
                continue
            ys.append(y + offset)
            values.append(value)
            below.append(value - low)
            above.append(high - value)
        ax.errorbar(values, ys, xerr=[below, above], fmt="o", markersize=4, capsize=2,
                    color=colours[arm], label=arm)  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(segments)), segments)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("relative lift over the control (interval: not corrected for segments)",
                  fontsize=9)  # fmt: skip
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="x", color="#dddddd")
    if arms:
        fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _svg(fig, title)


def breakdown_charts(breakdowns: dict) -> list[dict]:
    """One lift chart per dimension and metric: {"dimension", "metric", "title", "svg"}."""
    charts = []
    for dimension, name in (("scenario", "scenario"), ("business_scale", "business scale")):
        cells = breakdowns.get(dimension) or []
        for metric in dict.fromkeys(c["metric"] for c in cells):
            chosen = [c for c in cells if c["metric"] == metric]
            title = f"{chosen[0]['label']} by {name}"
            charts.append({"dimension": dimension, "metric": metric, "title": title,
                           "svg": lift_chart(title=title, cells=chosen)})  # fmt: skip
    return charts


def incremental_figure(rows: Sequence[dict]) -> Figure:
    """Incremental actives per 1,000 of budget by arm, with the interval. Each row: `label`,
    `value`, `ci_low`, `ci_high`, `muted` (drawn grey: e.g. the lab's oracle, an upper bound
    rather than a policy)."""
    shown = [r for r in rows if r["value"] is not None and math.isfinite(r["value"])]
    fig = Figure(figsize=(7, 0.9 + 0.45 * max(len(shown), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(shown)))
    values = [r["value"] for r in shown]
    low = [r["value"] - _or(r["ci_low"], r["value"]) for r in shown]
    high = [_or(r["ci_high"], r["value"]) - r["value"] for r in shown]
    ax.barh(y, values, color=[MUTED_COLOUR if r["muted"] else "#3366aa" for r in shown])
    ax.errorbar(values, y, xerr=[low, high], fmt="none", ecolor="black", capsize=3)
    ax.set_yticks(y, [r["label"] for r in shown])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("incremental active advertisers per 1,000 of budget (95% CI)")
    ax.invert_yaxis()
    return fig


def _or(value: float | None, default: float) -> float:
    return default if value is None or not math.isfinite(value) else value


def incremental_chart(report: dict) -> str | None:
    """The report's incremental actives per 1,000 of budget as SVG, or None without them."""
    section = report.get("incremental_vs_no_task_arm") or {}
    targeting = {a["name"]: a.get("targeting") for a in report.get("arms", [])}
    rows = []
    for arm in section.get("arms", []):
        figure = arm.get("incremental_active_per_1000_budget")
        if not figure:
            continue
        external = targeting.get(arm["arm"]) == "external"  # e.g. the lab's oracle
        rows.append({"label": f"{arm['arm']} (targets from outside)" if external else arm["arm"],
                     "value": figure.get("value"), "ci_low": figure.get("ci_low"),
                     "ci_high": figure.get("ci_high"), "muted": external})  # fmt: skip
    if not rows:
        return None
    return _svg(incremental_figure(rows), "incremental")
