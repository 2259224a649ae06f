"""Batch prediction: idempotent upserts, chunk accounting, new scenarios, the eager chord."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db.models import Max, Sum

from advertisers.ingestion import ingest_files
from advertisers.models import Advertiser, DailyStat, Scenario
from advertisers.simulator import simulate
from predictor import features, selectors, services, tasks
from predictor.models import ModelVersion, Prediction, PredictionRun
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
