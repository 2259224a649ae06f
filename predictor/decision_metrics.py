"""Metrics of the predictions that drive decisions: P(inactive) and the 80% intervals.

Targeting acts on P(no active day in the horizon), so it is scored as a probability: ROC AUC
(does it rank who lapses first), log-loss and Brier score (proper scores), and the expected
calibration error (ECE: over 10 equal-width bins of the prediction, the sample-weighted mean of
|mean predicted - observed rate|), with the bins behind it for a reliability diagram. ECE is
biased upwards by sampling noise: a perfectly calibrated model scores about 0.025 on a
scenario of 1,000 samples. So beside it stands its floor, the mean ECE over outcomes drawn
from the predictions themselves; an ECE near its floor is calibration as good as the sample
can show, and a target below the floor cannot be checked on that sample. Task
targets and ops read the intervals, scored by empirical coverage (target 0.8) and mean width.

Every table has a cell per scenario, "pooled" over all samples, and "mean_of_cells" (each
scenario weighs the same, as the paper's overall NMAE). Undefined values are None (JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

INACTIVITY_METRICS = ("auc", "log_loss", "brier", "ece", "ece_floor")
INTERVAL_METRICS = ("coverage", "width")
ECE_BINS = 10
_CLIP = 1e-7  # log-loss of a prediction of exactly 0 or 1
FLOOR_DRAWS = 200


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half (Mann-Whitney U / n1 n0)."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, _CLIP, 1 - _CLIP)
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width bin of p: count, mean predicted, observed rate (None when empty)."""
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    observed = np.bincount(which, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, rate = predicted / count, observed / count
    return {
        "count": count.tolist(),
        "predicted": [_json(v) for v in mean_p],
        "observed": [_json(v) for v in rate],
    }


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    table = reliability_bins(y, p, bins)
    count = np.asarray(table["count"], dtype=np.float64)
    filled = count > 0
    gap = np.abs(
        np.asarray(table["predicted"], dtype=np.float64)[filled]
        - np.asarray(table["observed"], dtype=np.float64)[filled]
    )
    return float((count[filled] * gap).sum() / count.sum()) if count.sum() else float("nan")


def ece_floor(p: np.ndarray, bins: int = ECE_BINS, draws: int = FLOOR_DRAWS) -> float:
    """The mean ECE of a perfectly calibrated model with predictions p [N]: outcomes drawn
    `draws` times as Bernoulli(p) (a fixed seed, so a report is reproducible)."""
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    one_hot = np.zeros((len(p), bins))
    one_hot[np.arange(len(p)), which] = 1.0
    outcomes = np.random.default_rng(0).uniform(size=(draws, len(p))) < p  # [R, N]
    gaps = (outcomes - p) @ one_hot  # [R, bins]: sum of (y - p) in each bin
    return float(np.abs(gaps).sum(1).mean() / len(p))


def _json(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _inactivity_cell(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(y),
        "rate": _json(y.mean()) if len(y) else None,
        "auc": _json(roc_auc(y, p)),
        "log_loss": _json(log_loss(y, p)),
        "brier": _json(brier(y, p)),
        "ece": _json(ece(y, p)),
        "ece_floor": _json(ece_floor(p)),
    }


def _mean_of_cells(cells: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        values = [c[name] for c in cells if c.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def inactivity_table(
    inactive: np.ndarray, p_inactive: np.ndarray, scenarios: np.ndarray
) -> dict[str, Any] | None:
    """Scores of P(inactive) [N] against the outcome [N] bool; None if the model gives none."""
    p = np.asarray(p_inactive, dtype=np.float64)
    if np.isnan(p).all():
        return None
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_inactive must lie in [0, 1] for every sample (or be NaN for all).")
    y = np.asarray(inactive, dtype=bool)
    by = {
        str(c): _inactivity_cell(y[scenarios == c], p[scenarios == c]) for c in np.unique(scenarios)
    }
    return {
        "by_scenario": by,
        "pooled": _inactivity_cell(y, p),
        "mean_of_cells": _mean_of_cells(list(by.values()), INACTIVITY_METRICS),
        "reliability": reliability_bins(y, p),
    }


def _interval_cell(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    inside = (y >= low) & (y <= high)
    return {
        "n": len(y),
        "coverage": _json(inside.mean()) if len(y) else None,
        "width": _json((high - low).mean()) if len(y) else None,
    }


def interval_table(
    actual: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    scenarios: np.ndarray,
    tasks: tuple[str, ...],
) -> dict[str, Any] | None:
    """Coverage and width of [low, high] ([N, M] each, data units) per scenario x task."""
    if np.isnan(low).all():
        return None
    by = {
        str(c): {
            t: _interval_cell(actual[rows, j], low[rows, j], high[rows, j])
            for j, t in enumerate(tasks)
        }
        for c in np.unique(scenarios)
        for rows in [scenarios == c]
    }
    pooled = {t: _interval_cell(actual[:, j], low[:, j], high[:, j]) for j, t in enumerate(tasks)}
    cells = [cell for per_task in by.values() for cell in per_task.values()]
    return {
        "by_scenario": by,
        "pooled": pooled,
        "mean_of_cells": _mean_of_cells(cells, INTERVAL_METRICS),
    }


def reliability_png(curves: dict[str, dict[str, list]], path: Path, title: str) -> Path:
    """A reliability diagram: observed rate against mean predicted P(inactive), per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for label, table in curves.items():
        filled = [
            (p, o)
            for p, o, n in zip(table["predicted"], table["observed"], table["count"], strict=True)
            if n
        ]
        if filled:
            xs, ys = zip(*filled, strict=True)
            axes.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=label)
    axes.set(xlabel="mean predicted P(inactive)", ylabel="observed inactive rate", title=title)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
