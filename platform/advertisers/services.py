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

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Count, DecimalField, Max, Sum

from advertisers.models import DailyStat, Scenario

STATS_WINDOW_DAYS = 28
CENT = Decimal("0.01")
# A window's total spend outgrows the column's max_digits (SQLite converts by the output field).
MONEY_SUM = DecimalField(max_digits=30, decimal_places=2)


@dataclass(frozen=True)
class WindowActivity:
    """What the statistics are made of: the latest date, and per scenario pk the active
    advertisers and the expenditure and count of active advertiser-days in the window."""

    as_of: date | None
    by_scenario: dict[int, tuple[int, Decimal, int]]

    def mean(self, scenario: int) -> Decimal:
        _, spent, days = self.by_scenario.get(scenario, (0, Decimal(0), 0))
        return (spent / days if days else Decimal(0)).quantize(CENT, ROUND_HALF_UP)


def window_activity() -> WindowActivity:
    """The statistics' raw figures, aggregated by the database over DailyStat."""
    as_of = DailyStat.objects.aggregate(last=Max("date"))["last"]
    if as_of is None:
        return WindowActivity(None, {})
    window = DailyStat.objects.filter(
        date__gt=as_of - timedelta(days=STATS_WINDOW_DAYS), date__lte=as_of, expenditure__gt=0
    )
    rows = window.values("scenario").annotate(
        active=Count("advertiser", distinct=True),
        spent=Sum("expenditure", output_field=MONEY_SUM),
        days=Count("id"),
    )
    return WindowActivity(
        as_of, {row["scenario"]: (row["active"], row["spent"], row["days"]) for row in rows}
    )


@transaction.atomic
def scenario_stats_refresh(activity: WindowActivity | None = None) -> None:
    """Recompute every scenario's statistics from DailyStat (called after each ingestion).

    `activity` is for a caller that already holds the figures, exactly as `window_activity`
    would compute them: a load into an empty table computes them from its own rows.
    """
    activity = activity or window_activity()
    scenarios = list(Scenario.objects.all())
    for scenario in scenarios:
        scenario.active_advertisers_28d = activity.by_scenario.get(scenario.pk, (0,))[0]
        scenario.mean_daily_expenditure = activity.mean(scenario.pk)
        scenario.stats_as_of = activity.as_of
    Scenario.objects.bulk_update(
        scenarios, ["active_advertisers_28d", "mean_daily_expenditure", "stats_as_of"]
    )
