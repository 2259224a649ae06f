"""Incentive campaigns: task templates, campaigns, incentive tasks, the budget ledger, push
messages and the API's keys and idempotency records.

Invariants and their homes:
- reserved + settled <= budget: `campaigns.services.budget` (conditional UPDATEs), backed by a
  check constraint on Campaign.
- allowed task transitions: `campaigns.lifecycle` (the table), applied by
  `campaigns.services.tasks`.
- at most one open task per advertiser: production eligibility, backed by a partial unique index.
- a template version used by a task never changes: `campaigns.services.templates.template_update`.
"""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from advertisers.models import Advertiser, Scenario
from predictor.models import ModelKind, ModelVersion

# Placeholders a template's message text may use; `render` fills them per task.
MESSAGE_PLACEHOLDERS = (
    "target",
    "reward",
    "scenario",
    "valid_from",
    "valid_until",
    "days",
    "advertiser",
)


def validate_message_placeholders(text: str) -> None:
    """Reject unknown or malformed `{placeholders}` before a template is stored."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ValidationError(
            f"Message text is not a valid template ({exc}); write placeholders as {{target}} "
            "and double literal braces as {{ and }}."
        ) from exc
    unknown = sorted({name for name in fields if name not in MESSAGE_PLACEHOLDERS})
    if unknown:
        raise ValidationError(
            f"Unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} in the message "
            f"text; use only {', '.join('{' + n + '}' for n in MESSAGE_PLACEHOLDERS)}."
        )


class TaskKind(models.TextChoices):
    SPEND = "spend_target", "Spend target"
    CLICKS = "click_target", "Click target"
    ACTIVE_DAYS = "active_days_target", "Active days target"
    LOGIN_DAYS = "login_days", "Login days"


class TaskTemplate(models.Model):
    """A versioned recipe for an incentive task.

    All versions of one template share `family`; exactly one is current. Once a task used a
    version, editing it creates the next version (see services.templates.template_update), so a
    task always keeps the terms it was given.
    """

    class RewardType(models.TextChoices):
        FIXED = "fixed", "Fixed amount"
        PERCENT = "percent", "Percentage of the target"

    family = models.UUIDField(default=uuid.uuid4, editable=False, db_index=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    is_current = models.BooleanField(default=True, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=TaskKind.choices)
    scenario = models.ForeignKey(
        Scenario,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: any scenario (the campaign's scope decides).",
    )
    reward_type = models.CharField(
        max_length=16, choices=RewardType.choices, default=RewardType.FIXED
    )
    reward_value = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="The amount for a fixed reward, the percentage of the target otherwise.",
    )
    minimum_target = models.DecimalField(
        max_digits=14, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    stretch = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("0.20"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("10"))],
        help_text="Target = predicted level x (1 + stretch), rounded up to a friendly number.",
    )
    validity_days = models.PositiveSmallIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    message_text = models.TextField(validators=[validate_message_placeholders])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["family", "version"], name="template_family_version"),
            models.UniqueConstraint(
                fields=["family"], condition=Q(is_current=True), name="template_one_current"
            ),
            models.CheckConstraint(
                condition=Q(validity_days__gte=1, validity_days__lte=90),
                name="template_validity_1_90",
            ),
            models.CheckConstraint(
                condition=Q(reward_value__gt=0, minimum_target__gt=0, stretch__gte=0),
                name="template_positive_amounts",
            ),
            # A percentage of a click or day count is no amount of money.
            models.CheckConstraint(
                condition=Q(reward_type="fixed") | Q(kind="spend_target", reward_value__lte=100),
                name="template_percent_reward_spend_only",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def clean(self) -> None:
        if self.reward_type == self.RewardType.PERCENT and self.kind != TaskKind.SPEND:
            raise ValidationError(
                {"reward_type": "A percentage reward needs a spend target; use a fixed reward."}
            )
        if self.reward_type == self.RewardType.PERCENT and (self.reward_value or 0) > 100:
            raise ValidationError({"reward_value": "A percentage must be at most 100."})


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        SCHEDULED = "scheduled"
        RUNNING = "running"
        CLOSED = "closed"

    class Policy(models.TextChoices):
        THRESHOLD = "threshold", "Predicted active days at or below a threshold"
        BOTTOM_N = "bottom_n", "The N eligible advertisers with the lowest predicted activity"

    class Targeting(models.TextChoices):
        # How the campaign picks its advertisers and offers among the eligible ones.
        LEAST_ACTIVITY = "least_activity", "Least predicted activity first"
        UPLIFT = "uplift", "Uplift allocation under the budget"
        RANDOM = "random", "Random eligible advertisers"
        EXPLORATION = "exploration", "Random advertisers with randomised offers (uplift data)"

    class Objective(models.TextChoices):
        # What uplift allocation maximises under the budget.
        ACTIVES = "actives", "Incremental active advertisers"
        NET_REVENUE = "net_revenue", "Incremental net revenue (spend minus rewards)"

    name = models.CharField(max_length=200)
    scenarios = models.ManyToManyField(
        Scenario, blank=True, related_name="+", help_text="Scope. Empty: all scenarios."
    )
    model_kind = models.CharField(
        max_length=32,
        choices=ModelKind.choices,
        blank=True,
        help_text="Use the active version of this kind (unless a version is set).",
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.BOTTOM_N)
    targeting = models.CharField(
        max_length=16, choices=Targeting.choices, default=Targeting.LEAST_ACTIVITY
    )
    objective = models.CharField(
        max_length=16, choices=Objective.choices, default=Objective.ACTIVES
    )
    holdout_share = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Random share of the eligible advertisers kept without a task, so the "
        "campaign's incremental effect is always measurable.",
    )
    threshold = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Threshold policy: predicted active days (summed over the scope) at or below.",
    )
    top_n = models.PositiveIntegerField(null=True, blank=True, help_text="Bottom-N policy: N.")
    lookback_days = models.PositiveSmallIntegerField(
        default=28, help_text="Eligible: active in scope during these many days before as-of."
    )
    cooldown_days = models.PositiveSmallIntegerField(
        default=14, help_text="Eligible: no task of any campaign ended within these many days."
    )
    templates = models.ManyToManyField(TaskTemplate, related_name="campaigns")
    budget = models.DecimalField(
        max_digits=14, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    reserved = models.DecimalField(max_digits=14, decimal_places=2, default=0, editable=False)
    settled = models.DecimalField(max_digits=14, decimal_places=2, default=0, editable=False)
    reward_cap = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Most one advertiser can be promised in this campaign, over all its tasks.",
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # Paused (any status but closed): no new production, no new leases of its messages; the
    # tasks it gave keep their terms. Resuming clears it. Closing, unlike pausing, is final.
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The backstop of services.budget: no code path can overspend a campaign.
            models.CheckConstraint(
                condition=Q(
                    budget__gte=0,
                    reserved__gte=0,
                    settled__gte=0,
                    reserved__lte=F("budget") - F("settled"),
                ),
                name="campaign_budget_not_exceeded",
            ),
            models.CheckConstraint(condition=Q(reward_cap__gt=0), name="campaign_reward_cap_pos"),
            models.CheckConstraint(
                condition=Q(holdout_share__gte=0) & Q(holdout_share__lte=0.5),
                name="campaign_holdout_share_0_half",
            ),
            models.CheckConstraint(
                condition=~Q(model_kind="") | Q(model_version__isnull=False),
                name="campaign_has_model",
            ),
            models.CheckConstraint(
                condition=Q(policy="bottom_n", top_n__isnull=False, top_n__gt=0)
                | Q(policy="threshold", threshold__isnull=False),
                name="campaign_policy_parameter",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")),
                name="campaign_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def remaining(self) -> Decimal:
        return self.budget - self.reserved - self.settled

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None


class TaskState(models.TextChoices):
    CREATED = "created"
    PUSHED = "pushed"
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


OPEN_STATES = (TaskState.CREATED, TaskState.PUSHED, TaskState.DELIVERED, TaskState.ACCEPTED)


class IncentiveTask(models.Model):
    """One personalised task given to one advertiser. Its terms never change after creation."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="tasks")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="+")
    scenario = models.ForeignKey(
        Scenario, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    template = models.ForeignKey(TaskTemplate, on_delete=models.PROTECT, related_name="tasks")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=32, choices=TaskKind.choices)
    target = models.DecimalField(max_digits=14, decimal_places=2)
    reward = models.DecimalField(max_digits=12, decimal_places=2)
    predicted_activity = models.FloatField(help_text="Predicted active days that selected it.")
    predicted_base = models.FloatField(help_text="Predicted level the target stretches.")
    selection_kind = models.CharField(
        max_length=16,
        blank=True,
        help_text="What selected it: p_inactive, active_days, uplift, random or exploration.",
    )
    selection_score = models.FloatField(
        null=True, blank=True, help_text="Its score under that rule (e.g. P(inactive))."
    )
    expected_gain = models.FloatField(
        null=True,
        blank=True,
        help_text="Uplift allocation: the expected gain in the campaign's objective.",
    )
    prediction_as_of = models.DateField()
    valid_from = models.DateField()
    valid_until = models.DateField(help_text="Last day of the window, inclusive.")
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.CREATED)
    progress = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    progress_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["advertiser"],
                condition=Q(state__in=[s.value for s in OPEN_STATES]),
                name="task_one_open_per_advertiser",
            ),
            models.CheckConstraint(
                condition=Q(target__gt=0, reward__gt=0), name="task_positive_terms"
            ),
            models.CheckConstraint(
                condition=Q(valid_until__gte=F("valid_from")), name="task_window_ordered"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "valid_until"], name="task_state_until"),
            models.Index(fields=["advertiser", "valid_until"], name="task_advertiser_until"),
            models.Index(fields=["campaign", "advertiser"], name="task_campaign_advertiser"),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.kind} {self.target}) for {self.advertiser_id}"

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class TaskTransition(models.Model):
    """Audit row: one per state change of a task (and one for its creation)."""

    task = models.ForeignKey(IncentiveTask, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, choices=TaskState.choices)
    actor = models.CharField(max_length=200)
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.from_state or '-'} -> {self.to_state}"


