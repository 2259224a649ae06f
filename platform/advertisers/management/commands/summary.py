"""`manage.py summary`: what is loaded, and each scenario's statistics, as a small table."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from advertisers.selectors import DataSummary, data_summary


def summary_lines(summary: DataSummary) -> list[str]:
    dates = (
        f"{summary.first_date} .. {summary.last_date}" if summary.first_date else "no daily stats"
    )
    lines = [
        f"Advertisers: {summary.advertisers:,}   Scenarios: {summary.scenarios:,}   "
        f"Daily stats: {summary.daily_stats:,} rows ({dates})",
    ]
    if not summary.per_scenario:
        return lines
    as_of = summary.per_scenario[0].stats_as_of
    lines += [
        "",
        f"Scenario statistics as of {as_of or '-'} (active = spent on at least one of the last "
        "28 days; mean = mean spend per active advertiser-day):",
        f"{'scenario':<20} {'kind':<8} {'launched':<10} {'age (d)':>8} {'active 28d':>11} "
        f"{'mean daily spend':>17}",
    ]
    lines += [
        f"{s.code:<20} {s.kind:<8} {s.launched_on!s:<10} "
        f"{'-' if s.age_days is None else s.age_days:>8} {s.active_advertisers_28d:>11,} "
        f"{s.mean_daily_expenditure:>17,}"
        for s in summary.per_scenario
    ]
    return lines


class Command(BaseCommand):
    help = "Print counts of the loaded data and every scenario's statistics."

    def handle(self, *args, **options) -> None:
        for line in summary_lines(data_summary()):
            self.stdout.write(line)
