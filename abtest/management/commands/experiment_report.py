"""`manage.py experiment_report KEY [--all-rows]`: an experiment's report as a text table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from abtest import display
from abtest.models import Experiment
from abtest.selectors import experiment_report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


class Command(BaseCommand):
    help = (
        "Print an experiment's report: the arms, SRM over all of them, the verdicts, and every "
        "treatment arm's lift over the control per metric with its Holm-corrected p-value."
    )

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
        write(f"Experiment {head['key']} ({head['status']}), alpha {head['alpha']}")
        mode = display.mode(report)
        write(f"Analysis mode: {mode['label']} ({mode['detail']})")
        write("")
        write(
            f"{'arm':<16} {'role':<9} {'targeting':<14} {'model':<16} {'weight':>6}"
            f" {'assigned':>9} {'targets':>8} {'reward spent':>13}"
        )
        for arm in report["arms"]:
            write(
                f"{arm['name']:<16} {arm['role']:<9} {arm.get('targeting', '-'):<14}"
                f" {arm['model']:<16} {arm['weight']:>6g} {arm.get('n', 0):>9,}"
                f" {arm.get('targets', 0):>8,} {arm.get('reward_spent', '-'):>13}"
            )
        holdout = report.get("groups", {}).get("holdout")
        if holdout:
            write(
                f"{'holdout':<16} {'':<9} {'none':<14} {'':<16} {'':>6} {holdout['assigned']:>9,}"
            )
        srm = report.get("srm")
        if srm:
            flag = "MISMATCH" if srm["flagged"] else "ok"
            write(f"sample ratio check over {len(srm['observed'])} groups: p = "
                  f"{srm['p_value']:.4g} ({flag})")  # fmt: skip
        if report.get("verdicts"):
            write("")
            write(f"Verdicts (whole arms, CUPED; {mode['key']}):")
            for verdict in report["verdicts"]:
                write(f"  {verdict['text']}")
        write("")
        write(
            f"{'arm':<16} {'population':<10} {'metric':<28} {'adj':<6} {'control':>12}"
            f" {'arm mean':>12} {'lift':>9} {'95% CI':>21} {'p':>8} {'Holm p':>8} {'sig':>4}"
        )
        for row in report["rows"]:
            if not options["all_rows"] and (row["adjustment"] != "none" or row["capped"]):
                continue
            relative = row["relative"] or {}
            if row.get("not_estimable"):
                lift, ci = "-", f"not estimable: {row['not_estimable']}"[:21]
            elif row["relative"] is None:  # the p-value belongs to the absolute lift
                absolute = row["absolute"] or {}
                lift = _num(absolute.get("value"))
                ci = f"[{_num(absolute.get('ci_low'))}, {_num(absolute.get('ci_high'))}]"
            else:
                lift = _pct(relative.get("value"))
                ci = f"[{_pct(relative.get('ci_low'))}, {_pct(relative.get('ci_high'))}]"
            write(
                f"{row.get('arm', 'treatment'):<16} {row['population']:<10} {row['label']:<28}"
                f" {row['adjustment']:<6} {_num(row['control']['mean']):>12}"
                f" {_num(row['treatment']['mean']):>12} {lift:>9} {ci:>21}"
                f" {_p(row['p_value']):>8} {_p(row['p_value_holm']):>8}"
                f" {'yes' if row['significant'] else 'no':>4}"
            )
        write(
            "lift: relative to the control; the p-value belongs to it (to the absolute lift where "
            "shown in units). Holm: across arms x metrics, primary and secondary apart."
        )
        section = report.get("incremental_vs_no_task_arm")
        if section:
            write("")
            write(f"Incremental against the {section['reference_kind']} {section['reference']!r}"
                  " (95% CI), per 1,000 of reward spent:")  # fmt: skip
            for arm in section["arms"]:
                write(
                    f"  {arm['arm']:<16} active {_interval(arm['incremental_active'])}"
                    f"  per 1,000 {_interval(arm['incremental_active_per_1000'])}"
                    f"  net revenue per 1,000 {_interval(arm['incremental_net_revenue_per_1000'])}"
                )
        for note in report.get("notes", []):
            write(f"note: {note}")


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(estimate: dict | None) -> str:
    if not estimate or estimate.get("value") is None:
        return "n/a"
    if estimate.get("ci_low") is None:
        return f"{estimate['value']:+.2f}"
    return f"{estimate['value']:+.2f} [{estimate['ci_low']:+.2f}, {estimate['ci_high']:+.2f}]"
