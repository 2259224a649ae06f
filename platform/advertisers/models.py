"""Advertisers, scenarios and their daily performance: the data every later stage reads."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Scenario(models.Model):
    """An advertising scenario (sponsored search, display, ...).

    The statistics fields are derived from DailyStat and refreshed after every ingestion by
    `advertisers.services.scenario_stats_refresh`; never edit them by hand.
    """

    class Kind(models.TextChoices):
        SEARCH = "search"
        DISPLAY = "display"
        SHOP = "shop"
        FEED = "feed"
        BRAND = "brand"
        LIVE = "live"
        OTHER = "other"

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    launched_on = models.DateField()
    attributes = models.JSONField(default=dict, blank=True, help_text="Numeric attr_* columns.")

    active_advertisers_28d = models.PositiveIntegerField(default=0, editable=False)
    mean_daily_expenditure = models.DecimalField(
        max_digits=16, decimal_places=2, default=0, editable=False
    )
    stats_as_of = models.DateField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    @property
    def age_days(self) -> int | None:
        """Days from launch to the last day the statistics cover."""
        if self.stats_as_of is None:
            return None
        return (self.stats_as_of - self.launched_on).days


class Advertiser(models.Model):
    advertiser_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    registered_on = models.DateField()
    business_scale = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    main_category = models.CharField(max_length=100)
    star_level = models.PositiveSmallIntegerField(validators=[MaxValueValidator(5)])

    class Meta:
        ordering = ["advertiser_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(business_scale__gte=1, business_scale__lte=5),
                name="advertiser_business_scale_1_5",
            ),
            models.CheckConstraint(
                condition=Q(star_level__lte=5), name="advertiser_star_level_0_5"
            ),
        ]

    def __str__(self) -> str:
        return self.advertiser_id


class DailyStat(models.Model):
    """One advertiser's activity in one scenario on one day; a missing row means no activity.

    An advertiser is active in a scenario on a day when its expenditure there is positive.
    """

    # No single-column FK indexes: dailystat_unique_day leads with advertiser, and
    # dailystat_date serves date-range reads; fewer indexes keep ingestion fast.
    advertiser = models.ForeignKey(
        Advertiser, on_delete=models.CASCADE, related_name="daily_stats", db_index=False
    )
    scenario = models.ForeignKey(
        Scenario, on_delete=models.PROTECT, related_name="daily_stats", db_index=False
    )
    date = models.DateField()
    impressions = models.BigIntegerField(default=0)
    clicks = models.BigIntegerField(default=0)
    expenditure = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    gmv = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    logins = models.IntegerField(default=0)
    campaign_edits = models.IntegerField(default=0)
    bid_changes = models.IntegerField(default=0)
    budget_changes = models.IntegerField(default=0)

    COUNTERS = (
        "impressions",
        "clicks",
        "expenditure",
        "gmv",
        "logins",
        "campaign_edits",
        "bid_changes",
        "budget_changes",
    )

    class Meta:
        constraints = [
            # Also the index behind "one advertiser's history".
            models.UniqueConstraint(
                fields=["advertiser", "scenario", "date"], name="dailystat_unique_day"
            ),
            models.CheckConstraint(
                condition=Q(
                    impressions__gte=0,
                    clicks__gte=0,
                    expenditure__gte=0,
                    gmv__gte=0,
                    logins__gte=0,
                    campaign_edits__gte=0,
                    bid_changes__gte=0,
                    budget_changes__gte=0,
                ),
                name="dailystat_non_negative",
            ),
        ]
        # "All rows in a date range" (feature building, metrics, settlement). Date alone: with
        # few distinct dates the btree deduplicates to a fraction of a (date, scenario) index and
        # builds in about half the time after a bulk load; a scenario is a filter on the range.
        indexes = [models.Index(fields=["date"], name="dailystat_date")]

    def __str__(self) -> str:
        return f"{self.advertiser_id}/{self.scenario_id}/{self.date}"

    @property
    def is_active(self) -> bool:
        return self.expenditure > 0
