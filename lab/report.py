"""The lab's tables and chart, read off the experiment's own report (abtest.selectors).

Per arm: ITT active rate, ARPU, net ARPU after rewards, reward spent; against the no-task arm:
incremental active advertisers, per 1,000 of the arm's budget (every arm has the same budget to
commit, so this ranks arms by what the budget bought) and per 1,000 of reward actually paid
(only completed tasks are paid: the efficiency of the spend), and incremental net revenue per
1,000 paid, with their 95% CIs; and the paper's comparison of M2M against the single-task
baseline on the targeted groups.
Beside the measured increments, two figures only a simulator can give, per 1,000 of budget: the
true increment of each arm, against a twin world advanced without any task
(`LabResult.true_increments`), and the oracle's expected increment of its tasks
(`LabResult.expected`, the formula the oracle allocates by). Neither carries the sampling noise
of the comparison with the no-task arm.
Repeats are summarised as mean +- sd over world seeds.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TARGETED_METRICS = ("active_rate", "arpu")


def _num(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def arm_table(
    report: dict,
    expected: dict[str, dict] | None = None,
    true_increments: dict[str, dict] | None = None,
) -> list[dict]:
    """One row per arm (report order), with the increments against the no-task arm and, where
    given, the simulator's figures (runner._expected_gains, runner._true_increments)."""
    expected, true_increments = expected or {}, true_increments or {}
    totals = report["groups"]
    increments = {
        r["arm"]: r for r in (report.get("incremental_vs_no_task_arm") or {}).get("arms", [])
    }
    rows = []
    for arm in report["arms"]:
        name = arm["name"]
        t = totals[name]
        n = t["assigned"]
        spend, reward = _num(t["expenditure"]), _num(t["reward_cost"])
        inc = increments.get(name, {})
        per_active = inc.get("incremental_active_per_1000") or {}
        per_net = inc.get("incremental_net_revenue_per_1000") or {}
        per_budget = inc.get("incremental_active_per_1000_budget") or {}
        count = inc.get("incremental_active") or {}
        rows.append(
            {
                "arm": name,
                "targeting": arm.get("targeting", ""),
                "n": n,
                "targeted": t["targeted"],
                "active_rate": t["active"] / n if n else math.nan,
                "arpu": spend / n if n else math.nan,
                "net_arpu": (spend - reward) / n if n else math.nan,
                "reward_spent": reward,
                "inc_active": _num(count.get("value")),
                "inc_active_per_1000_budget": _num(per_budget.get("value")),
                "inc_active_per_1000_budget_ci": (
                    _num(per_budget.get("ci_low")),
                    _num(per_budget.get("ci_high")),
                ),
                "inc_active_per_1000": _num(per_active.get("value")),
                "inc_active_per_1000_ci": (
                    _num(per_active.get("ci_low")),
                    _num(per_active.get("ci_high")),
                ),
                "inc_net_per_1000": _num(per_net.get("value")),
                "inc_net_per_1000_ci": (_num(per_net.get("ci_low")), _num(per_net.get("ci_high"))),
                "expected_per_1000_budget": _num(expected.get(name, {}).get("per_1000_budget")),
                "true_per_1000_budget": _num(true_increments.get(name, {}).get("per_1000_budget")),
            }
        )
    return rows


def targeted_comparison(report: dict, *, treatment: str = "m2m") -> list[dict]:
    """The paper's A/B: `treatment` against the control on the targeted groups."""
    out = []
    for row in report["rows"]:
        if row.get("arm") != treatment or row.get("population") != "targeted":
            continue
        if row.get("adjustment") != "none" or row.get("capped"):
            continue
        rel = row.get("relative") or {}
        out.append(
            {
                "metric": row["metric"],
                "relative_lift": _num(rel.get("value")),
                "ci": (_num(rel.get("ci_low")), _num(rel.get("ci_high"))),
                "p_value": _num(row.get("p_value")),
                "p_holm": _num(row.get("p_value_holm")),
            }
        )
    return out


def _fmt(value: float, spec: str = ".4f") -> str:
    return "-" if not math.isfinite(value) else format(value, spec)


def _ci(pair: tuple[float, float], spec: str = ".2f") -> str:
    lo, hi = pair
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{lo:{spec}}, {hi:{spec}}]"


