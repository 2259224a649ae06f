"""Writes on advertisers and scenarios that are not ingestion itself.

The scenario statistics (DESIGN section 4: "active advertisers, mean spend, age in days") are
derived from DailyStat, never typed in. They are computed as of the latest date in DailyStat, so
a model trained on an old window and the admin see the same numbers for the same data:

- active_advertisers_28d: advertisers with expenditure > 0 in the scenario on at least one of
  the 28 days ending on that date (both ends included);
- mean_daily_expenditure: mean expenditure of an active advertiser-day in the same window, i.e.
  the window's expenditure divided by its active (advertiser, day) pairs. Per active day rather
  than per calendar day, so the figure describes what an advertiser spends there and does not
  grow with the scenario's population (active_advertisers_28d already measures that);
- stats_as_of: that latest date; `Scenario.age_days` counts from launched_on to it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Avg, Count, Max

from advertisers.models import DailyStat, Scenario

STATS_WINDOW_DAYS = 28
CENT = Decimal("0.01")


@transaction.atomic
def scenario_stats_refresh() -> None:
    """Recompute every scenario's statistics from DailyStat (called after each ingestion)."""
    as_of = DailyStat.objects.aggregate(last=Max("date"))["last"]
    by_scenario: dict[int, dict] = {}
    if as_of is not None:
        window = DailyStat.objects.filter(
            date__gt=as_of - timedelta(days=STATS_WINDOW_DAYS),
            date__lte=as_of,
            expenditure__gt=0,
        )
        by_scenario = {
            row["scenario"]: row
            for row in window.values("scenario").annotate(
                active=Count("advertiser", distinct=True), mean=Avg("expenditure")
            )
        }
    scenarios = list(Scenario.objects.all())
    for scenario in scenarios:
        row = by_scenario.get(scenario.pk, {"active": 0, "mean": None})
        scenario.active_advertisers_28d = row["active"]
        mean = Decimal(str(row["mean"] or 0))
        scenario.mean_daily_expenditure = mean.quantize(CENT, ROUND_HALF_UP)
        scenario.stats_as_of = as_of
    Scenario.objects.bulk_update(
        scenarios, ["active_advertisers_28d", "mean_daily_expenditure", "stats_as_of"]
    )
