"""`evaluate`'s decision figures and reference rows, on evaluate's own samples."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db.models import Sum

from advertisers.ingestion import ingest_files
from advertisers.models import DailyStat
from advertisers.simulator import simulate
from predictor import decision_metrics, reference
from predictor.services import TrainOptions

OPTIONS = TrainOptions(window_days=14, n_bins=8, device="cpu", batch_size=64, epochs=1)
RUN = ("--window", "14", "--bins", "8", "--device", "cpu", "--batch-size", "64", "--no-progress")


@pytest.fixture
def world(db, tmp_path: Path):
    files = simulate(advertisers=40, days=100, seed=4).write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"], advertisers=files["advertisers"], stats=files["daily_stats"]
    )


@pytest.fixture
def evaluated(world, tmp_path: Path) -> Path:
    out = tmp_path / "eval"
    call_command(
        "evaluate",
        *("--models", "m2m", "--seeds", "1", "--epochs", "1", *RUN, "--out", str(out)),
        *("--hparams", '{"d_input": 4, "d_view": 16, "n_experts": 2}'),
    )
    return out


def test_it_scores_every_model_and_reference_on_the_same_test_samples(evaluated: Path):
    data = OPTIONS.dataset()
    keys = ("advertiser_pk", "scenario_pk", "as_of")
    expected = (data.test.advertiser_pks, data.test.scenario_pks, data.test.as_of.astype(str))
    for name in ("m2m", "zero", "last_7_days", "lightgbm"):
        saved = np.load(evaluated / "predictions" / f"{name}-seed0.npz")
        for key, values in zip(keys, expected, strict=True):
            np.testing.assert_array_equal(saved[key], values, err_msg=f"{name} {key}")
        np.testing.assert_allclose(saved["actual"], data.test.targets)


def test_it_reports_figures_anyone_can_recompute_from_the_saved_predictions(evaluated: Path):
    report = json.loads((evaluated / "results.json").read_text())
    for name in ("m2m", "lightgbm", "last_7_days"):
        saved = np.load(evaluated / "predictions" / f"{name}-seed0.npz")
        tasks = list(saved["tasks"])
        inactive = saved["actual"][:, tasks.index("active_days")] == 0
        pooled = report["results"][name]["decisions"][0]["inactivity"]["pooled"]
        assert pooled["auc"] == pytest.approx(
            decision_metrics.roc_auc(inactive, saved["p_inactive"].astype(np.float64))
        )
        assert pooled["log_loss"] == pytest.approx(
            decision_metrics.log_loss(inactive, saved["p_inactive"].astype(np.float64))
        )
    saved = np.load(evaluated / "predictions" / "lightgbm-seed0.npz")
    j = list(saved["tasks"]).index("expenditure")
    y = saved["actual"][:, j]
    covered = ((y >= saved["p10"][:, j]) & (y <= saved["p90"][:, j])).mean()
    intervals = report["results"]["lightgbm"]["decisions"][0]["intervals"]
    assert intervals["pooled"]["expenditure"]["coverage"] == pytest.approx(covered)


def test_it_writes_the_decision_tables_and_the_reliability_diagram(evaluated: Path):
    report = json.loads((evaluated / "results.json").read_text())
    zero = report["results"]["zero"]["decisions"][0]
    assert zero["inactivity"] is None and zero["intervals"] is None  # it predicts no spread
    m2m = report["results"]["m2m"]["decisions_summary"]
    assert 0 <= m2m["inactivity/pooled/auc"]["mean"] <= 1
    assert 0 <= m2m["intervals/pooled/clicks/coverage"]["mean"] <= 1
    assert "point/median/overall/nmae" in m2m
    markdown = (evaluated / "results.md").read_text()
    for heading in (
        "## Inactivity",
        "## 80% intervals",
        "| LightGBM |",
        "| Last 7 days repeated |",
    ):
        assert heading in markdown
    assert (evaluated / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_flattens_the_window_the_sample_keys_name(world):
    data = OPTIONS.dataset()
    flat = reference.flat_features(reference.dataset_cube(data), data.test)
    names = reference.flat_feature_names(data)
    assert flat.shape == (len(data.test), len(names))
    for i in (0, len(data.test) // 2, len(data.test) - 1):
        as_of = data.test.as_of[i].item()
        rows = DailyStat.objects.filter(
            advertiser_id=data.test.advertiser_pks[i],
            scenario_id=data.test.scenario_pks[i],
            date__gt=as_of - timedelta(days=28),
            date__lte=as_of,
        )
        week = rows.filter(date__gt=as_of - timedelta(days=7))
        assert flat[i, names.index("clicks_sum_7d")] == (week.aggregate(s=Sum("clicks"))["s"] or 0)
        spend = rows.aggregate(s=Sum("expenditure"))["s"] or 0
        assert flat[i, names.index("expenditure_sum_28d")] == pytest.approx(float(spend))
        active = rows.filter(expenditure__gt=0)
        assert flat[i, names.index("active_days_28d")] == active.count()
        last = active.order_by("-date").first()
        if last is not None and last.date > as_of - timedelta(days=40):
            assert flat[i, names.index("days_since_active")] == (as_of - last.date).days


def test_it_computes_auc_log_loss_and_calibration_by_hand():
    y = np.array([True, False, True, False])
    p = np.array([0.9, 0.2, 0.4, 0.4])
    assert decision_metrics.roc_auc(y, p) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 0.6]))
    assert decision_metrics.log_loss(y, p) == pytest.approx(expected)
    assert decision_metrics.brier(y, p) == pytest.approx(np.mean([0.01, 0.04, 0.36, 0.16]))
    # bins: [0.2] -> 0 observed of 1; [0.4, 0.4] -> 1 of 2; [0.9] -> 1 of 1
    assert decision_metrics.ece(y, p) == pytest.approx((0.2 + 2 * 0.1 + 0.1) / 4)


def test_it_finds_a_calibrated_probability_calibrated_and_a_shifted_one_not():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 50_000)
    y = rng.uniform(0, 1, 50_000) < p
    assert decision_metrics.ece(y, p) < 0.01
    assert decision_metrics.ece(y, np.clip(p + 0.1, 0, 1)) > 0.08


def test_it_puts_a_calibrated_models_ece_at_its_floor_and_the_floor_falls_with_the_sample():
    rng = np.random.default_rng(1)
    small, large = rng.uniform(0.05, 0.6, 1_000), rng.uniform(0.05, 0.6, 16_000)
    floor_small, floor_large = decision_metrics.ece_floor(small), decision_metrics.ece_floor(large)
    # Sampling noise of a bin's mean falls as 1 / sqrt(n): 16 times the samples, a quarter.
    assert 3.0 < floor_small / floor_large < 5.0
    eces = [decision_metrics.ece(rng.uniform(size=1_000) < small, small) for _ in range(200)]
    assert np.mean(eces) == pytest.approx(floor_small, rel=0.1)
    shifted = np.clip(small + 0.1, 0, 1)
    assert decision_metrics.ece(rng.uniform(size=1_000) < small, shifted) > floor_small + 0.05


def test_it_refuses_a_probability_outside_zero_and_one():
    with pytest.raises(ValueError, match="p_inactive must lie in"):
        decision_metrics.inactivity_table(np.array([True]), np.array([1.2]), np.array(["s"]))
