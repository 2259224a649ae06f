"""The references a practitioner checks a deep model against, on `evaluate`'s own samples.

- **zero**: predicts nothing happens. On sparse, heavy-tailed counts it can beat a model
  trained for the mean on NMAE, so every table shows it.
- **last 7 days repeated**: the last week's sums as next week's. Its P(inactive) is the share
  of training samples with the same number of active days in the last week (0..7) that had
  none in the next: the last week, read as a calibrated probability.
- **LightGBM**: gradient-boosted trees fitted on exactly `evaluate`'s training samples and
  early-stopped on its validation split, on features flattened from the same windows: per
  counter the sums over the last 7 / 14 / 28 / 40 days, active days over the same spans, days
  since the last active day, the standardised scenario attributes and statistics, and the
  profile (its categories as LightGBM categoricals). Counts use a Poisson objective, money a
  Tweedie one (a point mass at zero and a heavy tail), inactivity a binary one, and the 80%
  intervals (and medians) of expenditure and clicks one quantile objective per level.

Each reference returns a `training.ScoredRun` in the targets' normalised units, as the
networks do, with NaN where it has no such output (zero has no P(inactive) nor interval).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from predictor import features
from predictor.features import CH, COUNTERS, Dataset, SampleSet
from predictor.models import INTERVAL_TASKS, TASKS
from predictor.networks.distribution import CONTINUOUS_TASKS, QUANTILES
from predictor.training import ScoredRun

REFERENCES = ("zero", "last_7_days", "lightgbm")
SPANS = (7, 14, 28, 40)
_ACTIVE = CH["expenditure"]  # an active day is a day with spend, as in the targets


def flat_feature_names(dataset: Dataset) -> list[str]:
    n_scenario = dataset.spec.n_scenario_features
    return [
        *(f"{c}_sum_{d}d" for d in SPANS for c in COUNTERS),
        *(f"active_days_{d}d" for d in SPANS),
        "days_since_active",
        *(f"scenario_{i}" for i in range(n_scenario)),
        "business_scale",
        "main_category",
        "star_level",
        "tenure",
    ]


def flat_features(cube: features.Cube, samples: SampleSet) -> np.ndarray:
    """[N, F] features of `flat_feature_names` for every sample, from its window in `cube`."""
    a = np.searchsorted(cube.advertiser_pks, samples.advertiser_pks)
    s = np.searchsorted(cube.scenario_pks, samples.scenario_pks)
    day = cube.day_index(samples.as_of)
    span = max(SPANS)
    offsets = np.arange(-span + 1, 1)  # [W] days ending at the as-of date
    days = day[:, None] + offsets[None, :]
    inside = days >= 0
    window = cube.values[a[:, None], s[:, None], np.maximum(days, 0)]  # [N, W, 8]
    window[~inside] = 0
    # Sums over the last d days: a reversed cumulative sum read at d.
    reversed_sums = np.cumsum(window[:, ::-1].astype(np.float64), axis=1)  # [N, W, 8]
    sums = np.concatenate([reversed_sums[:, d - 1] for d in SPANS], axis=1)  # [N, 4 * 8]
    active = window[..., _ACTIVE] > 0  # [N, W]
    active_days = np.cumsum(active[:, ::-1], axis=1)
    active_spans = np.stack([active_days[:, d - 1] for d in SPANS], axis=1)  # [N, 4]
    any_active = active.any(axis=1)
    since = np.where(any_active, np.argmax(active[:, ::-1], axis=1), span).astype(np.float64)
    return np.concatenate(
        [
            sums,
            active_spans.astype(np.float64),
            since[:, None],
            samples.scenario.astype(np.float64),
            samples.profile_cat.astype(np.float64),
            samples.profile_num.astype(np.float64),
        ],
        axis=1,
    )


def _normalised(dataset: Dataset, rates: np.ndarray, quantiles: np.ndarray) -> tuple:
    scales = np.asarray(dataset.spec.target_scales, dtype=np.float64)
    return (rates / scales).astype(np.float32), (quantiles / scales[None, :, None]).astype(
        np.float32
    )


def _nan_quantiles(n: int) -> np.ndarray:
    return np.full((n, len(TASKS), len(QUANTILES)), np.nan)


def zero_run(dataset: Dataset) -> ScoredRun:
    n = len(dataset.test)
    rates, quantiles = _normalised(dataset, np.zeros((n, len(TASKS))), _nan_quantiles(n))
    return ScoredRun(rates, 0, quantiles, np.full(n, np.nan, np.float32))


def _last_week(flat: np.ndarray) -> np.ndarray:
    """[N, 5] the last 7 days' sums in TASKS order."""
    week = {c: flat[:, i] for i, c in enumerate(COUNTERS)}  # the first block: 7-day sums
    week["active_days"] = flat[:, len(SPANS) * len(COUNTERS)]
    return np.stack([week[t] for t in TASKS], axis=1)


