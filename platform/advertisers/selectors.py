"""Reads on advertisers, scenarios and daily stats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Max, Min

from advertisers.models import Advertiser, DailyStat, Scenario


@dataclass(frozen=True)
class ScenarioSummary:
    code: str
    name: str
    kind: str
    launched_on: date
    age_days: int | None
    active_advertisers_28d: int
    mean_daily_expenditure: Decimal
    stats_as_of: date | None


@dataclass(frozen=True)
class DataSummary:
    """What is loaded: counts, the covered dates and each scenario's statistics."""

    advertisers: int
    scenarios: int
    daily_stats: int
    first_date: date | None
    last_date: date | None
    per_scenario: list[ScenarioSummary]


def data_summary() -> DataSummary:
    """Counts and date range of the loaded data, with the statistics of every scenario.

    The per-scenario figures are the ones `scenario_stats_refresh` stored after the last
    ingestion (active advertisers over the 28 days ending on `stats_as_of`).
    """
    dates = DailyStat.objects.aggregate(first=Min("date"), last=Max("date"))
    scenarios = [
        ScenarioSummary(
            code=s.code,
            name=s.name,
            kind=s.kind,
            launched_on=s.launched_on,
            age_days=s.age_days,
            active_advertisers_28d=s.active_advertisers_28d,
            mean_daily_expenditure=s.mean_daily_expenditure,
            stats_as_of=s.stats_as_of,
        )
        for s in Scenario.objects.order_by("launched_on", "code")
    ]
    return DataSummary(
        advertisers=Advertiser.objects.count(),
        scenarios=len(scenarios),
        daily_stats=DailyStat.objects.count(),
        first_date=dates["first"],
        last_date=dates["last"],
        per_scenario=scenarios,
    )
