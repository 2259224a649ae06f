"""The model registry, prediction runs and stored predictions (Django side of the predictor).

The networks themselves live in `predictor.networks` and never import Django.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from advertisers.models import Advertiser, Scenario

TASKS = ("clicks", "expenditure", "active_days", "impressions", "gmv")
# The tasks whose 80% interval is stored with each prediction (task targets are set on them).
INTERVAL_TASKS = ("expenditure", "clicks")


class ModelKind(models.TextChoices):
    M2M = "m2m", "M2M"
    SINGLE_TASK = "single_task", "Single-task Embedding&MLP"
    SHARED_BOTTOM = "shared_bottom", "Shared-Bottom"
    CROSS_STITCH = "cross_stitch", "Cross-Stitch"
    MMOE = "mmoe", "MMoE"
    MRAN = "mran", "MRAN"
    CGC = "cgc", "CGC"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        ACTIVE = "active"
        RETIRED = "retired"
        FAILED = "failed"

    kind = models.CharField(max_length=32, choices=ModelKind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRAINING)
    hyperparameters = models.JSONField(default=dict, blank=True)
    feature_spec = models.JSONField(default=dict, blank=True, help_text="Input spec and bins.")
    train_start = models.DateField(null=True, blank=True)
    train_end = models.DateField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=500, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One active version per kind; activation swaps it inside one transaction.
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status="active"), name="one_active_version_per_kind"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.pk} ({self.status})"


class Prediction(models.Model):
    """Predicted sums over the next `horizon_days` days after `as_of` for one pair."""

    # Four indexes, each upkept by every scoring run: no single-column foreign-key index where
    # a composite one leads with the same column.
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="predictions", db_index=False
    )
    advertiser = models.ForeignKey(
        Advertiser, on_delete=models.CASCADE, related_name="predictions", db_index=False
    )
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="predictions")
    as_of = models.DateField()
    horizon_days = models.PositiveSmallIntegerField(default=7)
    clicks = models.FloatField()
    expenditure = models.FloatField()
    active_days = models.FloatField()
    impressions = models.FloatField()
    gmv = models.FloatField()
    # The predictive distribution: P(no active day in the horizon) and 80% intervals
    # (10th and 90th percentiles). NULL for versions without a distributional head.
    p_inactive = models.FloatField(null=True, blank=True)
    expenditure_p10 = models.FloatField(null=True, blank=True)
    expenditure_p90 = models.FloatField(null=True, blank=True)
    clicks_p10 = models.FloatField(null=True, blank=True)
    clicks_p90 = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # The upsert key, and the index behind "a version's predictions at a date".
            models.UniqueConstraint(
                fields=["model_version", "as_of", "advertiser", "scenario"],
                name="prediction_unique_pair",
            )
        ]
        # "An advertiser's latest predictions" (the push API's task details).
        indexes = [models.Index(fields=["advertiser", "as_of"], name="prediction_advertiser_asof")]

    def __str__(self) -> str:
        return f"{self.model_version_id}:{self.advertiser_id}/{self.scenario_id}@{self.as_of}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TrainingRun(models.Model):
    kind = models.CharField(max_length=32, choices=ModelKind.choices)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0..1")
    message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training {self.kind} #{self.pk} ({self.status})"


class PredictionRun(models.Model):
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="prediction_runs"
    )
    as_of = models.DateField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    pairs_scored = models.PositiveIntegerField(default=0)
    # Every scenario's activity at as_of over all advertisers ({scenario pk: [active
    # advertisers, spend]} of the last 28 days): the scenario features of every chunk, taken
    # once when the run is created instead of once per chunk.
    scenario_activity = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"prediction #{self.pk} of {self.model_version_id} at {self.as_of} ({self.status})"

    @property
    def progress(self) -> float:
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


class PredictionChunk(models.Model):
    """One advertiser-pk range [advertiser_pk_lo, advertiser_pk_hi) of a prediction run.

    A chunk counts towards its run's progress exactly once, however often its task is
    delivered (acks_late re-delivers after a lost worker); its predictions are upserts anyway.
    """

    run = models.ForeignKey(PredictionRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    advertiser_pk_lo = models.BigIntegerField()
    advertiser_pk_hi = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    pairs_scored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="prediction_chunk_unique_index")
        ]

    def __str__(self) -> str:
        lo, hi = self.advertiser_pk_lo, self.advertiser_pk_hi
        return f"run {self.run_id} chunk {self.index} [{lo}, {hi})"