def last_week_run(dataset: Dataset, train_flat: np.ndarray, test_flat: np.ndarray) -> ScoredRun:
    train_days = _last_week(train_flat)[:, TASKS.index("active_days")].astype(np.int64)
    lapsed = dataset.train.targets[:, TASKS.index("active_days")] == 0
    horizon = dataset.spec.horizon_days
    seen = np.bincount(train_days, minlength=horizon + 1).astype(np.float64)
    # Laplace-smoothed, so a last-week count unseen in training gets 1/2, not 0/0.
    table = (np.bincount(train_days, weights=lapsed, minlength=horizon + 1) + 0.5) / (seen + 1)
    rates = _last_week(test_flat)
    p = table[np.minimum(rates[:, TASKS.index("active_days")].astype(np.int64), horizon)]
    rates, quantiles = _normalised(dataset, rates, _nan_quantiles(len(rates)))
    return ScoredRun(rates, 0, quantiles, p.astype(np.float32))


@dataclass(frozen=True)
class BoostingConfig:
    learning_rate: float = 0.05
    num_leaves: int = 63
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    max_rounds: int = 1000
    early_stopping_rounds: int = 30

    def params(self, objective: str, seed: int, **extra: float) -> dict:
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "seed": seed,
            "num_threads": os.cpu_count() or 1,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
            **extra,
        }


def _categorical(dataset: Dataset) -> list[int]:
    start = len(SPANS) * (len(COUNTERS) + 1) + 1 + dataset.spec.n_scenario_features
    return [start, start + 1, start + 2]  # business scale, main category, star level


def lightgbm_run(
    dataset: Dataset,
    flat: dict[str, np.ndarray],
    seed: int,
    config: BoostingConfig | None = None,
) -> tuple[ScoredRun, dict[str, int]]:
    """Fit every booster on dataset.train (early-stopped on dataset.valid), score dataset.test.

    `flat` holds `flat_features` of the three splits. Returns the run and each booster's
    best round."""
    config = config or BoostingConfig()
    names = flat_feature_names(dataset)
    categorical = _categorical(dataset)

    def fit_predict(label_of: int | None, objective: str, **extra: float) -> tuple[np.ndarray, int]:
        def label(part: SampleSet) -> np.ndarray:
            if label_of is None:  # inactivity
                return (part.targets[:, TASKS.index("active_days")] == 0).astype(np.float64)
            return part.targets[:, label_of].astype(np.float64)

        train = lgb.Dataset(
            flat["train"],
            label(dataset.train),
            feature_name=names,
            categorical_feature=categorical,
            free_raw_data=False,
        )
        valid = lgb.Dataset(flat["valid"], label(dataset.valid), reference=train)
        booster = lgb.train(
            config.params(objective, seed, **extra),
            train,
            num_boost_round=config.max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        best = booster.best_iteration or booster.current_iteration()
        return booster.predict(flat["test"], num_iteration=best), int(best)

    rounds: dict[str, int] = {}
    n = len(dataset.test)
    rates = np.zeros((n, len(TASKS)))
    for j, task in enumerate(TASKS):
        if task in CONTINUOUS_TASKS:
            rates[:, j], rounds[task] = fit_predict(j, "tweedie", tweedie_variance_power=1.5)
        else:
            rates[:, j], rounds[task] = fit_predict(j, "poisson")
    quantiles = _nan_quantiles(n)
    for task in INTERVAL_TASKS:
        j = TASKS.index(task)
        for k, level in enumerate(QUANTILES):
            quantiles[:, j, k], rounds[f"{task}_q{level}"] = fit_predict(j, "quantile", alpha=level)
    p_inactive, rounds["inactive"] = fit_predict(None, "binary")
    rates, quantiles = _normalised(dataset, np.maximum(rates, 0), np.maximum(quantiles, 0))
    return ScoredRun(rates, 0, quantiles, p_inactive.astype(np.float32)), rounds


def dataset_cube(dataset: Dataset) -> features.Cube:
    """The daily counters behind a dataset's windows (every advertiser, its data window)."""
    pks = np.array(sorted(dataset.scenario_codes), dtype=np.int64)
    return features.cube_load(start=dataset.start, end=dataset.end, scenario_pks=pks)
