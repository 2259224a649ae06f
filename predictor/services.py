"""Writes of the predictor: train a model version, activate it, load it, store predictions, and
keep the run records (TrainingRun, PredictionRun and its chunks) that the admin shows.

The registry's invariants live here:
- training writes exactly one ModelVersion (status training -> ready, or failed), with its
  hyperparameters, feature spec (bins included), data window, test metrics and an artifact file
  `ARTIFACT_DIR/models/<kind>-<id>.pt` whose sha256 is stored next to it;
- activation retires the previous active version of the kind and promotes the new one in one
  transaction (the database also enforces one active version per kind);
- loading re-hashes the artifact and refuses a file whose checksum differs;
- predictions are upserts keyed by (model_version, advertiser, scenario, as_of), so a re-run or a
  retried chunk rewrites the same rows; a chunk counts towards its run's progress once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from torch import nn

from advertisers.models import Advertiser, DailyStat, Scenario
from predictor import decision_report, features, training
from predictor.features import FeatureSpec
from predictor.metrics import metric_table
from predictor.models import (
    INTERVAL_TASKS,
    TASKS,
    ModelKind,
    ModelVersion,
    Prediction,
    PredictionChunk,
    PredictionRun,
    RunStatus,
    TrainingRun,
)
from predictor.networks import (
    MODEL_KINDS,
    build_model,
    model_checkpoint_dict,
    model_from_checkpoint_dict,
)

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 3  # 2: distribution heads; 3: their calibration conditioned on the scenario


class ModelArtifactError(RuntimeError):
    """A model version's artifact is missing, altered or unreadable."""


class PredictionError(RuntimeError):
    """Scoring produced something that must not be stored (e.g. non-finite values)."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything `manage.py train` and the train task accept; defaults are the paper's."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    patience: int = 4
    select_by: str = "nmae"  # early stopping on the validation NMAE or "loss"
    l2: float = 1e-6
    generator_lr_scale: float | None = None  # training.TrainConfig; None = 1 / d_s
    task_weighting: str = "deviance"  # lambda_t of eq. 19: training.task_weights_for
    start: date | None = None
    end: date | None = None
    window_days: int = 40
    horizon_days: int = 7
    stride: int = 7
    n_bins: int = 32
    # Train on advertisers with pk in [lo, hi) only (a sample; None: all of them).
    advertiser_pk_range: tuple[int, int] | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    resume: bool = True
    progress: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("start", "end"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; accepted: {sorted(known)}.")
        data = dict(data)
        for key in ("start", "end"):
            if isinstance(data.get(key), str):
                data[key] = date.fromisoformat(data[key])
        if data.get("advertiser_pk_range") is not None:  # JSON gives a list back
            data["advertiser_pk_range"] = tuple(data["advertiser_pk_range"])
        return cls(**data)

    def dataset(self) -> features.Dataset:
        """The samples and time split these options describe."""
        return features.dataset_build(
            start=self.start,
            end=self.end,
            window_days=self.window_days,
            horizon_days=self.horizon_days,
            stride=self.stride,
            n_bins=self.n_bins,
            advertiser_pk_range=self.advertiser_pk_range,
        )

    def train_config(
        self, checkpoint_path: Path | None, train_target: torch.Tensor
    ) -> training.TrainConfig:
        """The training loop's settings; the task weights come from the training targets."""
        return training.TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            patience=self.patience,
            select_by=self.select_by,
            l2=self.l2,
            generator_lr_scale=self.generator_lr_scale,
            task_weights=training.task_weights_for(self.task_weighting, train_target),
            progress=self.progress,
            checkpoint_path=str(checkpoint_path) if checkpoint_path else None,
        )


@dataclass
class LoadedModel:
    version_id: int
    kind: str
    model: nn.Module
    spec: FeatureSpec
    device: torch.device


# --- artifacts -------------------------------------------------------------------------------


def artifact_dir() -> Path:
    return Path(settings.ARTIFACT_DIR)


