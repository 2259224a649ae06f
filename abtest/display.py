"""The report's cells as the admin page shows them: pure functions of the report's JSON.

The browser test reads these cells back and compares them with the JSON API, so every figure
shown comes from the report and nothing is computed here beyond formatting. A report frozen
before the sequential and Bayesian sections existed shows "n/a" there.
"""

from __future__ import annotations

from abtest import analysis

MODE_LABELS = {
    analysis.FREQUENTIST: "Frequentist (fixed horizon)",
    analysis.SEQUENTIAL: "Sequential (always-valid)",
    analysis.BAYESIAN: "Bayesian",
}
_CUPED_METRICS = {metric.key for metric in analysis.METRICS if metric.pre is not None}
_CAPPABLE_METRICS = {metric.key for metric in analysis.METRICS if metric.cappable}


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def with_cuped(part: dict, key: str, spec: str) -> str:
    """ "9.98% (7.12%)": the plain figure and, where planned, the CUPED-adjusted one."""
    plain = fmt(part.get(key), spec)
    if f"{key}_cuped" not in part:
        return plain
    return f"{plain} ({fmt(part[f'{key}_cuped'], spec)})"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _variant(row: dict) -> str:
    parts = ["CUPED"] if row["adjustment"] == "cuped" else []
    parts += ["capped"] if row["capped"] else []
    return " + ".join(parts) or "unadjusted"


def _interval(estimate: dict, spec: str) -> str:
    return f"[{fmt(estimate.get('ci_low'), spec)}, {fmt(estimate.get('ci_high'), spec)}]"


def _spec(p_of: str) -> str:
    return "+.2%" if p_of == "relative" else "+.4f"


def mode(report: dict) -> dict:
    """The analysis mode the verdicts follow, with its parameters in words."""
    head = report.get("experiment", {})
    key = head.get("analysis_mode", analysis.FREQUENTIST)
    prior = head.get("prior") or {}
    if key == analysis.SEQUENTIAL:
        detail = f"tuning parameter {head.get('sequential_tuning_parameter', 5000):g}"
    elif key == analysis.BAYESIAN:
        detail = (
            f"normal prior on the relative lift, mean {prior.get('mean', 0):g}, "
            f"sd {prior.get('stddev', 1):g}"
            if prior.get("proper")
            else "flat (improper) prior"
        )
    else:
        detail = "look once, at the end of the evaluation window"
    return {"key": key, "label": MODE_LABELS.get(key, key), "detail": detail}


def _sequential_cells(row: dict, p_of: str) -> dict:
    section = row.get("sequential") or {}
    estimate = section.get(p_of) or {}
    return {
        "seq_ci": _interval(estimate, _spec(p_of)) if estimate else "n/a",
        "seq_p_value": _p(section.get("p_value")),
        "seq_p_value_holm": _p(section.get("p_value_holm")),
        "seq_significant": bool(section.get("significant")),
    }


def _bayesian_cells(row: dict, p_of: str) -> dict:
    section = row.get("bayesian") or {}
    posterior = section.get(p_of) or {}
    spec, risk_spec = _spec(p_of), ".2%" if p_of == "relative" else ".4f"
    return {
        "posterior": fmt(posterior.get("value"), spec),
        "credible": _interval(posterior, spec) if posterior else "n/a",
        "chance_to_win": fmt(posterior.get("chance_to_win"), ".1%"),
        "risk": f"{fmt(posterior.get('risk_control'), risk_spec)} / "
        f"{fmt(posterior.get('risk_treatment'), risk_spec)}",
        "bayes_significant": bool(section.get("significant")),
    }


def rows(report: dict) -> list[dict]:
    """The summary table's cells: the fixed-horizon, sequential and Bayesian column groups."""
    out = []
    for row in report.get("rows", []):
        mean_spec = ".2%" if row["type"] == "proportion" else ".4f"
        absolute = row["absolute"] or {}
        relative = row["relative"] or {}
        p_of = row.get("p_value_of", "relative" if row["relative"] else "absolute")
        headline = relative if p_of == "relative" else absolute
        out.append(
            {
                "id": analysis.row_id({"arm": row.get("arm", "treatment"), **row}),
                "arm": row.get("arm", "treatment"),
                "label": row["label"],
                "type": row["type"],
                "population": row["population"],
                "variant": _variant(row),
                "primary": row["primary"],
                "control": fmt(row["control"]["mean"], mean_spec),
                "treatment": fmt(row["treatment"]["mean"], mean_spec),
                "absolute": fmt(absolute.get("value"), "+.4f"),
                "relative": fmt(relative.get("value"), "+.2%"),
                "ci": _interval(headline, _spec(p_of)),
                "p_of": p_of,
                "p_value": _p(row["p_value"]),
                "p_value_holm": _p(row["p_value_holm"]),
                "p_value_bh": _p(row.get("p_value_bh")),
                "significant": row["significant"],
                "significant_frequentist": row.get("significant_frequentist",
                                                   row["significant"]),
                "not_estimable": row.get("not_estimable"),
                "relative_not_estimable": row.get("relative_not_estimable"),
                "n": f"{row['control']['n']} / {row['treatment']['n']}",
                "adjustment": row["adjustment"],
                "capped": row["capped"],
                "has_cuped": row["metric"] in _CUPED_METRICS,
                "cappable": row["metric"] in _CAPPABLE_METRICS,
                **_sequential_cells(row, p_of),
                **_bayesian_cells(row, p_of),
            }
        )  # fmt: skip
    return out


