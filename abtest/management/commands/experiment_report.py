"""`manage.py experiment_report KEY [--all-rows]`: an experiment's report as a text table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from abtest.models import Experiment
from abtest.selectors import experiment_report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


class Command(BaseCommand):
    help = "Print an experiment's report: groups, SRM and the lift of every metric."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")
        parser.add_argument(
            "--all-rows", action="store_true", help="also CUPED-adjusted and capped rows"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        experiment = Experiment.objects.filter(key=options["key"]).first()
        if experiment is None:
            raise CommandError(f"no experiment with key {options['key']!r}")
        report = experiment_report(experiment=experiment)
        write = self.stdout.write
        head = report["experiment"]
        write(f"Experiment {head['key']} ({head['status']})")
        for name, group in report.get("groups", {}).items():
            write(
                f"  {name:<10} assigned {group['assigned']:>7,}  targeted {group['targeted']:>6,}"
            )
        srm = report.get("srm")
        if srm:
            flag = "MISMATCH" if srm["flagged"] else "ok"
            write(f"  sample ratio check: p = {srm['p_value']:.4g} ({flag})")
        write("")
        write(
            f"{'population':<10} {'metric':<28} {'adj':<6} {'control':>12} {'treatment':>12}"
            f" {'rel. lift':>9} {'95% CI':>21} {'p':>8} {'sig':>4}"
        )
        for row in report["rows"]:
            if not options["all_rows"] and (row["adjustment"] != "none" or row["capped"]):
                continue
            relative = row["relative"] or {}
            ci = f"[{_pct(relative.get('ci_low'))}, {_pct(relative.get('ci_high'))}]"
            p_value = "-" if row["p_value"] is None else f"{row['p_value']:.4f}"
            write(
                f"{row['population']:<10} {row['label']:<28} {row['adjustment']:<6}"
                f" {_num(row['control']['mean']):>12} {_num(row['treatment']['mean']):>12}"
                f" {_pct(relative.get('value')):>9} {ci:>21} {p_value:>8}"
                f" {'yes' if row['significant'] else 'no':>4}"
            )
        for note in report.get("notes", []):
            write(f"note: {note}")
