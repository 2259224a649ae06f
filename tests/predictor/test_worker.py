"""Scoring through a real Celery worker and Redis, and the worker's per-process model cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.signals import worker_process_init
from django.db import connection

from advertisers.ingestion import ingest_files
from advertisers.simulator import simulate
from predictor import services, worker
from predictor.models import ModelVersion, Prediction, PredictionRun
from predictor.services import TrainOptions

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = TrainOptions(
    epochs=1,
    batch_size=64,
    window_days=14,
    stride=7,
    n_bins=8,
    device="cpu",
    hparams={"d_input": 4, "n_experts": 2, "d_view": 16, "d_meta": 8, "meta_layers": 2},
)


def _active_version(tmp_path: Path, settings) -> ModelVersion:
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    world = simulate(advertisers=30, days=100, seed=7)
    files = world.write(tmp_path / "data")
    ingest_files(
        scenarios=files["scenarios"],
        advertisers=files["advertisers"],
        stats=files["daily_stats"],
        load_date=world.end_date,
    )
    return services.model_version_activate(version=services.model_train(kind="m2m", options=TINY))


@pytest.fixture
def version(db, tmp_path: Path, settings) -> ModelVersion:
    return _active_version(tmp_path, settings)


def test_it_loads_a_model_once_per_process(version: ModelVersion):
    worker.cache_clear()
    first = worker.model_get(version=version, device="cpu")
    second = worker.model_get(version=version, device="cpu")
    assert first is second
    assert worker.loads == 1


def test_it_forgets_inherited_models_in_a_new_worker_process(version: ModelVersion):
    inherited = worker.model_get(version=version, device="cpu")
    worker_process_init.send(sender=None)  # what a freshly forked pool process receives
    assert worker.loads == 0
    assert worker.model_get(version=version, device="cpu") is not inherited


def test_importing_the_tasks_does_not_touch_cuda():
    code = (
        "import django; django.setup(); import predictor.tasks, torch;"
        " assert not torch.cuda.is_initialized(), 'CUDA initialised at import'"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "incentive_platform.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


# --- the real worker -------------------------------------------------------------------------


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _env(redis_url: str, artifact_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "ARTIFACT_DIR": str(artifact_dir),
        "DB_CONN_MAX_AGE": "0",
        "OMP_NUM_THREADS": "1",
    }


def _wait_until_ready(process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if " ready." in log.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"the worker exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.5)
    raise AssertionError(f"the worker was not ready after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def gpu_worker(transactional_db, redis_url: str, settings, tmp_path: Path):
    """A real prefork worker (concurrency 1) on the gpu and default queues, stopped after."""
    log = tmp_path / "worker.log"
    command = [
        str(BIN / "celery"),
        "-A",
        "incentive_platform",
        "worker",
        "-Q",
        "gpu,default",
        "--pool",
        "prefork",
        "-c",
        "1",
        "--loglevel",
        "INFO",
        "--purge",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"predict-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    env = _env(redis_url, tmp_path / "artifacts")
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_ready(process, log)  # --purge runs at start-up: send nothing before it
        yield {"process": process, "log": log, "env": env}
    finally:
        process.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task, stop
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this test started, and only it
            process.wait(timeout=10)


def _queue_prediction(env: dict[str, str]) -> None:
    command = [
        sys.executable,
        "manage.py",
        "predict",
        "--kind",
        "m2m",
        "--queue",
        "--chunk-size",
        "8",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _wait_for(run: PredictionRun, worker_log: Path, timeout: float = 90) -> PredictionRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in ("succeeded", "failed"):
            return run
        time.sleep(0.5)
    raise AssertionError(
        f"run {run.pk} still {run.status} after {timeout}s:\n{worker_log.read_text()[-4000:]}"
    )


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_it_scores_through_a_real_worker_without_duplicates(gpu_worker, tmp_path: Path, settings):
    version = _active_version(tmp_path, settings)
    _queue_prediction(gpu_worker["env"])
    first = _wait_for(PredictionRun.objects.get(model_version=version), gpu_worker["log"])
    assert first.status == "succeeded", first.error
    assert first.chunks_total == 4  # 30 advertisers in chunks of 8
    assert first.chunks_done == first.chunks_total
    stored = Prediction.objects.filter(model_version=version).count()
    assert stored == first.pairs_scored > 0

    _queue_prediction(gpu_worker["env"])  # the same day again: rows are rewritten, not added
    second = _wait_for(PredictionRun.objects.exclude(pk=first.pk).get(), gpu_worker["log"])
    assert second.status == "succeeded", second.error
    assert second.pairs_scored == first.pairs_scored
    assert Prediction.objects.filter(model_version=version).count() == stored

    loads = [
        line
        for line in gpu_worker["log"].read_text().splitlines()
        if "loaded model version" in line
    ]
    assert len(loads) == 1, loads  # eight chunks, one pool process, one load
    assert f"process {gpu_worker['process'].pid} " not in loads[0]  # a child, not the parent