def markdown(result_rows: list[dict], comparison: list[dict]) -> str:
    lines = [
        "| arm | targeting | n | targeted | active rate | ARPU | net ARPU | reward paid "
        "| incr. actives | per 1,000 budget | 95% CI | per 1,000 paid | 95% CI "
        "| incr. net revenue / 1,000 paid | 95% CI | true (twin world) / 1,000 budget "
        "| expected (oracle formula) / 1,000 budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|---:|---:|",
    ]
    for r in result_rows:
        label = f"{r['arm']} (upper bound)" if r["targeting"] == "external" else r["arm"]
        lines.append(
            f"| {label} | {r['targeting']} | {r['n']} | {r['targeted']} "
            f"| {_fmt(r['active_rate'])} | {_fmt(r['arpu'], '.2f')} | {_fmt(r['net_arpu'], '.2f')} "
            f"| {_fmt(r['reward_spent'], '.0f')} | {_fmt(r['inc_active'], '.0f')} "
            f"| {_fmt(r['inc_active_per_1000_budget'], '.2f')} "
            f"| {_ci(r['inc_active_per_1000_budget_ci'])} "
            f"| {_fmt(r['inc_active_per_1000'], '.2f')} "
            f"| {_ci(r['inc_active_per_1000_ci'])} | {_fmt(r['inc_net_per_1000'], '.0f')} "
            f"| {_ci(r['inc_net_per_1000_ci'], '.0f')} "
            f"| {_fmt(r['true_per_1000_budget'], '.2f')} "
            f"| {_fmt(r['expected_per_1000_budget'], '.2f')} |"
        )
    lines += [
        "",
        "M2M against single-task on the targeted groups (paper: +2.59% active rate, +2.09% ARPU):",
        "",
        "| metric | relative lift | 95% CI | p | p (Holm) |",
        "|---|---:|---|---:|---:|",
    ]
    for c in comparison:
        lines.append(
            f"| {c['metric']} | {_fmt(100 * c['relative_lift'], '+.2f')}% "
            f"| {_ci((100 * c['ci'][0], 100 * c['ci'][1]))}% | {_fmt(c['p_value'])} "
            f"| {_fmt(c['p_holm'])} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> dict[str, float]:
    """The headline ratios of incremental actives per 1,000 of budget, the same per 1,000 of
    reward paid, and of the true (twin world) and expected (oracle formula) increments."""
    out = {}
    for suffix, column in (
        ("", "inc_active_per_1000_budget"),
        ("_paid", "inc_active_per_1000"),
        ("_true", "true_per_1000_budget"),
        ("_expected", "expected_per_1000_budget"),
    ):
        by = {r["arm"]: r[column] for r in rows}
        uplift = by.get("m2m-uplift", math.nan)
        for name, key in (("m2m_least_activity", "m2m"), ("oracle", "oracle")):
            base = by.get(key, math.nan)
            out[f"uplift_over_{name}{suffix}"] = uplift / base if base else math.nan
    return out


def repeats_summary(per_repeat: list[list[dict]]) -> list[dict]:
    """mean and sd over repeats of every numeric column, per arm."""
    columns = (
        "active_rate",
        "arpu",
        "net_arpu",
        "reward_spent",
        "inc_active_per_1000_budget",
        "inc_active_per_1000",
        "inc_net_per_1000",
        "true_per_1000_budget",
        "expected_per_1000_budget",
    )
    out = []
    for i, first in enumerate(per_repeat[0]):
        values = {c: np.array([rows[i][c] for rows in per_repeat], float) for c in columns}
        out.append(
            {
                "arm": first["arm"],
                **{f"{c}_mean": _nanmean(v) for c, v in values.items()},
                **{
                    f"{c}_sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else math.nan
                    for c, v in values.items()
                },
            }
        )
    return out


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():  # the no-task arm has no increments: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def repeats_markdown(summary: list[dict]) -> str:
    lines = [
        "| arm | active rate | ARPU | net ARPU | reward paid | incr. actives / 1,000 budget "
        "| incr. actives / 1,000 paid | incr. net revenue / 1,000 paid "
        "| true (twin world) / 1,000 budget | expected (oracle formula) / 1,000 budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        cells = [
            f"{_fmt(s[c + '_mean'], f)} ± {_fmt(s[c + '_sd'], f)}"
            for c, f in (
                ("active_rate", ".4f"),
                ("arpu", ".2f"),
                ("net_arpu", ".2f"),
                ("reward_spent", ".0f"),
                ("inc_active_per_1000_budget", ".2f"),
                ("inc_active_per_1000", ".2f"),
                ("inc_net_per_1000", ".0f"),
                ("true_per_1000_budget", ".2f"),
                ("expected_per_1000_budget", ".2f"),
            )
        ]
        lines.append(f"| {s['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart_png(rows: list[dict], path: Path) -> Path:
    """Incremental actives per 1,000 of budget by arm, with 95% CIs (the admin report's chart)."""
    from abtest.charts import incremental_figure

    upper = {r["arm"]: r["targeting"] == "external" for r in rows}
    figure = incremental_figure(
        [
            {
                "label": f"{r['arm']} (upper bound)" if upper[r["arm"]] else r["arm"],
                "value": r["inc_active_per_1000_budget"],
                "ci_low": r["inc_active_per_1000_budget_ci"][0],
                "ci_high": r["inc_active_per_1000_budget_ci"][1],
                "muted": upper[r["arm"]],
            }
            for r in rows
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def write(out: Path, payload: dict, md: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "lab.json", out / "lab.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    md_path.write_text(md + "\n")
    return json_path, md_path