def _artifact_path(stored: str) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else artifact_dir() / path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _artifact_write(
    *, version: ModelVersion, model: nn.Module, spec: FeatureSpec
) -> tuple[str, str]:
    """Save the artifact atomically; return (path relative to ARTIFACT_DIR, sha256)."""
    relative = Path("models") / f"{version.kind}-{version.pk}.pt"
    path = artifact_dir() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    core = model.cpu()
    torch.save(
        {
            "format": ARTIFACT_FORMAT,
            "version_id": version.pk,
            "feature_spec": spec.to_dict(),
            **model_checkpoint_dict(core),
        },
        buffer,
    )
    data = buffer.getvalue()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return str(relative), _sha256(data)


def model_version_load(*, version: ModelVersion, device: str = "cpu") -> LoadedModel:
    """Rebuild a version's model from its artifact after verifying the stored checksum."""
    if not version.artifact_path or not version.artifact_sha256:
        raise ModelArtifactError(
            f"model version {version.pk} ({version.kind}, {version.status}) has no artifact;"
            " it never finished training. Train a new version."
        )
    path = _artifact_path(version.artifact_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelArtifactError(
            f"model version {version.pk} ({version.kind}): artifact {path} cannot be read"
            f" ({exc.strerror}); retrain or restore the file."
        ) from exc
    found = _sha256(data)
    if found != version.artifact_sha256:
        raise ModelArtifactError(
            f"model version {version.pk} ({version.kind}): artifact checksum mismatch: expected"
            f" {version.artifact_sha256}, found {found} at {path}; retrain or restore the file."
        )
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    target = training.resolve_device(device)
    try:
        model = model_from_checkpoint_dict(payload).to(target).eval()
    except ValueError as exc:
        raise ModelArtifactError(f"model version {version.pk} ({version.kind}): {exc}") from exc
    return LoadedModel(
        version_id=version.pk,
        kind=version.kind,
        model=model,
        spec=FeatureSpec.from_dict(payload["feature_spec"]),
        device=target,
    )


# --- training --------------------------------------------------------------------------------


def _checkpoint_path(*, kind: str, options: TrainOptions, training_run: TrainingRun | None) -> Path:
    """Same run (or same options) -> same file, so an interrupted run picks up where it was."""
    if training_run is not None:
        name = f"run-{training_run.pk}"
    else:
        digest = hashlib.sha256(repr((kind, options.to_json())).encode()).hexdigest()[:16]
        name = f"{kind}-{digest}"
    return artifact_dir() / "checkpoints" / f"{name}.pt"


def model_train(
    *,
    kind: str,
    options: TrainOptions | None = None,
    training_run: TrainingRun | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> ModelVersion | None:
    """Build features, train `kind`, evaluate on the test split and register a ready version.

    Under torchrun only rank 0 writes the registry; the other ranks return None.
    """
    options = options or TrainOptions()
    if kind not in MODEL_KINDS or kind not in ModelKind.values:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}.")
    info = training.dist_info()
    report = on_progress or (lambda fraction, message: None)
    report(0.0, "building features")
    data = options.dataset()
    input_spec = data.spec.input_spec()
    build_model(kind, input_spec, **options.hparams)  # unknown hparams fail before any write
    version = _version_start(kind=kind, options=options, data=data) if info.is_main else None
    if version is not None and training_run is not None:
        TrainingRun.objects.filter(pk=training_run.pk).update(model_version=version)
    checkpoint = _checkpoint_path(kind=kind, options=options, training_run=training_run)
    train = data.train.tensors(data.spec)
    try:
        result = training.fit(
            lambda: build_model(kind, input_spec, **options.hparams),
            train,
            data.valid.tensors(data.spec),
            options.train_config(checkpoint if options.resume else None, train["target"]),
            on_epoch=lambda epoch, history: report(
                0.05 + 0.9 * epoch / options.epochs,
                f"epoch {epoch}: valid loss {history[-1]['valid_loss']:.4f},"
                f" valid NMAE {history[-1]['valid_nmae']:.4f}",
            ),
            fingerprint_extra=[kind, options.hparams, data.split.to_dict()],
            valid_groups=data.valid.scenario_pks,
        )
        if version is None:  # a torchrun rank other than 0
            return None
        _version_finish(version=version, result=result, data=data)
    except BaseException:
        if version is not None:
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED)
        raise
    checkpoint.unlink(missing_ok=True)  # the artifact now holds the result
    report(1.0, f"model version {version.pk} ready")
    return version


