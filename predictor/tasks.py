"""Celery tasks of the predictor: thin wrappers that load ids and call a service.

Training and scoring run on the `gpu` queue (one prefork worker per GPU, concurrency 1). Every
task here is acknowledged late and re-queued if its worker dies (a model half-trained or a chunk
half-scored is simply done again: training resumes from its checkpoint, scoring is an upsert),
and has a soft time limit (the task records the failure) under a hard one (the process is
killed). Models are loaded inside the task, through the per-process cache of
`predictor.worker`, never at import: the worker's parent process must not touch CUDA before it
forks.

Scoring fans out as a chord: `predict_all` creates a PredictionRun with one chunk per
advertiser-pk range, a `predict_chunk` per chunk, then `predict_finish` closes the run.

Routing: the callers below send to the `gpu` queue explicitly (`enqueue_*` and the chord's
signatures), so nothing depends on the deprecated `queue` task attribute.
"""

from __future__ import annotations

import logging
from datetime import date

from celery import chord, shared_task

from predictor import selectors, services, worker
from predictor.models import ModelKind, ModelVersion, PredictionChunk, PredictionRun, TrainingRun

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"
_LATE = {"acks_late": True, "reject_on_worker_lost": True}
TRAIN_SOFT_LIMIT_S = 6 * 3600
CHUNK_SOFT_LIMIT_S = 15 * 60
FINISH_SOFT_LIMIT_S = 60


@shared_task(**_LATE, soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_SOFT_LIMIT_S + 300)
def train_model(training_run_id: int) -> int | None:
    run = TrainingRun.objects.get(pk=training_run_id)
    version = services.training_run_execute(run=run)
    return version.pk if version else None


@shared_task(**_LATE, soft_time_limit=CHUNK_SOFT_LIMIT_S, time_limit=CHUNK_SOFT_LIMIT_S + 60)
def predict_chunk(chunk_id: int) -> int:
    chunk = PredictionChunk.objects.select_related("run__model_version").get(pk=chunk_id)
    try:
        loaded = worker.model_get(version=chunk.run.model_version)
        return services.prediction_chunk_execute(chunk=chunk, loaded=loaded)
    except Exception as exc:
        services.prediction_chunk_fail(chunk=chunk, error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(**_LATE, soft_time_limit=FINISH_SOFT_LIMIT_S, time_limit=FINISH_SOFT_LIMIT_S + 60)
def predict_finish(_results: list[int] | None, prediction_run_id: int) -> int:
    run = services.prediction_run_finish(run=PredictionRun.objects.get(pk=prediction_run_id))
    return run.pairs_scored


@shared_task(**_LATE, soft_time_limit=FINISH_SOFT_LIMIT_S, time_limit=FINISH_SOFT_LIMIT_S + 60)
def predict_failed(prediction_run_id: int) -> None:
    """Chord error callback: close the run as failed (the failing chunk recorded why)."""
    services.prediction_run_finish(run=PredictionRun.objects.get(pk=prediction_run_id))


@shared_task(**_LATE, soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_SOFT_LIMIT_S + 300)
def evaluate_version(model_version_id: int) -> dict:
    return services.model_version_evaluate(version=ModelVersion.objects.get(pk=model_version_id))


@shared_task(**_LATE)
def predict_all(
    kind: str = ModelKind.M2M, as_of: str | None = None, chunk_size: int = 5000
) -> int | None:
    """Score every eligible pair with the active version of `kind`; returns the run id."""
    version = selectors.model_version_active(kind=kind)
    if version is None:
        log.warning("no active %s model version: nothing to score", kind)
        return None
    day = date.fromisoformat(as_of) if as_of else services.latest_data_date()
    run = services.prediction_run_create(model_version=version, as_of=day, chunk_size=chunk_size)
    enqueue_prediction_run(run)
    return run.pk


@shared_task(**_LATE)
def predict_daily() -> list[int]:
    """The beat entry: score with every active version (an A/B test needs more than one kind)."""
    kinds = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list(
        "kind", flat=True
    )
    return [run_id for kind in kinds if (run_id := predict_all(kind)) is not None]


def enqueue_prediction_run(run: PredictionRun) -> None:
    """Send the run's chunks to the gpu queue as a chord closed by `predict_finish`."""
    chunk_ids = list(run.chunks.order_by("index").values_list("pk", flat=True))
    finish = predict_finish.s(run.pk).set(queue=GPU_QUEUE)
    if not chunk_ids:  # no advertisers: nothing to fan out
        finish.apply_async(args=([],))
        return
    header = [predict_chunk.si(pk).set(queue=GPU_QUEUE) for pk in chunk_ids]
    chord(header)(finish.on_error(predict_failed.si(run.pk).set(queue=GPU_QUEUE)))


def enqueue_training(run: TrainingRun) -> None:
    train_model.apply_async(args=(run.pk,), queue=GPU_QUEUE)


def enqueue_evaluation(version: ModelVersion) -> None:
    evaluate_version.apply_async(args=(version.pk,), queue=GPU_QUEUE)


def enqueue_predict_all(*, kind: str, as_of: date | None = None, chunk_size: int = 5000) -> None:
    predict_all.apply_async(
        kwargs={
            "kind": kind,
            "as_of": as_of.isoformat() if as_of else None,
            "chunk_size": chunk_size,
        },
        queue=DEFAULT_QUEUE,
    )