class BudgetLedgerEntry(models.Model):
    """Every movement of a campaign's money. Campaign.reserved/settled are their running sums."""

    class Kind(models.TextChoices):
        RESERVE = "reserve"
        RELEASE = "release"
        SETTLE = "settle"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="ledger")
    task = models.ForeignKey(IncentiveTask, on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "budget ledger entries"
        constraints = [
            # A task's money moves at most once per kind: the backstop against double payment.
            models.UniqueConstraint(fields=["task", "kind"], name="ledger_once_per_task_kind"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_amount_positive"),
        ]
        indexes = [models.Index(fields=["campaign", "kind"], name="ledger_campaign_kind")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} (task {self.task_id})"


def json_datetime(value: datetime | None) -> str | None:
    """A datetime as the API writes it: ISO 8601, UTC as "Z"."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


class PushMessage(models.Model):
    """The message the push system sends for a task.

    `content` holds its fixed fields as one JSON object, rendered once at production: the feed
    serves pages of 100 by splicing these strings, with no per-field work on the hot path.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        LEASED = "leased"
        SENT = "sent"
        # The task was cancelled or expired: the offer is off, never send (or leave) it.
        WITHDRAWN = "withdrawn"

    task = models.OneToOneField(IncentiveTask, on_delete=models.CASCADE, related_name="message")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    content = models.TextField(help_text="The fixed fields as a JSON object.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_consumer = models.ForeignKey(
        "ApiConsumer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The consumer that holds, or last held, the lease: the only one whose events "
        "count.",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)  # also written into `content`
    sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "id"], name="message_status_id")]

    def __str__(self) -> str:
        return f"message {self.pk} ({self.status})"