def _version_start(*, kind: str, options: TrainOptions, data: features.Dataset) -> ModelVersion:
    """The registry row of a run in progress (status training), shown while it trains."""
    last_target = data.split.train[-1] + timedelta(days=data.spec.horizon_days)
    return ModelVersion.objects.create(
        kind=kind,
        status=ModelVersion.Status.TRAINING,
        hyperparameters={**options.to_json(), "split": data.split.to_dict()},
        feature_spec=data.spec.to_dict(),
        train_start=data.start,
        train_end=last_target,
    )


def _version_finish(
    *, version: ModelVersion, result: training.TrainResult, data: features.Dataset
) -> None:
    """Score the test split, write the artifact and mark the version ready."""
    if not np.isfinite(result.best_valid_score):
        last = result.history[-1]["valid_loss"] if result.history else "no epoch"
        raise RuntimeError(
            f"training {version.kind} diverged: no epoch has a finite validation score (last"
            f" validation loss {last}); lower --lr or check the data."
        )
    version.metrics = {
        "test": _scored(
            result.model,
            data.test,
            data.spec,
            data.scenario_labels(data.test.scenario_pks),
            device=result.device,
        ),
        "best_epoch": result.best_epoch,
        "device": result.device,
        "selected_by": version.hyperparameters.get("select_by", "nmae"),
        "best_valid_score": result.best_valid_score,
        "history": result.history,
        "samples": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
    }
    version.artifact_path, version.artifact_sha256 = _artifact_write(
        version=version, model=result.model, spec=data.spec
    )
    version.status = ModelVersion.Status.READY
    version.save(update_fields=["status", "metrics", "artifact_path", "artifact_sha256"])


def model_version_register(
    *,
    kind: str,
    model: nn.Module,
    spec: FeatureSpec,
    hyperparameters: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    train_start: date | None = None,
    train_end: date | None = None,
) -> ModelVersion:
    """Register a model trained elsewhere (or by hand) as a ready version with its artifact."""
    if getattr(model, "kind", None) != kind:
        raise ValueError(
            f"the model is a {getattr(model, 'kind', type(model).__name__)!r}, not {kind!r}."
        )
    with transaction.atomic():
        version = ModelVersion.objects.create(
            kind=kind,
            hyperparameters=hyperparameters or {},
            feature_spec=spec.to_dict(),
            train_start=train_start,
            train_end=train_end,
            metrics=metrics or {},
        )
        version.artifact_path, version.artifact_sha256 = _artifact_write(
            version=version, model=model, spec=spec
        )
        version.status = ModelVersion.Status.READY
        version.save(update_fields=["artifact_path", "artifact_sha256", "status"])
    return version


def model_version_activate(*, version: ModelVersion) -> ModelVersion:
    """Make `version` the active one of its kind; the previous active one is retired."""
    with transaction.atomic():
        # Lock every version of the kind: two concurrent activations then run one after the other.
        locked = list(
            ModelVersion.objects.select_for_update().filter(kind=version.kind).order_by("pk")
        )
        current = next((v for v in locked if v.pk == version.pk), None)
        if current is None:
            raise ModelVersion.DoesNotExist(f"model version {version.pk} does not exist.")
        if current.status == ModelVersion.Status.ACTIVE:
            return current
        if current.status not in (ModelVersion.Status.READY, ModelVersion.Status.RETIRED):
            raise ValueError(
                f"model version {current.pk} ({current.kind}) is {current.status}; only a ready or"
                " retired version can be activated. Train a new one or wait for it to finish."
            )
        model_version_load(version=current)  # never activate an artifact that will not load
        ModelVersion.objects.filter(kind=current.kind, status=ModelVersion.Status.ACTIVE).update(
            status=ModelVersion.Status.RETIRED
        )
        current.status = ModelVersion.Status.ACTIVE
        current.activated_at = timezone.now()
        current.save(update_fields=["status", "activated_at"])
    return current