def _decision_text(row: dict, mode_key: str) -> str:
    """A decision row's headline in the mode's terms: lift [interval], or chance to win."""
    p_of = row["p_value_of"]
    spec = _spec(p_of)
    if mode_key == analysis.BAYESIAN:
        posterior = (row.get("bayesian") or {}).get(p_of) or {}
        return (f"{fmt(posterior.get('value'), spec)}, "
                f"{fmt(posterior.get('chance_to_win'), '.0%')} to win")  # fmt: skip
    section = row.get("sequential") if mode_key == analysis.SEQUENTIAL else row
    estimate = (section or {}).get(p_of) or {}
    return f"{fmt(estimate.get('value'), spec)} {_interval(estimate, spec)}"


def arm_table(report: dict) -> dict:
    """Treatment arms x metrics, each cell the decision row's headline (whole arms, CUPED
    where the metric has it, uncapped) in the experiment's mode: k arms at a glance."""
    mode_key = mode(report)["key"]
    decision = {}
    for row in report.get("rows", []):
        if row["population"] != "itt" or row["capped"]:
            continue
        key = (row["arm"], row["metric"])
        if row["adjustment"] == "cuped" or key not in decision:
            decision[key] = row
    metrics = [(m.key, m.label) for m in analysis.METRICS
               if any(k[1] == m.key for k in decision)]  # fmt: skip
    arms = list(dict.fromkeys(k[0] for k in decision))
    table = []
    for arm in arms:
        cells = []
        for key, _ in metrics:
            row = decision.get((arm, key))
            if row is None:
                cells.append({"metric": key, "text": "-", "row": "", "significant": False,
                              "not_estimable": None})  # fmt: skip
                continue
            reason = row.get("not_estimable")
            cells.append(
                {"metric": key, "row": analysis.row_id(row), "significant": row["significant"],
                 "not_estimable": reason,
                 "text": "not estimable" if reason else _decision_text(row, mode_key)}
            )  # fmt: skip
        table.append({"arm": arm, "cells": cells})
    return {"metrics": [label for _, label in metrics], "arms": table}


def _ci(estimate: dict | None, spec: str) -> str:
    if not estimate or estimate.get("value") is None:
        return "n/a"
    return f"{format(estimate['value'], spec)} {_interval(estimate, spec)}"


def cost_per_incremental(report: dict) -> list[dict]:
    """Extra reward per extra active advertiser with its interval, or why there is none."""
    out = []
    for key, entry in (report.get("cost_per_incremental_active") or {}).items():
        population = entry.get("population", "")
        out.append(
            {
                "key": key,
                "arm": entry.get("arm", key),
                "reference": entry.get("reference", ""),
                "population": "whole arm" if population == "itt" else population,
                "value": _ci(entry, "+,.2f") if entry.get("ci_low") is not None
                else fmt(entry.get("value"), "+,.2f"),
                "not_estimable": entry.get("not_estimable"),
            }
        )  # fmt: skip
    return out


def incremental(report: dict) -> list[dict]:
    """The incremental-effects table's cells: each figure with its 95% interval."""
    section = report.get("incremental_vs_no_task_arm") or {}
    return [
        {
            "arm": arm["arm"],
            "n": arm["n"],
            "reward_spent": arm["reward_spent"],
            "active": _ci(arm["incremental_active"], "+.1f"),
            "net_revenue": _ci(arm["incremental_net_revenue"], "+,.2f"),
            "active_per_1000": _ci(arm["incremental_active_per_1000"], "+.2f"),
            "net_revenue_per_1000": _ci(arm["incremental_net_revenue_per_1000"], "+,.2f"),
            "not_estimable": arm["not_estimable"],
        }
        for arm in section.get("arms", [])
    ]
