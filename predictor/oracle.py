"""The error floor of a simulated world: what a model that knew the latent state would score.

The data of a simulated world are drawn from a known process, so the best prediction any model
could make for a sample is computable: re-simulate the world up to the sample's as-of date
(`simulate(..., through=as_of)`, the same path as the ingested rows), let it continue `replicas`
times with fresh draws (`World.futures`) and summarise the next tau days per pair:

- the median of the futures minimises the expected absolute error, so no prediction made from
  what was known on the as-of date has a lower expected NMAE (eq. 22);
- the mean is what a model trained with the Poisson loss estimates at best.

The oracle knows more than any model can (engagement, churn state, budget factors, ...), so
its error is a floor, not a target; the gap from the best baseline down to it bounds what a
better model could gain on that baseline. Before scoring, the world's own continuation is
checked against the realised targets in the database, so a world file that did not produce
the ingested data is refused rather than compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from django.db.models import Model

from advertisers.models import Advertiser, Scenario
from advertisers.simulator import SimulationError, World, simulate
from predictor.features import SampleSet
from predictor.models import TASKS

DEFAULT_REPLICAS = 64


class OracleError(ValueError):
    """The world file cannot explain the samples; the message says what differs."""


@dataclass(frozen=True)
class OraclePredictions:
    mean: np.ndarray  # [N, 5] TASKS order
    median: np.ndarray  # [N, 5]


def world_load(path: str | Path) -> World:
    """The saved world (the world.npz `simulate` writes), or an OracleError naming the file."""
    try:
        return World.load(path)
    except SimulationError as exc:
        raise OracleError(str(exc)) from exc


def oracle_predict(
    saved: World, samples: SampleSet, *, horizon_days: int, replicas: int
) -> OraclePredictions:
    """The oracle's predictions for every sample (which must carry realised targets)."""
    if samples.targets is None:
        raise OracleError("the oracle needs samples with realised targets to check the world.")
    try:
        rows = _world_rows(saved, samples)
    except SimulationError as exc:
        raise OracleError(str(exc)) from exc
    mean = np.empty_like(samples.targets)
    median = np.empty_like(samples.targets)
    as_of = samples.as_of.astype("datetime64[D]").astype(date)
    for day in sorted(set(as_of.tolist())):
        pick = np.flatnonzero(as_of == day)
        world = _world_through(saved, day, horizon_days)
        sums = world.futures(days=horizon_days, replicas=replicas, own_path=True)
        a, s = rows[0][pick], rows[1][pick]
        futures = np.stack([sums[t][:, a, s] for t in TASKS], axis=-1)  # [1 + R, n, 5]
        _check_own_path(futures[0], samples.targets[pick], day)
        mean[pick] = futures[1:].mean(axis=0)
        median[pick] = np.median(futures[1:], axis=0)
    return OraclePredictions(mean=mean, median=median)


def _world_rows(world: World, samples: SampleSet) -> tuple[np.ndarray, np.ndarray]:
    """The latent-array rows (advertiser, scenario) of every sample."""
    pks, ids = _column_pair(Advertiser, "advertiser_id")
    a = world.advertiser_index(ids[np.searchsorted(pks, samples.advertiser_pks)], what="oracle")
    pks, codes = _column_pair(Scenario, "code")
    unknown = sorted(set(codes[np.isin(pks, samples.scenario_pks)]) - set(world.scenario_codes))
    if unknown:
        raise OracleError(
            f"oracle: scenarios {unknown} are not in the world's {world.scenario_codes}."
        )
    in_world = np.array(
        [world.scenario_codes.index(c) if c in world.scenario_codes else -1 for c in codes]
    )
    return a, in_world[np.searchsorted(pks, samples.scenario_pks)]


def _column_pair(model: type[Model], field: str) -> tuple[np.ndarray, np.ndarray]:
    """(pk, field) of every row of `model`, ordered by pk, as two arrays."""
    rows = list(model.objects.order_by("pk").values_list("pk", field))
    return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=str)


def _world_through(saved: World, as_of: date, horizon_days: int) -> World:
    """The saved world's own simulation, stopped on `as_of`."""
    if as_of + timedelta(days=horizon_days) > saved.first_end_date:
        raise OracleError(
            f"oracle: as-of {as_of} + {horizon_days} days passes the simulated period, which"
            f" ends on {saved.first_end_date} (later days depend on the tasks handed out);"
            f" evaluate with --end {saved.first_end_date}."
        )
    days = (saved.first_end_date - saved.start_date).days + 1
    return simulate(
        advertisers=saved.n_advertisers,
        days=days,
        seed=saved.seed,
        end_date=saved.first_end_date,
        through=as_of,
    )


def _check_own_path(own: np.ndarray, realised: np.ndarray, as_of: date) -> None:
    """The world's own continuation must reproduce the targets the database holds."""
    off = ~np.isclose(own, realised, rtol=1e-4, atol=0.01)
    if off.any():
        i, t = np.argwhere(off)[0]
        raise OracleError(
            f"this world did not produce the ingested data: for {int(off.any(axis=1).sum())} of"
            f" {len(own)} samples as of {as_of} the realised targets differ (first: {TASKS[t]}"
            f" {realised[i, t]:g} in the database, {own[i, t]:g} in the world). Pass the"
            " world.npz of the `simulate` run whose files were ingested."
        )
