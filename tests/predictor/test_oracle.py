"""The oracle rows of `evaluate`: the error floor a simulated world sets for any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from advertisers.ingestion import ingest_files
from advertisers.simulator import simulate
from predictor.features import dataset_build
from predictor.models import TASKS
from predictor.oracle import OracleError, oracle_predict, world_load

ADVERTISERS, DAYS, SEED = 60, 100, 3
SMALL_RUN = ("--window", "14", "--bins", "8", "--device", "cpu", "--batch-size", "64")


@pytest.fixture
def world(db, tmp_path: Path) -> Path:
    """A simulated world loaded through the real ingestion; returns its saved state."""
    world = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED)
    files = world.write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"],
        advertisers=files["advertisers"],
        stats=files["daily_stats"],
        load_date=world.end_date,
    )
    return world.save(tmp_path / "data" / "world.npz")


def test_it_predicts_better_than_a_trained_model(world: Path, tmp_path: Path):
    out = tmp_path / "eval"
    call_command(
        "evaluate",
        *("--models", "single_task", "--seeds", "1", "--epochs", "1", *SMALL_RUN),
        *("--hparams", '{"d_input": 4}', "--no-progress"),
        *("--oracle-world", str(world), "--oracle-replicas", "16", "--out", str(out)),
    )
    report = json.loads((out / "results.json").read_text())
    results = report["results"]
    model = results["single_task"]["summary"]["overall"]["nmae"]["mean"]
    floor = results["oracle_median"]["summary"]["overall"]["nmae"]["mean"]
    assert 0 < floor < model
    assert report["headroom"]["overall"]["nmae"] == pytest.approx((model - floor) / model)
    assert report["settings"]["oracle_replicas"] == 16
    markdown = (out / "results.md").read_text()
    assert "| Oracle: median of futures |" in markdown
    assert "| Headroom over best baseline |" in markdown


def test_its_median_beats_its_mean_on_nmae_and_both_track_the_targets(world: Path):
    test = dataset_build(window_days=14, n_bins=8).test
    floor = oracle_predict(world_load(world), test, horizon_days=7, replicas=32)
    assert floor.mean.shape == floor.median.shape == test.targets.shape
    clicks = TASKS.index("clicks")
    actual = test.targets[:, clicks]
    error = {
        name: np.abs(getattr(floor, name)[:, clicks] - actual).sum() for name in ("mean", "median")
    }
    assert error["median"] < error["mean"]
    # a pair's expected clicks follow its realised clicks across the samples
    assert np.corrcoef(floor.mean[:, clicks], actual)[0, 1] > 0.8


def test_it_refuses_a_world_that_did_not_produce_the_data(world: Path, tmp_path: Path):
    other = simulate(advertisers=ADVERTISERS, days=DAYS, seed=SEED + 1).save(tmp_path / "o.npz")
    test = dataset_build(window_days=14, n_bins=8).test
    with pytest.raises(OracleError, match="did not produce the ingested data"):
        oracle_predict(world_load(other), test, horizon_days=7, replicas=2)


def test_the_command_names_a_world_file_that_is_not_one(world: Path, tmp_path: Path):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a world")
    with pytest.raises(CommandError, match="not a saved world"):
        call_command(
            "evaluate",
            *("--models", "single_task", "--seeds", "1", "--epochs", "1", *SMALL_RUN),
            *("--no-progress", "--oracle-world", str(bogus), "--out", str(tmp_path / "e")),
        )


def test_it_refuses_days_after_the_simulated_period(world: Path):
    saved = world_load(world)
    advanced = saved.advance(days=7, out_path=world.parent / "week.csv")
    ingest_files(stats=advanced.path, load_date=advanced.end_date)
    test = dataset_build(window_days=14, n_bins=8).test
    with pytest.raises(OracleError, match=f"evaluate with --end {saved.first_end_date}"):
        oracle_predict(world_load(world), test, horizon_days=7, replicas=2)
