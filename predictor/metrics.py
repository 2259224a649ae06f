"""Evaluation metrics of the paper (5.1.4): SMAPE and NMAE, per scenario x task and overall.

    SMAPE = 1/N sum_i |y_hat_i - y_i| / ((y_hat_i + y_i) / 2)      (eq. 21), a term with
            y_hat_i = y_i = 0 counts as 0 (a correct prediction of no activity)
    NMAE  = sum_i |y_hat_i - y_i| / sum_i y_i                       (eq. 22)

SMAPE averages per advertiser (micro), NMAE weighs advertisers by volume (macro in the paper's
words). NMAE is undefined when every y_i is 0 (a scenario where nobody spent in the window): it
is 0 when the predictions are all 0 too and NaN otherwise (None in `metric_table`, whose output
must survive JSON and PostgreSQL jsonb), and such cells are left out of the overall average.
"Overall" is the mean over the scenario x task cells, as in the paper's "Overall (5 Task *
5 Sce)" column; pooling the errors of different tasks would add money to days. Pure numpy, no
Django: evaluation code and the trainer both call it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def smape_terms(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """|y_hat - y| / ((y_hat + y) / 2) element by element, with 0/0 = 0."""
    y_true, y_pred = _checked(y_true, y_pred)
    denom = (y_pred + y_true) / 2.0
    err = np.abs(y_pred - y_true)
    out = np.zeros_like(err)
    np.divide(err, denom, out=out, where=denom > 0)  # eq. 21 terms; denom 0 only when both 0
    return out


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Eq. 21 over all elements."""
    terms = smape_terms(y_true, y_pred)
    return float(terms.mean()) if terms.size else float("nan")


def nmae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Eq. 22 over all elements."""
    y_true, y_pred = _checked(y_true, y_pred)
    return _nmae_from_sums(float(np.abs(y_pred - y_true).sum()), float(y_true.sum()))


def metric_table(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scenarios: np.ndarray | Sequence[Hashable],
    tasks: Sequence[str],
) -> dict[str, Any]:
    """SMAPE and NMAE per scenario and task, per task, and overall, as JSON-ready dicts.

    y_true, y_pred: [N, M] in the same (de-normalised) units; scenarios: [N] labels (codes or
    ids) of each row's scenario; tasks: the M task names in column order.

    Returns {"by_scenario": {scenario: {task: cell}}, "by_task": {task: cell},
    "overall": {"smape", "nmae", "cells"}} with cell = {"smape", "nmae", "n"}; scenario keys
    are str() of the labels; an undefined value is None.
    """
    y_true, y_pred = _checked(y_true, y_pred)
    if y_true.ndim != 2 or y_true.shape[1] != len(tasks):
        raise ValueError(
            f"y_true is {list(y_true.shape)}, expected [N, {len(tasks)}] (one column per task)."
        )
    labels = np.asarray(scenarios)
    if labels.shape != (y_true.shape[0],):
        raise ValueError(
            f"scenarios has shape {list(labels.shape)}, expected [{y_true.shape[0]}]: "
            "one scenario label per row."
        )
    names, group = np.unique(labels, return_inverse=True)
    n_groups = len(names)
    counts = np.bincount(group, minlength=n_groups)  # [S]
    err_sum = _group_sum(group, np.abs(y_pred - y_true), n_groups)  # [S, M]
    true_sum = _group_sum(group, y_true, n_groups)  # [S, M]
    smape_sum = _group_sum(group, smape_terms(y_true, y_pred), n_groups)  # [S, M]

    by_scenario: dict[str, dict[str, dict[str, float | int | None]]] = {}
    cell_smape: list[float | None] = []
    cell_nmae: list[float | None] = []
    for s, name in enumerate(names):
        row: dict[str, dict[str, float | int | None]] = {}
        for t, task in enumerate(tasks):
            cell = _cell(smape_sum[s, t], err_sum[s, t], true_sum[s, t], int(counts[s]))
            row[task] = cell
            cell_smape.append(cell["smape"])
            cell_nmae.append(cell["nmae"])
        by_scenario[str(name)] = row

    n = y_true.shape[0]
    by_task = {
        task: _cell(smape_sum[:, t].sum(), err_sum[:, t].sum(), true_sum[:, t].sum(), n)
        for t, task in enumerate(tasks)
    }
    overall = {
        "smape": _nanmean(cell_smape),
        "nmae": _nanmean(cell_nmae),
        "cells": len(cell_smape),
    }
    return {"by_scenario": by_scenario, "by_task": by_task, "overall": overall}


def _checked(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true {list(y_true.shape)} and y_pred {list(y_pred.shape)} have different shapes."
        )
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds NaN or infinite values.")
        if (arr < 0).any():
            raise ValueError(
                f"{name} holds negative values; SMAPE and NMAE need counts and sums >= 0."
            )
    return y_true, y_pred


def _group_sum(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Column-wise sums of `values` [N, M] per group id: [n_groups, M]."""
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, group, values)
    return out


def _nmae_from_sums(err_sum: float, true_sum: float) -> float:
    if true_sum > 0:
        return err_sum / true_sum  # eq. 22
    return 0.0 if err_sum == 0 else float("nan")


def _cell(
    smape_sum: float, err_sum: float, true_sum: float, n: int
) -> dict[str, float | int | None]:
    nmae_value = _nmae_from_sums(float(err_sum), float(true_sum))
    return {
        "smape": float(smape_sum) / n if n else None,
        "nmae": None if np.isnan(nmae_value) else nmae_value,
        "n": n,
    }


def _nanmean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
