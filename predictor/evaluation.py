"""Compare M2M with the baselines on one time split, in the layout of the paper's Table 4.

`evaluate` builds the features once, trains every model (and, on request, the ablations of
5.3.1) for each seed on the same train/valid/test split, scores the test split, and returns a
JSON-ready report: NMAE and SMAPE (DESIGN section 4; 0/0 counts as 0 in SMAPE) per scenario x
task and overall, mean and standard deviation over seeds, and M2M's relative improvement over
the best baseline of every column, (best baseline - M2M) / best baseline, as the paper reports.
"Overall" is the mean of a metric over the scenario x task cells (every cell weighs the same,
so a minor scenario counts as much as a major one). Nothing is written to the model registry:
evaluation models live in memory only.

Beside the networks it scores the references of `predictor.reference` (zero, last 7 days
repeated, LightGBM on the same samples), and for every model the figures decisions rest on
(`predictor.decision_report`): P(inactive) as a probability, the 80% intervals' coverage and
width, and the median against the mean. `predictions_dir` receives every model x seed's test
predictions as .npz, so anyone can recompute every figure.

On a simulated world, `oracle_world` (the world.npz of the `simulate` run whose files were
ingested) adds the error floor of `predictor.oracle`: two rows scored from the latent state
(mean and median of the simulated futures) and, per column, the headroom (best baseline -
best oracle row) / best baseline: the most any model could gain on the best baseline there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor import decision_metrics, decision_report, features, oracle, reference, training
from predictor.metrics import metric_table
from predictor.models import TASKS
from predictor.networks import MODEL_KINDS
from predictor.networks.spec import CONFIGS
from predictor.services import TrainOptions

METRICS = ("nmae", "smape")
BASELINES = ("single_task", "shared_bottom", "cross_stitch", "mmoe", "mran", "cgc")
# Ablations of 5.3.1: M2M with one component switched off.
ABLATIONS: dict[str, dict[str, Any]] = {
    "m2m_no_tower": {"use_meta_tower": False},
    "m2m_no_attention": {"use_meta_attention": False},
    "m2m_no_transformer": {"use_transformer": False},
}
LABELS = {
    "m2m": "M2M",
    "single_task": "Single Task",
    "shared_bottom": "Shared Bottom",
    "cross_stitch": "Cross-Stitch",
    "mmoe": "MMoE",
    "mran": "MRAN",
    "cgc": "CGC",
    "m2m_no_tower": "M2M w/o MT",
    "m2m_no_attention": "M2M w/o MA",
    "m2m_no_transformer": "M2M w/o TL",
    "zero": "Zero",
    "last_7_days": "Last 7 days repeated",
    "lightgbm": "LightGBM",
    "oracle_mean": "Oracle: mean of futures",
    "oracle_median": "Oracle: median of futures",
}
ORACLES = ("oracle_mean", "oracle_median")
OVERALL = "overall"


def _json_float(value: float) -> float | None:
    """JSON (and PostgreSQL's jsonb) has no NaN: an undefined metric is stored as null."""
    return float(value) if np.isfinite(value) else None


def fmt(value: float | None) -> str:
    """A metric for people: 4 decimals, or n/a when undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def metrics_compute(
    *, predicted: np.ndarray, actual: np.ndarray, scenarios: np.ndarray
) -> dict[str, Any]:
    """NMAE and SMAPE per scenario x task, per task and overall (values [N, 5], TASKS order);
    see `predictor.metrics.metric_table` for the layout. Undefined values are None."""
    return metric_table(actual, predicted, scenarios, TASKS)


def _columns(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten one run's metrics to {"scenario/task" or "overall": {metric: value or NaN}}."""
    flat = {
        f"{code}/{task}": {m: _nan(cell[m]) for m in METRICS}
        for code, tasks in metrics["by_scenario"].items()
        for task, cell in tasks.items()
    }
    flat[OVERALL] = {m: _nan(metrics[OVERALL][m]) for m in METRICS}
    return flat


def _summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and standard deviation (ddof=1 when there are several seeds) of every column."""
    flats = [_columns(r) for r in runs]
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    for column in flats[0]:
        summary[column] = {}
        for m in METRICS:
            values = np.array([f[column][m] for f in flats], dtype=np.float64)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            summary[column][m] = {"mean": _json_float(np.mean(values)), "std": _json_float(std)}
    return summary


def _improvement(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """(best baseline - M2M) / best baseline per column and metric (lower is better)."""
    baselines = [k for k in BASELINES if k in results]
    if "m2m" not in results or not baselines:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column, cell in results["m2m"]["summary"].items():
        out[column] = {}
        for m in METRICS:
            means = {
                k: _nan(results[k]["summary"].get(column, {}).get(m, {}).get("mean"))
                for k in baselines
            }
            finite = {k: v for k, v in means.items() if np.isfinite(v)}
            ours = _nan(cell[m]["mean"])
            if not finite or not np.isfinite(ours):
                out[column][m] = {"relative": None, "best_baseline": None}
                continue
            best = min(finite, key=finite.__getitem__)
            rel = (finite[best] - ours) / finite[best] if finite[best] > 0 else np.nan
            out[column][m] = {"relative": _json_float(rel), "best_baseline": best}
    return out


def _best_mean(results: dict[str, Any], names: list[str], column: str, metric: str) -> float:
    """The lowest finite mean of `metric` in `column` among `names` (NaN if none)."""
    cells = (results[k]["summary"].get(column, {}).get(metric, {}) for k in names)
    means = [_nan(cell.get("mean")) for cell in cells]
    return min((v for v in means if np.isfinite(v)), default=np.nan)


def _headroom(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """(best baseline - best oracle row) / best baseline per column and metric."""
    baselines = [k for k in BASELINES if k in results]
    oracles = [k for k in ORACLES if k in results]
    if not baselines or not oracles:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for column in results[oracles[0]]["summary"]:
        out[column] = {}
        for m in METRICS:
            baseline = _best_mean(results, baselines, column, m)
            floor = _best_mean(results, oracles, column, m)
            out[column][m] = _json_float((baseline - floor) / baseline if baseline > 0 else np.nan)
    return out


def hparams_for(kind: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of one model kind: `hparams` is either {kind: {...}} per kind, or
    one flat dict shared by all, of which each model takes the keys its config has (d_input is
    common to all; d_view only to the models with expert views, ...)."""
    if set(hparams) & set(MODEL_KINDS):
        return dict(hparams.get(kind, {}))
    accepted = {f.name for f in fields(CONFIGS[kind])}
    return {k: v for k, v in hparams.items() if k in accepted}


def evaluate(
    *,
    models: list[str],
    seeds: int = 3,
    ablations: bool = False,
    options: TrainOptions | None = None,
    on_progress: Callable[[str], None] | None = None,
    oracle_world: str | Path | None = None,
    oracle_replicas: int = oracle.DEFAULT_REPLICAS,
    jobs: int = 1,
    references: tuple[str, ...] = reference.REFERENCES,
    predictions_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train and score every model x seed on one split; return the report (JSON-serialisable).

    `options` sets the data window, epochs, batch size, device, ... for every run;
    `oracle_world` adds the simulated world's error floor (module docstring); `jobs` > 1 runs
    that many model x seed fits at once in worker processes (`_fits`); `references` picks
    rows of `predictor.reference`; `predictions_dir` gets the test predictions (`_save`).
    """
    options = options or TrainOptions()
    names = list(models) + (list(ABLATIONS) if ablations else [])
    unknown = [n for n in names if n not in MODEL_KINDS and n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_KINDS)}.")
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be at least 1.")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be at least 1.")
    wrong = [r for r in references if r not in reference.REFERENCES]
    if wrong:
        raise ValueError(f"unknown reference(s) {wrong}; choose from {reference.REFERENCES}.")
    say = on_progress or (lambda message: None)
    world = oracle.world_load(oracle_world) if oracle_world is not None else None
    data = options.dataset()
    say(f"samples: train {len(data.train)}, valid {len(data.valid)}, test {len(data.test)}")
    input_spec = data.spec.input_spec()
    train, valid, test = (s.tensors(data.spec) for s in (data.train, data.valid, data.test))
    scales = np.asarray(data.spec.target_scales, dtype=np.float32)
    test_codes = data.scenario_labels(data.test.scenario_pks)
    seed_range = range(options.seed, options.seed + seeds)
    runs = [(name, seed) for name in names for seed in seed_range]
    scored: dict[tuple[str, int], dict[str, Any]] = {}
    tensors = (train, valid, test)

    def score(name: str, seed: int, run: training.ScoredRun) -> None:
        metrics = metrics_compute(
            predicted=run.rates * scales, actual=data.test.targets, scenarios=test_codes
        )
        metrics["best_epoch"] = run.best_epoch
        metrics["decisions"] = decision_report.run_decisions(
            run, data.test.targets, scales.astype(np.float64), test_codes
        )
        scored[name, seed] = metrics
        if predictions_dir is not None:
            _save(Path(predictions_dir) / f"{name}-seed{seed}.npz", data, run, scales)
        say(
            f"{name} seed {seed}: overall NMAE {fmt(metrics[OVERALL]['nmae'])},"
            f" SMAPE {fmt(metrics[OVERALL]['smape'])}"
        )

    fits = _fits(runs, options, input_spec.to_dict(), tensors, data.valid.scenario_pks, jobs)
    for (name, seed), run in fits:
        score(name, seed, run)
    for (name, seed), run in _reference_runs(data, references, seed_range, say):
        runs.append((name, seed))
        score(name, seed, run)
    results: dict[str, Any] = {}
    for name in [*names, *references]:
        by_seed = [scored[n, seed] for n, seed in runs if n == name]
        decisions = [r.pop("decisions") for r in by_seed]
        results[name] = {
            "runs": by_seed,
            "summary": _summarise(by_seed),
            "decisions": decisions,
            "decisions_summary": decision_report.summarise(decisions),
        }
    if world is not None:
        floor = oracle.oracle_predict(
            world, data.test, horizon_days=data.spec.horizon_days, replicas=oracle_replicas
        )
        for name, predicted in zip(ORACLES, (floor.mean, floor.median), strict=True):
            metrics = metrics_compute(
                predicted=predicted, actual=data.test.targets, scenarios=test_codes
            )
            results[name] = {"runs": [metrics], "summary": _summarise([metrics])}
            say(f"{name}: overall NMAE {fmt(metrics[OVERALL]['nmae'])}")
    return {
        "settings": {
            **options.to_json(),
            "seeds": seeds,
            "split": data.split.to_dict(),
            "samples": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
            "oracle_world": None if oracle_world is None else str(oracle_world),
            "oracle_replicas": oracle_replicas if oracle_world is not None else None,
        },
        "scenarios": sorted({c for c in test_codes.tolist()}),
        "tasks": list(TASKS),
        "results": results,
        "improvement": _improvement(results),
        "headroom": _headroom(results),
    }


def _reference_runs(
    data: features.Dataset,
    names: tuple[str, ...],
    seeds: range,
    say: Callable[[str], None],
) -> Iterator[tuple[tuple[str, int], training.ScoredRun]]:
    """The reference rows: zero and last week are the same every seed, LightGBM is refitted."""
    if not names:
        return
    flat = {}
    if {"last_7_days", "lightgbm"} & set(names):
        cube = reference.dataset_cube(data)
        flat = {
            p: reference.flat_features(cube, getattr(data, p)) for p in ("train", "valid", "test")
        }
        del cube
    for seed in seeds:
        if "zero" in names:
            yield ("zero", seed), reference.zero_run(data)
        if "last_7_days" in names:
            yield ("last_7_days", seed), reference.last_week_run(data, flat["train"], flat["test"])
        if "lightgbm" in names:
            run, rounds = reference.lightgbm_run(data, flat, seed)
            say(f"lightgbm seed {seed}: best rounds {rounds}")
            yield ("lightgbm", seed), run


def _save(path: Path, data: features.Dataset, run: training.ScoredRun, scales: np.ndarray) -> None:
    """One model x seed's test predictions in the data's units, with the samples' keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    low, high = training.interval_bounds(run.quantiles, scales, TASKS)
    np.savez_compressed(
        path,
        advertiser_pk=data.test.advertiser_pks,
        scenario_pk=data.test.scenario_pks,
        scenario=data.scenario_labels(data.test.scenario_pks),
        as_of=data.test.as_of.astype("datetime64[D]").astype(str),
        tasks=np.array(TASKS),
        actual=data.test.targets,
        mean=run.rates.astype(np.float64) * scales,
        median=run.quantiles[..., 1].astype(np.float64) * scales,
        p10=low,
        p90=high,
        p_inactive=run.p_inactive,
    )


def _fits(
    runs: list[tuple[str, int]],
    options: TrainOptions,
    spec: dict[str, Any],
    tensors: tuple[training.Tensors, training.Tensors, training.Tensors],
    valid_groups: np.ndarray,
    jobs: int,
) -> Iterator[tuple[tuple[str, int], training.ScoredRun]]:
    """Fit and score every (model name, seed), one after another or `jobs` at a time.

    Workers are spawned processes that import only the Django-free `training` module; the
    tensors reach them through shared memory. At batch 256 one fit keeps a GPU about 1% busy,
    so on a GPU several side by side finish a table several times sooner. Each fit is the
    same computation either way: on a CPU, where training is deterministic, the table is the
    same whatever `jobs` is. Results come back in the order the fits finish.
    """
    config = options.train_config(None, tensors[0]["target"])

    def arguments(name: str, seed: int) -> tuple[Any, ...]:
        kind = "m2m" if name in ABLATIONS else name
        hparams = {**hparams_for(kind, options.hparams), **ABLATIONS.get(name, {})}
        return kind, spec, hparams, tensors, replace(config, seed=seed), valid_groups

    if jobs == 1:
        for name, seed in runs:
            yield (name, seed), training.fit_and_predict(*arguments(name, seed))
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=torch.multiprocessing.get_context("spawn"))
    try:
        futures = {
            pool.submit(training.fit_and_predict, *arguments(*run), threads=threads): run
            for run in runs
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # after a failed fit, the queued ones are dropped rather than waited for
        pool.shutdown(cancel_futures=True)


def _cell(summary: dict[str, Any], column: str, metric: str) -> str:
    value = summary.get(column, {}).get(metric)
    if value is None or value["mean"] is None:
        return "n/a"
    return f"{value['mean']:.4f} ± {value['std']:.4f}"


def _gain(improvement: dict[str, Any], column: str, metric: str) -> str:
    value = improvement.get(column, {}).get(metric)
    if value is None or value["relative"] is None:
        return "n/a"
    return f"{100 * value['relative']:+.1f}%"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report_markdown(report: dict[str, Any]) -> str:
    """Table 4 layout: one table per task (scenarios as column pairs), then the overall table."""
    results, improvement = report["results"], report["improvement"]
    headroom = report.get("headroom") or {}
    scenarios, settings = report["scenarios"], report["settings"]
    lines = [
        "# M2M against the baselines",
        "",
        f"Test split as-of dates {settings['split']['test'][0]} .. {settings['split']['test'][-1]};"
        f" samples train/valid/test {settings['samples']['train']}/{settings['samples']['valid']}/"
        f"{settings['samples']['test']}; {settings['seeds']} seed(s),"
        f" up to {settings['epochs']} epochs."
        " Cells: mean ± standard deviation over seeds. Last row: M2M's relative improvement over"
        " the best baseline of the column (positive = M2M better).",
        "",
    ]
    rows = list(results)
    for task in report["tasks"]:
        columns = [f"{s}/{task}" for s in scenarios]
        lines += [f"## Task {task}", ""]
        header = ["Method"] + [f"{s} {m.upper()}" for s in scenarios for m in METRICS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in rows:
            cells = [_cell(results[name]["summary"], c, m) for c in columns for m in METRICS]
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
        if improvement:
            gains = [_gain(improvement, c, m) for c in columns for m in METRICS]
            lines.append("| M2M vs best baseline | " + " | ".join(gains) + " |")
        if headroom:
            room = [_share(headroom.get(c, {}).get(m)) for c in columns for m in METRICS]
            lines.append("| Headroom over best baseline | " + " | ".join(room) + " |")
        lines.append("")
    lines += [
        "## Overall (mean over scenario x task cells)",
        "",
        "| Method | NMAE | SMAPE |",
        "|---|---|---|",
    ]
    for name in rows:
        summary = results[name]["summary"]
        lines.append(
            f"| {LABELS.get(name, name)} | {_cell(summary, OVERALL, 'nmae')}"
            f" | {_cell(summary, OVERALL, 'smape')} |"
        )
    if improvement:
        lines.append(
            f"| M2M vs best baseline | {_gain(improvement, OVERALL, 'nmae')}"
            f" | {_gain(improvement, OVERALL, 'smape')} |"
        )
    if headroom:
        overall = headroom[OVERALL]
        lines.append(
            f"| Headroom over best baseline | {_share(overall['nmae'])}"
            f" | {_share(overall['smape'])} |"
        )
        lines += [
            "",
            "Oracle rows: predictions from the simulator's latent state on each as-of date"
            f" ({report['settings']['oracle_replicas']} simulated futures per sample), the floor"
            " of any model's error. Headroom: (best baseline - best oracle row) / best baseline,"
            " the most any model could gain on the best baseline.",
        ]
    decisions = decision_report.markdown(results, scenarios, LABELS)
    if decisions:
        lines += ["", decisions]
    return "\n".join(lines) + "\n"


def report_write(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write results.md, results.json and reliability.png into `out_dir` (created if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "results.md", out / "results.json"
    md.write_text(report_markdown(report))
    curves = decision_report.reliability_curves(report["results"], LABELS)
    if curves:
        decision_metrics.reliability_png(
            curves, out / "reliability.png", "P(inactive), test split, pooled (first seed)"
        )
    js.write_text(json.dumps(report, indent=2, default=str, allow_nan=False))
    return md, js
