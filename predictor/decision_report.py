"""`evaluate`'s decision tables: P(inactive), the 80% intervals and the median, per model.

`run_decisions` scores one model x seed's test predictions (`decision_metrics`); `summarise`
turns the runs of a model into mean and standard deviation over seeds of every figure, keyed by
its path ("inactivity/pooled/auc"); `markdown` renders the tables that follow Table 4 in
results.md; `reliability_curves` feeds the reliability diagram (first seed of each model).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from predictor.decision_metrics import inactivity_table, interval_table
from predictor.metrics import metric_table
from predictor.models import INTERVAL_TASKS, TASKS
from predictor.training import Predicted, ScoredRun, interval_bounds

_ACTIVE_DAYS = TASKS.index("active_days")
_SKIPPED = {"reliability", "n", "cells"}


def run_decisions(
    run: ScoredRun | Predicted, actual: np.ndarray, scales: np.ndarray, scenarios: np.ndarray
) -> dict[str, Any]:
    """Inactivity scores, interval coverage and width, NMAE/SMAPE of the mean and the median
    of the interval tasks. actual [N, 5] raw, run in normalised units; None where the model
    has no such output."""
    cols = [TASKS.index(t) for t in INTERVAL_TASKS]
    low, high = interval_bounds(run.quantiles, scales, TASKS)
    median = run.quantiles[..., 1].astype(np.float64) * scales  # [N, M]
    has_median = not np.isnan(median[:, cols]).any()
    return {
        "inactivity": inactivity_table(actual[:, _ACTIVE_DAYS] == 0, run.p_inactive, scenarios),
        "intervals": interval_table(
            actual[:, cols], low[:, cols], high[:, cols], scenarios, INTERVAL_TASKS
        ),
        "point": {
            "mean": metric_table(
                actual[:, cols], run.rates[:, cols] * scales[cols], scenarios, INTERVAL_TASKS
            ),
            "median": metric_table(
                actual[:, cols], np.maximum(median[:, cols], 0), scenarios, INTERVAL_TASKS
            )
            if has_median
            else None,
        },
    }


def _flatten(tree: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            if key not in _SKIPPED:
                out |= _flatten(value, f"{prefix}{key}/")
        return out
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return {prefix.rstrip("/"): float(tree)}
    return {}  # None (undefined) leaves no figure


def summarise(decisions: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """{path: {"mean", "std"}} over seeds (std with ddof=1 when there are several)."""
    flats = [_flatten(d) for d in decisions]
    paths = sorted(set().union(*flats))
    summary: dict[str, dict[str, float | None]] = {}
    for path in paths:
        values = np.array([f[path] for f in flats if path in f])
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[path] = {"mean": float(values.mean()), "std": std}
    return summary


def reliability_curves(results: dict[str, Any], labels: dict[str, str]) -> dict[str, dict]:
    curves = {}
    for name, result in results.items():
        first = (result.get("decisions") or [None])[0]
        if first and first.get("inactivity"):
            curves[labels.get(name, name)] = first["inactivity"]["reliability"]
    return curves


def _cell(summary: dict[str, Any], path: str, digits: int = 4) -> str:
    value = summary.get(path)
    if value is None:
        return "n/a"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _table(
    rows: dict[str, dict[str, Any]], header: list[str], paths: list[str], labels: dict[str, str]
) -> list[str]:
    lines = ["| Method | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
    for name, summary in rows.items():
        cells = [_cell(summary, p) for p in paths]
        if all(c == "n/a" for c in cells):
            continue
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(results: dict[str, Any], scenarios: list[str], labels: dict[str, str]) -> str:
    rows = {n: r["decisions_summary"] for n, r in results.items() if "decisions_summary" in r}
    if not rows:
        return ""
    scopes = ("pooled", "mean_of_cells")
    lines = [
        "## Inactivity: P(no active day in the next 7 days)",
        "",
        "Per (advertiser, scenario) sample: ROC AUC, log-loss, Brier score, expected"
        " calibration error (10 bins) and its floor (the ECE a perfectly calibrated model"
        " with the same predictions would show from sampling noise alone). Pooled over all"
        " test samples, and the mean over scenarios. Reliability diagram: reliability.png.",
        "",
    ]
    metrics = ("auc", "log_loss", "brier", "ece", "ece_floor")
    lines += _table(
        rows,
        [f"{m} ({s.replace('_', ' ')})" for s in scopes for m in metrics],
        [f"inactivity/{s}/{m}" for s in scopes for m in metrics],
        labels,
    )
    lines += ["By scenario: AUC / log-loss / ECE / ECE floor.", ""]
    by_scenario = ("auc", "log_loss", "ece", "ece_floor")
    lines += _table(
        rows,
        [f"{c} {m}" for c in scenarios for m in ("AUC", "log-loss", "ECE", "ECE floor")],
        [f"inactivity/by_scenario/{c}/{m}" for c in scenarios for m in by_scenario],
        labels,
    )
    lines += [
        "## 80% intervals (10th to 90th percentile)",
        "",
        "Coverage (target 0.80) by scenario, then pooled coverage and mean width.",
        "",
    ]
    lines += _table(
        rows,
        [f"{c} {t}" for c in scenarios for t in INTERVAL_TASKS],
        [f"intervals/by_scenario/{c}/{t}/coverage" for c in scenarios for t in INTERVAL_TASKS],
        labels,
    )
    lines += _table(
        rows,
        [f"{t} {m}" for t in INTERVAL_TASKS for m in ("coverage", "width")],
        [f"intervals/pooled/{t}/{m}" for t in INTERVAL_TASKS for m in ("coverage", "width")],
        labels,
    )
    lines += [
        "## Mean or median as the point prediction (expenditure and clicks)",
        "",
        "Overall NMAE and SMAPE (mean over scenario x task cells) of each model's mean and of"
        " its median.",
        "",
    ]
    lines += _table(
        rows,
        ["mean NMAE", "mean SMAPE", "median NMAE", "median SMAPE"],
        [f"point/{p}/overall/{m}" for p in ("mean", "median") for m in ("nmae", "smape")],
        labels,
    )
    return "\n".join(lines)
