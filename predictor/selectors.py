"""Reads of the predictor: the active model of a kind and the latest stored predictions."""

from __future__ import annotations

from datetime import date

from django.db.models import Max, QuerySet

from advertisers.models import Advertiser
from predictor.models import ModelKind, ModelVersion, Prediction, PredictionRun, TrainingRun


def model_version_active(*, kind: str) -> ModelVersion | None:
    """The active version of `kind`, or None when none has been activated."""
    return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()


def model_versions_list(*, kind: str | None = None) -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.all()
    return versions.filter(kind=kind) if kind else versions


def predictions_latest(
    *,
    model_version: ModelVersion | None = None,
    kind: str | None = None,
    as_of: date | None = None,
    advertiser: Advertiser | int | None = None,
) -> QuerySet[Prediction]:
    """Predictions of one model version at one as-of date.

    The version defaults to the active one of `kind` (M2M when no kind is given); the date
    defaults to the latest as-of that version has predictions for (for `advertiser`, when given:
    that advertiser's latest). Empty when there is no such version or prediction.
    """
    version = model_version or model_version_active(kind=kind or ModelKind.M2M)
    if version is None:
        return Prediction.objects.none()
    rows = Prediction.objects.filter(model_version=version)
    if advertiser is not None:
        rows = rows.filter(advertiser=advertiser)
    if as_of is None:
        as_of = rows.aggregate(latest=Max("as_of"))["latest"]
        if as_of is None:
            return Prediction.objects.none()
    return (
        rows.filter(as_of=as_of)
        .select_related("advertiser", "scenario", "model_version")
        .order_by("advertiser_id", "scenario_id")
    )


def prediction_runs_list(*, model_version: ModelVersion | None = None) -> QuerySet[PredictionRun]:
    runs = PredictionRun.objects.select_related("model_version")
    return runs.filter(model_version=model_version) if model_version else runs


def training_runs_list(*, kind: str | None = None) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("model_version")
    return runs.filter(kind=kind) if kind else runs
