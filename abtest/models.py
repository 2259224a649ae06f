"""Experiments, their arms and the stored assignment of every advertiser.

Randomise first, then target: an experiment splits its population into arms by the deterministic
hash in `abtest.hashing`, stores each advertiser's arm once (never re-bucketed), and only then
lets each arm's model choose its targets. `Assignment.targeted` records who was targeted, so the
metrics never depend on the campaigns module's internals.
"""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from abtest import stats
from advertisers.models import Advertiser, Scenario
from predictor.models import ModelKind, ModelVersion

# A control plus up to five treatments.
MAX_ARMS = 6


def new_seed() -> str:
    return secrets.token_hex(8)


class AnalysisMode(models.TextChoices):
    FREQUENTIST = "frequentist", "Frequentist (fixed horizon)"
    SEQUENTIAL = "sequential", "Sequential (always-valid)"
    BAYESIAN = "bayesian", "Bayesian"


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        ANALYSING = "analysing"
        COMPLETED = "completed"

    key = models.SlugField(max_length=64, unique=True)
    hypothesis = models.TextField(blank=True)
    # Fixed at creation: the seed alone reproduces every assignment.
    seed = models.CharField(max_length=64, default=new_seed, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)

    scenarios = models.ManyToManyField(
        Scenario, blank=True, related_name="experiments", help_text="Empty means every scenario."
    )
    population_filter = models.JSONField(
        default=dict,
        blank=True,
        help_text='Advertiser field lookups, e.g. {"business_scale__in": [1, 2]}; '
        "empty = everyone.",
    )
    holdout_share = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Global no-incentive holdout, carved out of the population before the arms.",
    )

    # Campaign settings shared by both arms, so only the targeting model differs.
    template_ids = models.JSONField(
        default=list, blank=True, help_text="Task template ids both arms' campaigns use."
    )
    targets_per_arm = models.PositiveIntegerField(null=True, blank=True)
    inactivity_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Alternative to targets_per_arm: target everyone predicted below this many "
        "active days.",
    )
    budget_per_arm = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    reward_cap = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Most one advertiser can earn in an arm's campaign; empty = the arm's budget.",
    )

    pre_period_days = models.PositiveSmallIntegerField(
        default=28, validators=[MinValueValidator(1), MaxValueValidator(365)]
    )
    evaluation_days = models.PositiveSmallIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    alpha = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0001), MaxValueValidator(0.5)]
    )
    winsor_quantile = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.9999)],
        help_text="Optional cap for money and count metrics, e.g. 0.99 (capped and uncapped "
        "are both reported).",
    )
    expected_relative_lift = models.FloatField(
        default=0.05, help_text="The lift the plan's power figure is computed for."
    )

    # Every report shows all three analyses; the mode picks the one verdicts are read from.
    analysis_mode = models.CharField(
        max_length=16,
        choices=AnalysisMode.choices,
        default=AnalysisMode.FREQUENTIST,
        help_text="Which analysis the verdicts follow: fixed-horizon (look once, at the end), "
        "sequential (always-valid, look every day) or Bayesian (chance to win).",
    )
    sequential_tuning_parameter = models.FloatField(
        default=stats.DEFAULT_SEQUENTIAL_TUNING,
        validators=[MinValueValidator(1.0)],
        help_text="Sequential mode: the total sample size the always-valid intervals are "
        "tightest at (gbstats' default 5000).",
    )
    prior_proper = models.BooleanField(
        default=False,
        help_text="Bayesian mode: use the prior below; off, a flat prior (gbstats' default).",
    )
    prior_mean = models.FloatField(
        default=0.0, help_text="Bayesian prior mean of the relative lift, e.g. 0.0."
    )
    prior_stddev = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(1e-6)],
        help_text="Bayesian prior standard deviation of the relative lift, e.g. 0.3.",
    )

    start_date = models.DateField(
        null=True, blank=True, help_text="First day of the evaluation window."
    )
    plan = models.JSONField(default=dict, blank=True, editable=False)
    report = models.JSONField(
        null=True, blank=True, editable=False, help_text="Frozen report of a completed experiment."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    covariates_captured_at = models.DateTimeField(null=True, blank=True, editable=False)
    analysed_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(holdout_share__gte=0) & Q(holdout_share__lte=0.5),
                name="experiment_holdout_share_0_half",
            ),
            models.CheckConstraint(
                condition=~(
                    Q(targets_per_arm__isnull=False) & Q(inactivity_threshold__isnull=False)
                ),
                name="experiment_targets_or_threshold",
            ),
            models.CheckConstraint(
                condition=Q(budget_per_arm__gte=0), name="experiment_budget_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(reward_cap__isnull=True) | Q(reward_cap__gt=0),
                name="experiment_reward_cap_positive",
            ),
            models.CheckConstraint(
                condition=Q(sequential_tuning_parameter__gt=0) & Q(prior_stddev__gt=0),
                name="experiment_tuning_and_prior_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def prior(self) -> stats.GaussianPrior:
        """The Bayesian prior on the relative lift (flat unless `prior_proper`)."""
        return stats.GaussianPrior(
            mean=self.prior_mean, variance=self.prior_stddev**2, proper=self.prior_proper
        )

    @property
    def evaluation_start(self) -> dt.date | None:
        return self.start_date

    @property
    def evaluation_end(self) -> dt.date | None:
        """Last day (inclusive) of the evaluation window."""
        if self.start_date is None:
            return None
        return self.start_date + dt.timedelta(days=self.evaluation_days - 1)

    @property
    def pre_period_start(self) -> dt.date | None:
        if self.start_date is None:
            return None
        return self.start_date - dt.timedelta(days=self.pre_period_days)


class Arm(models.Model):
    class Role(models.TextChoices):
        CONTROL = "control"
        TREATMENT = "treatment"

    class Targeting(models.TextChoices):
        # What the arm's campaign does with its advertisers. NONE: no tasks (a holdout arm);
        # EXTERNAL: the caller produces the tasks and records the targets itself.
        NONE = "none", "No tasks"
        RANDOM = "random", "Random eligible advertisers"
        LEAST_ACTIVITY = "least_activity", "Least predicted activity first"
        UPLIFT = "uplift", "Uplift allocation"
        EXTERNAL = "external", "Targets chosen outside the platform"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    role = models.CharField(max_length=16, choices=Role.choices)
    name = models.CharField(max_length=100)
    model_kind = models.CharField(
        max_length=32,
        choices=ModelKind.choices,
        blank=True,
        help_text="Use the active version of this kind when the experiment starts.",
    )
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiment_arms",
        help_text="Pin a version instead of a kind.",
    )
    weight = models.FloatField(default=0.5, validators=[MinValueValidator(0.0)])
    targeting = models.CharField(
        max_length=16, choices=Targeting.choices, default=Targeting.LEAST_ACTIVITY
    )
    # Order of the arms' hash ranges and of the report: control first (0), then the treatments.
    position = models.PositiveSmallIntegerField(default=0, editable=False)
    # The campaigns.Campaign this arm's tasks belong to (set when the experiment starts). A plain
    # id rather than a foreign key: the A/B module reads campaigns through its services only.
    campaign_id = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="arm_unique_name"),
            models.UniqueConstraint(fields=["experiment", "position"], name="arm_unique_position"),
            models.UniqueConstraint(
                fields=["experiment"], condition=Q(role="control"), name="arm_one_control"
            ),
            # Arms that produce tasks through a campaign need the model that personalises them.
            models.CheckConstraint(
                condition=~Q(model_kind="")
                | Q(model_version__isnull=False)
                | Q(targeting__in=["none", "external"]),
                name="arm_has_model",
            ),
            models.CheckConstraint(condition=Q(weight__gte=0), name="arm_weight_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.name}"

    @property
    def model_label(self) -> str:
        if self.model_version_id is not None:
            return f"{self.model_version.kind} v{self.model_version_id}"
        return self.model_kind or "-"

    @property
    def produces_tasks(self) -> bool:
        """Whether the A/B module produces this arm's tasks through its own campaign."""
        return self.targeting not in (self.Targeting.NONE, self.Targeting.EXTERNAL)


class Assignment(models.Model):
    """One advertiser's group in one experiment; `arm` NULL means the no-incentive holdout."""

    # No separate index: the unique (experiment, advertiser) constraint leads with it.
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    advertiser = models.ForeignKey(
        Advertiser, on_delete=models.CASCADE, related_name="experiment_assignments"
    )
    arm = models.ForeignKey(
        Arm, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    bucket = models.PositiveSmallIntegerField(help_text="Hash bucket 0..9999.")
    targeted = models.BooleanField(default=False)
    # CUPED covariates: the pre-period in scope, measured before treatment and kept here so a
    # report reads only the evaluation window (see services.experiment_covariates_capture).
    pre_spend_cents = models.BigIntegerField(default=0)
    pre_clicks = models.BigIntegerField(default=0)
    pre_active_days = models.PositiveSmallIntegerField(default=0)
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "advertiser"], name="assignment_once_per_experiment"
            ),
            models.CheckConstraint(
                condition=Q(bucket__lt=10000), name="assignment_bucket_below_10000"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}/{self.advertiser_id} -> {self.arm_id or 'holdout'}"