def _scored(
    model: nn.Module,
    samples: features.SampleSet,
    spec: FeatureSpec,
    labels: np.ndarray,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The paper's metrics of a model on samples with targets, and its decision figures
    (P(inactive) scores, interval coverage; `predictor.decision_report`)."""
    predicted = training.predict_outputs(model, samples.tensors(spec), device=device)
    scales = np.asarray(spec.target_scales, dtype=np.float64)
    table = metric_table(samples.targets, predicted.rates * scales, labels, TASKS)
    table["decisions"] = decision_report.run_decisions(predicted, samples.targets, scales, labels)
    return table


def model_version_evaluate(*, version: ModelVersion, as_of: date | None = None) -> dict[str, Any]:
    """Score a stored version on the latest as-of date whose 7-day outcome is known, and keep
    the result in `metrics["recent"]` (the test metrics from training stay untouched)."""
    loaded = model_version_load(version=version)
    as_of = as_of or latest_data_date() - timedelta(days=loaded.spec.horizon_days)
    samples = features.samples_at(spec=loaded.spec, as_of=as_of, with_targets=True)
    if len(samples) == 0:
        raise features.FeatureError(
            f"no pair was active in the {loaded.spec.window_days} days to {as_of}."
        )
    codes = dict(Scenario.objects.values_list("pk", "code"))
    labels = features.scenario_labels(codes, samples.scenario_pks)
    recent = _scored(loaded.model, samples, loaded.spec, labels, device=loaded.device)
    recent |= {"as_of": as_of.isoformat(), "samples": len(samples)}
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        locked.metrics = {**locked.metrics, "recent": recent}
        locked.save(update_fields=["metrics"])
    version.metrics = locked.metrics
    return recent


# --- training runs ---------------------------------------------------------------------------


def training_run_create(*, kind: str, options: TrainOptions | None = None) -> TrainingRun:
    options = options or TrainOptions()
    return TrainingRun.objects.create(kind=kind, options=options.to_json())


def training_run_execute(*, run: TrainingRun) -> ModelVersion | None:
    """Train for a run record, keeping its status, progress and error current."""
    run.refresh_from_db()
    if run.status == RunStatus.SUCCEEDED:  # a re-delivered task: the work is done
        return run.model_version
    # Re-delivered after its worker died: the version that attempt started will never finish
    # (this attempt resumes from the run's checkpoint and registers a new one).
    ModelVersion.objects.filter(training_runs=run, status=ModelVersion.Status.TRAINING).update(
        status=ModelVersion.Status.FAILED
    )
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), error="", progress=0.0
    )

    def progress(fraction: float, message: str) -> None:
        TrainingRun.objects.filter(pk=run.pk).update(progress=fraction, message=message[:500])

    try:
        version = model_train(
            kind=run.kind,
            options=TrainOptions.from_json(run.options),
            training_run=run,
            on_progress=progress,
        )
    except Exception as exc:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}",
            finished_at=timezone.now(),
        )
        raise
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, progress=1.0, model_version=version, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return version


# --- predictions -----------------------------------------------------------------------------

# The stored predictive distribution: P(no active day in the horizon) and the 80% intervals of
# the two tasks a campaign's target is set on. NULL where a model has no such output.
DISTRIBUTION_COLUMNS = (
    "p_inactive",
    "expenditure_p10",
    "expenditure_p90",
    "clicks_p10",
    "clicks_p90",
)
_VALUE_COLUMNS = (*TASKS, *DISTRIBUTION_COLUMNS)
_STAGE_COLUMNS = ("advertiser_id", "scenario_id", *_VALUE_COLUMNS)
_UPDATED = (*_VALUE_COLUMNS, "horizon_days", "created_at")


def _store_postgres(
    version_id: int, as_of: date, horizon: int, columns: dict[str, np.ndarray]
) -> None:
    """COPY the rows into a temporary table, then one INSERT ... ON CONFLICT DO UPDATE."""
    buffer = io.BytesIO()
    # from_pandas: NaN becomes null, an empty CSV field, which COPY reads as NULL.
    arrays = {name: pa.array(columns[name], from_pandas=True) for name in _STAGE_COLUMNS}
    pacsv.write_csv(pa.table(arrays), buffer, pacsv.WriteOptions(include_header=False))
    table = Prediction._meta.db_table
    updates = ", ".join(f"{t} = EXCLUDED.{t}" for t in _UPDATED)
    values = ", ".join(_VALUE_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS predictor_prediction_stage_v2 (advertiser_id bigint,"
            f" scenario_id bigint, {', '.join(f'{t} float8' for t in _VALUE_COLUMNS)})"
            " ON COMMIT DELETE ROWS"
        )
        # Emptied at every commit; also here, for a caller's outer transaction spanning calls.
        cursor.execute("TRUNCATE predictor_prediction_stage_v2")
        with cursor.cursor.copy(
            f"COPY predictor_prediction_stage_v2 ({', '.join(_STAGE_COLUMNS)})"
            " FROM STDIN (FORMAT csv)"
        ) as copy:
            copy.write(buffer.getvalue())
        cursor.execute(
            f"INSERT INTO {table} (model_version_id, advertiser_id, scenario_id, as_of,"
            f" horizon_days, {values}, created_at)"
            f" SELECT %s, advertiser_id, scenario_id, %s, %s, {values}, now()"
            " FROM predictor_prediction_stage_v2"
            " ON CONFLICT (model_version_id, advertiser_id, scenario_id, as_of)"
            f" DO UPDATE SET {updates}",
            [version_id, as_of, horizon],
        )


def _store_generic(
    version_id: int, as_of: date, horizon: int, columns: dict[str, np.ndarray]
) -> None:
    table = connection.ops.quote_name(Prediction._meta.db_table)
    names = ("model_version_id", "as_of", "horizon_days", *_STAGE_COLUMNS, "created_at")
    updates = ", ".join(f"{t} = excluded.{t}" for t in _UPDATED)
    n = len(columns["advertiser_id"])
    # object arrays so that NaN can become None (NULL) column by column
    data = [np.asarray(columns[c], dtype=object) for c in _STAGE_COLUMNS]
    for column in data[2:]:
        column[np.isnan(column.astype(np.float64))] = None
    now = timezone.now()
    rows = zip(
        [version_id] * n,
        [as_of] * n,
        [horizon] * n,
        *(c.tolist() for c in data),
        [now] * n,
        strict=True,
    )
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
            " ON CONFLICT (model_version_id, advertiser_id, scenario_id, as_of)"
            f" DO UPDATE SET {updates}",
            list(rows),
        )


def _first_bad(bad: np.ndarray, advertiser_pks: np.ndarray, scenario_pks: np.ndarray) -> str:
    i = int(np.argmax(bad))
    return f"first: advertiser pk {advertiser_pks[i]}, scenario pk {scenario_pks[i]}"


def _check_distribution(
    distribution: dict[str, np.ndarray], n: int, where: Callable[[np.ndarray], str]
) -> dict[str, np.ndarray]:
    """Each column [N] float, NaN for unknown; P in [0, 1]; 0 <= p10 <= p90."""
    unknown = set(distribution) - set(DISTRIBUTION_COLUMNS)
    if unknown:
        raise PredictionError(f"unknown distribution columns {sorted(unknown)}.")
    out = {}
    for name in DISTRIBUTION_COLUMNS:
        column = np.asarray(distribution.get(name, np.full(n, np.nan)), dtype=np.float64)
        if column.shape != (n,):
            raise PredictionError(f"{name} has shape {column.shape}, expected ({n},).")
        out[name] = column
    p = out["p_inactive"]
    checks = {
        "p_inactive outside [0, 1]": (p < 0) | (p > 1) | np.isinf(p),
        **{
            f"{task} interval not 0 <= p10 <= p90": (lo < 0)
            | (lo > hi)
            | np.isinf(hi)
            | (np.isnan(lo) != np.isnan(hi))
            for task in ("expenditure", "clicks")
            for lo, hi in [(out[f"{task}_p10"], out[f"{task}_p90"])]
        },
    }
    for what, bad in checks.items():
        if bad.any():
            raise PredictionError(f"{int(bad.sum())} predictions with {what} ({where(bad)}).")
    return out


def predictions_store(
    *,
    model_version: ModelVersion,
    as_of: date,
    advertiser_pks: np.ndarray,
    scenario_pks: np.ndarray,
    values: np.ndarray,
    distribution: dict[str, np.ndarray] | None = None,
    horizon_days: int = 7,
) -> int:
    """Upsert one prediction per (advertiser, scenario) at `as_of`; values [N, 5], TASKS order.

    `distribution` maps some of DISTRIBUTION_COLUMNS to [N] arrays (NaN: unknown, stored NULL).
    Nothing is stored unless every row passes the checks.
    """
    n = len(advertiser_pks)
    if values.shape != (n, len(TASKS)):
        raise PredictionError(f"values have shape {values.shape}, expected ({n}, {len(TASKS)}).")

    def where(bad: np.ndarray) -> str:
        return _first_bad(bad, advertiser_pks, scenario_pks)

    bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise PredictionError(
            f"model version {model_version.pk} produced {int(bad.sum())} non-finite or negative"
            f" predictions at {as_of} ({where(bad)}: {values[i].tolist()}); nothing was stored."
            " Retrain the model."
        )
    checked = _check_distribution(distribution or {}, n, where)
    if n == 0:
        return 0
    columns = {
        "advertiser_id": advertiser_pks.astype(np.int64),
        "scenario_id": scenario_pks.astype(np.int64),
    }
    columns |= {t: values[:, i].astype(np.float64) for i, t in enumerate(TASKS)} | checked
    store = _store_postgres if connection.vendor == "postgresql" else _store_generic
    with transaction.atomic():
        store(model_version.pk, as_of, horizon_days, columns)
    return n


def prediction_columns(predicted: training.Predicted, spec: FeatureSpec) -> tuple[np.ndarray, dict]:
    """A model's outputs in the units of the data: task means [N, 5] and DISTRIBUTION_COLUMNS."""
    scales = np.asarray(spec.target_scales, dtype=np.float64)  # [M]
    values = predicted.rates.astype(np.float64) * scales
    low, high = training.interval_bounds(predicted.quantiles, scales, TASKS)  # [N, M] each
    distribution = {"p_inactive": predicted.p_inactive.astype(np.float64)}
    for task in INTERVAL_TASKS:
        j = TASKS.index(task)
        distribution |= {f"{task}_p10": low[:, j], f"{task}_p90": high[:, j]}
    return values, distribution


def predictions_predict(
    *,
    model_version: ModelVersion,
    as_of: date,
    advertiser_pk_range: tuple[int, int] | None = None,
    loaded: LoadedModel | None = None,
    scenario_activity: features.ScenarioActivity | None = None,
) -> int:
    """Score every eligible pair at `as_of` (optionally advertiser pk in [lo, hi)) and store it."""
    loaded = loaded or model_version_load(version=model_version)
    if loaded.version_id != model_version.pk:
        raise ValueError(f"loaded model is version {loaded.version_id}, not {model_version.pk}.")
    samples = features.samples_at(
        spec=loaded.spec,
        as_of=as_of,
        advertiser_pk_range=advertiser_pk_range,
        scenario_activity=scenario_activity,
    )
    if len(samples) == 0:
        return 0
    predicted = training.predict_outputs(
        loaded.model, samples.tensors(loaded.spec), device=loaded.device
    )
    values, distribution = prediction_columns(predicted, loaded.spec)
    return predictions_store(
        model_version=model_version,
        as_of=as_of,
        advertiser_pks=samples.advertiser_pks,
        scenario_pks=samples.scenario_pks,
        values=values,
        distribution=distribution,
        horizon_days=loaded.spec.horizon_days,
    )


def latest_data_date() -> date:
    last = DailyStat.objects.order_by("-date").values_list("date", flat=True).first()
    if last is None:
        raise features.FeatureError("there are no daily stats to predict from: ingest some first.")
    return last


def prediction_run_create(
    *, model_version: ModelVersion, as_of: date, chunk_size: int = 5000
) -> PredictionRun:
    """A run record with its chunks: contiguous advertiser-pk ranges of about `chunk_size`."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be at least 1.")
    if model_version.status not in (
        ModelVersion.Status.READY,
        ModelVersion.Status.ACTIVE,
        ModelVersion.Status.RETIRED,
    ):
        raise ValueError(
            f"model version {model_version.pk} is {model_version.status}: it cannot predict."
        )
    pks = np.fromiter(Advertiser.objects.order_by("pk").values_list("pk", flat=True), np.int64)
    starts = pks[::chunk_size]
    ends = np.append(starts[1:], pks[-1] + 1) if len(pks) else starts
    activity = features.scenario_activity_query(as_of)  # once, not per chunk
    with transaction.atomic():
        run = PredictionRun.objects.create(
            model_version=model_version,
            as_of=as_of,
            chunks_total=len(starts),
            scenario_activity=activity,
        )
        PredictionChunk.objects.bulk_create(
            PredictionChunk(run=run, index=i, advertiser_pk_lo=int(lo), advertiser_pk_hi=int(hi))
            for i, (lo, hi) in enumerate(zip(starts, ends, strict=True))
        )
    return run


def prediction_chunk_execute(*, chunk: PredictionChunk, loaded: LoadedModel | None = None) -> int:
    """Score one chunk (idempotent) and count it towards its run once."""
    chunk = PredictionChunk.objects.select_related("run__model_version").get(pk=chunk.pk)
    if chunk.status == RunStatus.SUCCEEDED:
        return chunk.pairs_scored
    run = chunk.run
    PredictionRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING
    )
    PredictionChunk.objects.filter(pk=chunk.pk).update(status=RunStatus.RUNNING)
    pairs = predictions_predict(
        model_version=run.model_version,
        as_of=run.as_of,
        advertiser_pk_range=(chunk.advertiser_pk_lo, chunk.advertiser_pk_hi),
        loaded=loaded,
        scenario_activity=run.scenario_activity,
    )
    with transaction.atomic():
        locked = PredictionChunk.objects.select_for_update().get(pk=chunk.pk)
        if locked.status != RunStatus.SUCCEEDED:
            locked.status, locked.pairs_scored, locked.error = RunStatus.SUCCEEDED, pairs, ""
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "pairs_scored", "error", "finished_at"])
            PredictionRun.objects.filter(pk=run.pk).update(
                chunks_done=F("chunks_done") + 1, pairs_scored=F("pairs_scored") + pairs
            )
    return pairs


def prediction_chunk_fail(*, chunk: PredictionChunk, error: str) -> None:
    """Record a chunk's failure on the chunk and on its run (which then cannot succeed)."""
    now = timezone.now()
    PredictionChunk.objects.filter(pk=chunk.pk).update(
        status=RunStatus.FAILED, error=error, finished_at=now
    )
    PredictionRun.objects.filter(pk=chunk.run_id).update(
        status=RunStatus.FAILED, error=f"chunk {chunk.index}: {error}", finished_at=now
    )


def prediction_run_finish(*, run: PredictionRun) -> PredictionRun:
    """Close a run: succeeded when every chunk did, failed otherwise."""
    done = run.chunks.filter(status=RunStatus.SUCCEEDED).count()
    status = RunStatus.SUCCEEDED if done == run.chunks_total else RunStatus.FAILED
    updates: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if status == RunStatus.FAILED and not run.error:
        updates["error"] = f"{run.chunks_total - done} of {run.chunks_total} chunks did not finish."
    PredictionRun.objects.filter(pk=run.pk).update(**updates)
    run.refresh_from_db()
    return run


def prediction_run_execute(
    *, run: PredictionRun, loaded: LoadedModel | None = None
) -> PredictionRun:
    """Run every chunk in this process (the command's synchronous path), then close the run."""
    loaded = loaded or model_version_load(version=run.model_version)
    for chunk in run.chunks.order_by("index"):
        try:
            prediction_chunk_execute(chunk=chunk, loaded=loaded)
        except Exception as exc:
            prediction_chunk_fail(chunk=chunk, error=f"{type(exc).__name__}: {exc}")
            raise
    return prediction_run_finish(run=run)
