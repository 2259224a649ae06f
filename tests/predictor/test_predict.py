"""Batch prediction: idempotent upserts, chunk accounting, new scenarios, the eager chord."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Max, Sum

from advertisers.ingestion import ingest_files
from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.simulator import simulate
from predictor import features, selectors, services, tasks, training
from predictor.models import TASKS, ModelVersion, Prediction, PredictionRun
from predictor.networks.distribution import DistributionHead
from predictor.services import PredictionError, TrainOptions

TINY = TrainOptions(
    epochs=2,
    batch_size=64,
    window_days=14,
    stride=7,
    n_bins=8,
    device="cpu",
    hparams={"d_input": 4, "n_experts": 2, "d_view": 16, "d_meta": 8, "meta_layers": 2},
)


@pytest.fixture
def version(db, tmp_path: Path, settings) -> ModelVersion:
    """An active tiny M2M trained on 30 simulated advertisers over 100 days."""
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    world = simulate(advertisers=30, days=100, seed=5)
    files = world.write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"],
        advertisers=files["advertisers"],
        stats=files["daily_stats"],
        load_date=world.end_date,
    )
    trained = services.model_train(kind="m2m", options=TINY)
    return services.model_version_activate(version=trained)


def _last_day():
    return DailyStat.objects.aggregate(last=Max("date"))["last"]


def test_it_stores_one_prediction_per_eligible_pair(version: ModelVersion):
    as_of = _last_day()
    stored = services.predictions_predict(model_version=version, as_of=as_of)
    eligible = features.samples_at(
        spec=features.FeatureSpec.from_dict(version.feature_spec), as_of=as_of
    )
    assert stored == len(eligible) == Prediction.objects.filter(model_version=version).count()
    values = np.array(
        Prediction.objects.values_list("clicks", "expenditure", "active_days", "impressions", "gmv")
    )
    assert np.isfinite(values).all() and (values >= 0).all()
    assert set(Prediction.objects.values_list("horizon_days", flat=True)) == {7}


def test_it_does_not_duplicate_predictions_on_a_rerun(version: ModelVersion):
    as_of = _last_day()
    first = services.predictions_predict(model_version=version, as_of=as_of)
    before = dict(Prediction.objects.values_list("pk", "expenditure"))
    second = services.predictions_predict(model_version=version, as_of=as_of)
    assert first == second == Prediction.objects.count()
    assert dict(Prediction.objects.values_list("pk", "expenditure")) == pytest.approx(before)


def test_it_updates_a_stored_prediction_in_place(version: ModelVersion):
    as_of = _last_day()
    services.predictions_predict(model_version=version, as_of=as_of)
    row = Prediction.objects.first()
    Prediction.objects.filter(pk=row.pk).update(expenditure=-1.0)
    services.predictions_predict(model_version=version, as_of=as_of)
    row.refresh_from_db()
    assert row.expenditure >= 0


def test_it_counts_a_retried_chunk_once(version: ModelVersion):
    run = services.prediction_run_create(model_version=version, as_of=_last_day(), chunk_size=10)
    chunk = run.chunks.first()
    # A worker stored the chunk's rows and died before counting it ...
    services.predictions_predict(
        model_version=version,
        as_of=run.as_of,
        advertiser_pk_range=(chunk.advertiser_pk_lo, chunk.advertiser_pk_hi),
    )
    first = services.prediction_chunk_execute(chunk=chunk)  # ... so the task is re-delivered
    again = services.prediction_chunk_execute(chunk=chunk)  # and once more after it succeeded
    run.refresh_from_db()
    assert first == again > 0
    assert run.chunks_done == 1
    assert run.pairs_scored == first == Prediction.objects.count()


def test_it_predicts_a_new_scenario_from_its_attributes(version: ModelVersion):
    as_of = _last_day()
    new = Scenario.objects.create(
        code="mini_games",
        name="Mini games",
        kind="other",
        launched_on=as_of - timedelta(days=2),
        attributes={
            "attr_avg_cpc": 0.5,
            "attr_ctr": 0.03,
            "attr_cvr": 0.02,
            "attr_traffic_index": 0.1,
        },
    )
    services.predictions_predict(model_version=version, as_of=as_of)
    rows = Prediction.objects.filter(scenario=new)
    active = DailyStat.objects.filter(date__gt=as_of - timedelta(days=14), date__lte=as_of)
    assert rows.count() == active.values("advertiser").distinct().count() > 0
    spend = np.array(rows.values_list("expenditure", flat=True))
    days = np.array(rows.values_list("active_days", flat=True))
    weekly = active.values("advertiser", "scenario").annotate(s=Sum("expenditure"))
    largest = float(max(r["s"] for r in weekly))
    assert np.isfinite(spend).all() and (spend >= 0).all() and spend.max() < 10 * largest
    assert np.isfinite(days).all() and days.max() < 14


def test_it_refuses_non_finite_predictions_and_stores_nothing(version: ModelVersion):
    pks = np.array(list(Advertiser.objects.values_list("pk", flat=True)[:2]))
    scenario = Scenario.objects.first().pk
    values = np.ones((2, 5))
    values[1, 2] = np.nan
    with pytest.raises(PredictionError, match="non-finite"):
        services.predictions_store(
            model_version=version,
            as_of=_last_day(),
            advertiser_pks=pks,
            scenario_pks=np.array([scenario, scenario]),
            values=values,
        )
    assert not Prediction.objects.exists()


def test_it_scores_a_chunked_run_as_one_whole_with_the_runs_scenario_statistics(
    version: ModelVersion,
):
    as_of = _last_day()
    columns = ("advertiser_id", "scenario_id", "clicks", "gmv", "active_days")
    services.predictions_predict(model_version=version, as_of=as_of)
    whole = sorted(Prediction.objects.values_list(*columns))
    Prediction.objects.all().delete()

    run = services.prediction_run_create(model_version=version, as_of=as_of, chunk_size=7)
    services.prediction_run_execute(run=run)

    assert run.chunks_total == 5
    stored = {int(pk): tuple(v) for pk, v in run.scenario_activity.items()}
    assert stored == features.scenario_activity_query(as_of)
    chunked = sorted(Prediction.objects.values_list(*columns))
    assert [row[:2] for row in chunked] == [row[:2] for row in whole]
    np.testing.assert_allclose([row[2:] for row in chunked], [row[2:] for row in whole], rtol=1e-5)


def test_it_scores_everyone_through_an_eager_chord(version: ModelVersion, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    run_id = tasks.predict_all(kind="m2m", chunk_size=7)
    run = PredictionRun.objects.get(pk=run_id)
    assert run.status == "succeeded"
    assert run.chunks_total == 5  # 30 advertisers in chunks of 7
    assert run.chunks_done == run.chunks_total
    assert run.pairs_scored == Prediction.objects.filter(model_version=version).count() > 0


def test_it_returns_the_latest_predictions_of_the_active_version(version: ModelVersion):
    last = _last_day()
    services.predictions_predict(model_version=version, as_of=last - timedelta(days=1))
    services.predictions_predict(model_version=version, as_of=last)
    latest = selectors.predictions_latest(kind="m2m")
    assert latest.count() > 0
    assert set(latest.values_list("as_of", flat=True)) == {last}
    advertiser = latest.first().advertiser
    mine = selectors.predictions_latest(kind="m2m", advertiser=advertiser)
    assert set(mine.values_list("advertiser_id", flat=True)) == {advertiser.pk}


def test_it_returns_no_predictions_without_an_active_version(db):
    assert not selectors.predictions_latest(kind="cgc").exists()


def test_the_predict_command_scores_with_the_active_version(version: ModelVersion, capsys):
    call_command("predict", "--kind", "m2m", "--chunk-size", "10", "--device", "cpu")
    assert "succeeded" in capsys.readouterr().out
    assert Prediction.objects.filter(model_version=version, as_of=_last_day()).exists()


_DISTRIBUTION = ("p_inactive", "expenditure_p10", "expenditure_p90", "clicks_p10", "clicks_p90")


def test_it_stores_the_loaded_models_probabilities_and_intervals(version: ModelVersion):
    """What the registry stores is what the in-memory model predicts, in the data's units."""
    as_of = _last_day()
    services.predictions_predict(model_version=version, as_of=as_of)
    loaded = services.model_version_load(version=version)
    samples = features.samples_at(spec=loaded.spec, as_of=as_of)
    predicted = training.predict_outputs(loaded.model, samples.tensors(loaded.spec))
    scales = np.asarray(loaded.spec.target_scales)
    order = {
        (a, s): i
        for i, (a, s) in enumerate(zip(samples.advertiser_pks, samples.scenario_pks, strict=True))
    }
    rows = list(Prediction.objects.values_list("advertiser_id", "scenario_id", *_DISTRIBUTION))
    index = np.array([order[(a, s)] for a, s, *_ in rows])
    stored = np.array([r[2:] for r in rows], dtype=np.float64)  # [N, 5]

    np.testing.assert_allclose(stored[:, 0], predicted.p_inactive[index], rtol=1e-5)
    identity = DistributionHead(loaded.model.spec, 1).platt
    # the calibration fitted on the validation split came along
    assert not torch.equal(loaded.model.distribution.platt, identity)
    assert ((stored[:, 0] > 0) & (stored[:, 0] < 1)).all()
    for k, task in enumerate(("expenditure", "clicks")):
        j = TASKS.index(task)
        q = predicted.quantiles[index, j] * scales[j]  # [N, 3]
        lo, hi = stored[:, 1 + 2 * k], stored[:, 2 + 2 * k]
        expected_lo = np.maximum(np.minimum(q[:, 0], q[:, 2]), 0)
        expected_hi = np.maximum(np.maximum(q[:, 0], q[:, 2]), 0)
        if task == "clicks":  # a count's interval ends are whole counts
            expected_lo, expected_hi = np.round(expected_lo), np.round(expected_hi)
        np.testing.assert_allclose(lo, expected_lo, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(hi, expected_hi, rtol=1e-5, atol=1e-9)
        assert (lo <= hi).all()


def _distribution_rows(version: ModelVersion, store) -> list[tuple]:
    pks = np.array(list(Advertiser.objects.order_by("pk").values_list("pk", flat=True)[:3]))
    scenario = Scenario.objects.first().pk
    columns = {
        "advertiser_id": pks,
        "scenario_id": np.full(3, scenario),
        **{t: np.full(3, 2.0) for t in TASKS},
        "p_inactive": np.array([0.25, np.nan, 1.0]),
        "expenditure_p10": np.array([1.0, np.nan, 0.0]),
        "expenditure_p90": np.array([3.0, np.nan, 0.0]),
        "clicks_p10": np.array([0.0, 2.0, np.nan]),
        "clicks_p90": np.array([5.0, 4.0, np.nan]),
    }
    with transaction.atomic():
        store(version.pk, _last_day(), 7, columns)
    rows = list(Prediction.objects.order_by("advertiser_id").values_list(*_DISTRIBUTION))
    Prediction.objects.all().delete()
    return rows


@pytest.mark.parametrize("path", ["_store_postgres", "_store_generic"])
def test_it_stores_unknown_distribution_values_as_null(version: ModelVersion, path: str):
    if path == "_store_postgres" and connection.vendor != "postgresql":
        pytest.skip("the COPY path needs PostgreSQL")
    assert _distribution_rows(version, getattr(services, path)) == [
        (0.25, 1.0, 3.0, 0.0, 5.0),
        (None, None, None, 2.0, 4.0),
        (1.0, 0.0, 0.0, None, None),
    ]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("p_inactive", 1.5, "p_inactive outside"),
        ("expenditure_p10", 9.0, "expenditure interval"),
        ("clicks_p90", np.inf, "clicks interval"),
    ],
)
def test_it_refuses_an_impossible_distribution_and_stores_nothing(
    version: ModelVersion, column: str, value: float, message: str
):
    pks = np.array(list(Advertiser.objects.values_list("pk", flat=True)[:2]))
    scenario = Scenario.objects.first().pk
    distribution = {c: np.full(2, 0.5) for c in _DISTRIBUTION} | {"expenditure_p90": np.ones(2)}
    distribution[column] = np.array([0.5, value])
    with pytest.raises(PredictionError, match=message):
        services.predictions_store(
            model_version=version,
            as_of=_last_day(),
            advertiser_pks=pks,
            scenario_pks=np.array([scenario, scenario]),
            values=np.ones((2, 5)),
            distribution=distribution,
        )
    assert not Prediction.objects.exists()


def test_the_admin_lists_predictions_with_probability_and_intervals(
    version: ModelVersion, admin_client
):
    services.predictions_predict(model_version=version, as_of=_last_day())
    row = Prediction.objects.order_by("-p_inactive").first()
    page = admin_client.get("/admin/predictor/prediction/", {"o": "-5"}).content.decode()
    assert f"{row.p_inactive:.1%}" in page
    assert f"[{row.expenditure_p10:,.1f}, {row.expenditure_p90:,.1f}]" in page