class ApiScope(models.TextChoices):
    PUSH = "push", "push: read messages to send, write delivery events"
    OPS = "ops", "ops: read everything"


class ApiConsumer(models.Model):
    """A service that calls the API (e.g. one push system). Its keys may be rotated; leases and
    events belong to the consumer, so a new key of the same consumer keeps its leases."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API consumer"

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A service's API key. Only the SHA-256 of the secret is stored; the secret is shown once."""

    name = models.CharField(max_length=200)
    consumer = models.ForeignKey(ApiConsumer, on_delete=models.PROTECT, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class IdempotencyRecord(models.Model):
    """The stored outcome of one event request, replayed for a retry with the same key."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    response_status = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_per_api_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.key} -> {self.response_status}"


class CampaignHoldout(models.Model):
    """An eligible advertiser a campaign kept without a task at one production (its holdout)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="holdouts")
    advertiser = models.ForeignKey(Advertiser, on_delete=models.CASCADE, related_name="+")
    as_of = models.DateField(help_text="The predictions' as-of date of that production.")
    valid_from = models.DateField(help_text="The window its tasks would have had.")
    valid_until = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "advertiser"], name="holdout_once"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}: holdout {self.advertiser_id}"


class UpliftModel(models.Model):
    """A trained uplift model (campaigns.uplift) and what it learnt from; the newest is used."""

    artifact = models.CharField(max_length=500, help_text="Path under ARTIFACT_DIR.")
    trained_on = models.JSONField(default=list, help_text="Campaign ids of its training rows.")
    rows = models.PositiveIntegerField(default=0)
    quality = models.JSONField(default=dict, help_text="Qini / AUUC on held-out rows.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"uplift model {self.pk}"
