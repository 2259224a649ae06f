"""The model registry: training writes a ready version, activation, checksummed loading."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from advertisers.ingestion import ingest_files
from advertisers.simulator import simulate
from predictor import selectors, services
from predictor.models import ModelVersion, TrainingRun
from predictor.services import ModelArtifactError, TrainOptions

TINY_M2M = {
    "d_input": 4,
    "n_experts": 2,
    "d_view": 16,
    "d_task_embedding": 4,
    "d_meta": 8,
    "meta_layers": 2,
    "tower_layers": 1,
}
# Command-line options of a small, fast CPU run, shared by the train and evaluate commands.
SMALL_RUN = (
    "--window",
    "14",
    "--bins",
    "8",
    "--device",
    "cpu",
    "--batch-size",
    "64",
    "--no-progress",
)
TINY = TrainOptions(
    epochs=1, batch_size=64, window_days=14, stride=7, n_bins=8, device="cpu", hparams=TINY_M2M
)


@pytest.fixture
def world(db, tmp_path: Path, settings):
    """30 simulated advertisers over 100 days, loaded through the real ingestion."""
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    world = simulate(advertisers=30, days=100, seed=3)
    files = world.write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"],
        advertisers=files["advertisers"],
        stats=files["daily_stats"],
        load_date=world.end_date,
    )
    return tmp_path


@pytest.fixture
def version(world) -> ModelVersion:
    return services.model_train(kind="m2m", options=TINY)


def test_it_registers_a_ready_version_with_its_artifact(version: ModelVersion, settings):
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY
    path = Path(settings.ARTIFACT_DIR) / version.artifact_path
    assert path.name == f"m2m-{version.pk}.pt"
    assert services._sha256(path.read_bytes()) == version.artifact_sha256
    assert len(version.feature_spec["performance_edges"]) == 8
    assert version.hyperparameters["window_days"] == 14
    assert {"nmae", "smape"} <= set(version.metrics["test"]["overall"])
    assert version.train_start is not None and version.train_end is not None


def test_it_leaves_no_checkpoint_behind_after_success(version: ModelVersion, settings):
    assert not list((Path(settings.ARTIFACT_DIR) / "checkpoints").glob("*.pt"))


def test_it_loads_the_model_that_was_trained(version: ModelVersion):
    loaded = services.model_version_load(version=version)
    assert loaded.version_id == version.pk
    assert loaded.spec.window_days == 14
    assert not loaded.model.training


def test_it_refuses_an_artifact_whose_checksum_differs(version: ModelVersion, settings):
    path = Path(settings.ARTIFACT_DIR) / version.artifact_path
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ModelArtifactError, match="checksum mismatch") as caught:
        services.model_version_load(version=version)
    message = str(caught.value)
    assert version.artifact_sha256 in message
    assert str(path) in message
    assert "retrain or restore the file" in message


def test_it_refuses_a_missing_artifact(version: ModelVersion, settings):
    (Path(settings.ARTIFACT_DIR) / version.artifact_path).unlink()
    with pytest.raises(ModelArtifactError, match="cannot be read"):
        services.model_version_load(version=version)


def test_it_refuses_an_artifact_whose_weights_do_not_fit_the_network(
    version: ModelVersion, settings
):
    """An artifact of a release with another parameter layout: checksummed, but unusable."""
    path = Path(settings.ARTIFACT_DIR) / version.artifact_path
    payload = torch.load(path, weights_only=True)
    state = payload["state_dict"]
    state["tower_units.0.layers.0.w_gen"] = state.pop("tower_units.0.layers.0.w_gen")[:-1]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    version.artifact_sha256 = services._sha256(buffer.getvalue())
    version.save(update_fields=["artifact_sha256"])
    mismatch = r"size mismatch for tower_units\.0\.layers\.0\.w_gen"
    with pytest.raises(ModelArtifactError, match=mismatch) as caught:
        services.model_version_load(version=version)
    assert f"model version {version.pk} (m2m)" in str(caught.value)
    assert "retrain the model" in str(caught.value)


def test_it_keeps_one_active_version_per_kind(version: ModelVersion):
    second = services.model_train(kind="m2m", options=TINY)
    services.model_version_activate(version=version)
    services.model_version_activate(version=second)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.RETIRED
    assert selectors.model_version_active(kind="m2m") == second
    assert ModelVersion.objects.filter(kind="m2m", status="active").count() == 1


def test_it_refuses_to_activate_an_unfinished_version(world):
    unfinished = ModelVersion.objects.create(kind="m2m")
    with pytest.raises(ValueError, match="only a ready or retired version"):
        services.model_version_activate(version=unfinished)


def test_it_refuses_to_activate_a_version_whose_artifact_is_altered(
    version: ModelVersion, settings
):
    path = Path(settings.ARTIFACT_DIR) / version.artifact_path
    path.write_bytes(b"not a model")
    with pytest.raises(ModelArtifactError):
        services.model_version_activate(version=version)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY


def test_the_database_refuses_a_second_active_version(version: ModelVersion):
    services.model_version_activate(version=version)
    other = ModelVersion.objects.create(kind="m2m", status=ModelVersion.Status.READY)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=other.pk).update(status=ModelVersion.Status.ACTIVE)


def test_it_writes_nothing_for_unknown_hyperparameters(world):
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        services.model_train(
            kind="m2m", options=TrainOptions(**{**TINY.to_json(), "hparams": {"depth": 3}})
        )
    assert not ModelVersion.objects.exists()


def test_it_records_a_training_run(world):
    run = services.training_run_create(
        kind="mmoe", options=TINY.__class__(**{**TINY.to_json(), "hparams": {}})
    )
    version = services.training_run_execute(run=run)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.progress == 1.0
    assert run.model_version == version
    assert version.kind == "mmoe"


def test_it_records_the_error_of_a_failed_training_run(world):
    run = TrainingRun.objects.create(kind="m2m", options={**TINY.to_json(), "window_days": 90})
    with pytest.raises(Exception, match="empty split"):
        services.training_run_execute(run=run)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "empty split" in run.error


def test_the_train_command_registers_and_activates(world, capsys):
    call_command(
        "train",
        *("--model", "m2m", "--epochs", "1", *SMALL_RUN),
        *("--hparams", '{"d_view": 16, "n_experts": 2}', "--l2", "1e-4", "--activate"),
    )
    assert "test NMAE" in capsys.readouterr().out
    active = selectors.model_version_active(kind="m2m")
    assert active is not None and active.hyperparameters["l2"] == 1e-4


def test_the_evaluate_command_writes_table_4_without_registering_models(world, tmp_path: Path):
    out = tmp_path / "eval"
    call_command(
        "evaluate",
        *("--models", "m2m,mmoe", "--seeds", "2", "--epochs", "1", *SMALL_RUN),
        *("--out", str(out), "--hparams", '{"d_input": 4, "d_view": 16, "n_experts": 2}'),
    )
    report = json.loads((out / "results.json").read_text())
    overall = report["results"]["m2m"]["summary"]["overall"]["nmae"]
    assert overall["mean"] > 0 and overall["std"] >= 0
    assert report["improvement"]["overall"]["nmae"]["best_baseline"] == "mmoe"
    assert len(report["results"]["mmoe"]["runs"]) == 2
    markdown = (out / "results.md").read_text()
    assert "## Task clicks" in markdown and "| M2M vs best baseline |" in markdown
    assert not ModelVersion.objects.exists()


def test_the_evaluate_command_gives_the_same_table_from_worker_processes(world, tmp_path: Path):
    def table(jobs: int) -> dict:
        out = tmp_path / f"eval-{jobs}"
        call_command(
            "evaluate",
            *("--models", "m2m,single_task", "--seeds", "2", "--epochs", "1", *SMALL_RUN),
            *("--out", str(out), "--hparams", '{"d_input": 4, "d_view": 16, "n_experts": 2}'),
            *("--jobs", str(jobs)),
        )
        return json.loads((out / "results.json").read_text())["results"]

    one_by_one, side_by_side = table(1), table(2)
    assert side_by_side == one_by_one  # every metric of every run, in seed order
    seeds = [run["overall"]["nmae"] for run in one_by_one["m2m"]["runs"]]
    assert seeds[0] != seeds[1]  # two different fits, not one reported twice


def test_the_evaluate_command_reports_a_fit_that_fails_in_a_worker(world, tmp_path: Path):
    with pytest.raises(CommandError, match="not divisible by 3 heads"):
        call_command(
            "evaluate",
            *("--models", "m2m", "--seeds", "2", "--epochs", "1", *SMALL_RUN),
            *("--out", str(tmp_path / "eval"), "--hparams", '{"m2m": {"n_heads": 3}}'),
            *("--jobs", "2"),
        )
    assert not (tmp_path / "eval").exists()


def test_the_admin_lists_versions_with_their_test_metrics(version: ModelVersion, admin_client):
    page = admin_client.get("/admin/predictor/modelversion/")
    assert page.status_code == 200
    assert f"{version.metrics['test']['overall']['nmae']:.4f}" in page.content.decode()


def test_the_admin_activate_action_promotes_the_version(version: ModelVersion, admin_client):
    page = admin_client.post(
        "/admin/predictor/modelversion/",
        {"action": "activate_version", "_selected_action": [version.pk]},
        follow=True,
    )
    assert page.status_code == 200
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE


def test_the_admin_shows_run_records(version: ModelVersion, admin_client):
    services.training_run_create(kind="m2m")
    for url in ("/admin/predictor/trainingrun/", "/admin/predictor/predictionrun/"):
        assert admin_client.get(url).status_code == 200


def test_it_closes_the_version_of_a_training_attempt_whose_worker_died(world):
    run = services.training_run_create(kind="m2m", options=TINY)
    orphan = ModelVersion.objects.create(kind="m2m")  # started by the attempt that died
    TrainingRun.objects.filter(pk=run.pk).update(status="running", model_version=orphan)
    version = services.training_run_execute(run=run)  # the re-delivered task
    orphan.refresh_from_db()
    assert orphan.status == ModelVersion.Status.FAILED
    assert version.status == ModelVersion.Status.READY
    assert run.model_version == version


def test_it_trains_with_the_task_weighting_it_records(version: ModelVersion):
    equal = services.model_train(kind="m2m", options=replace(TINY, task_weighting="equal"))
    assert version.hyperparameters["task_weighting"] == "deviance"
    assert equal.hyperparameters["task_weighting"] == "equal"
    assert equal.artifact_sha256 != version.artifact_sha256  # same seed, other lambdas


def test_the_version_page_shows_its_inactivity_and_interval_figures(
    version: ModelVersion, admin_client
):
    decisions = version.metrics["test"]["decisions"]
    auc = decisions["inactivity"]["pooled"]["auc"]
    assert 0 <= auc <= 1
    page = admin_client.get(f"/admin/predictor/modelversion/{version.pk}/change/").content.decode()
    assert "P(inactive) and 80% intervals" in page
    assert f"{auc:.4f}" in page
    coverage = decisions["intervals"]["pooled"]["expenditure"]["coverage"]
    assert f"{coverage:.4f}" in page
