"""manage.py lab: the incentive lab's closed loop (lab.runner), its tables and chart."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lab import report
from lab.runner import ARMS, LabConfig, LabError, database_label, lab_run

HELP_TEXT = """One closed-loop run of the incentive lab in a simulated world: simulate,
ingest, train M2M and the single-task baseline, predict, an exploration week (random tasks with
random offers plus a no-task holdout) that trains the uplift model, then one experiment with
equal arms of the same budget and templates ({arms}), the world advanced with the simulator's
incentive response, settlement and the report. Writes lab.md, lab.json and lab.png to --out.

The models train on the first --train-advertisers advertisers (default 20,000 of 200,000): the
simulator draws advertisers independently, so that is a random sample; training on all of them
would take most of the 15-minute budget on a 2-core CPU for little gain in validation loss.
Every advertiser is scored.

The database must be empty (the lab builds its own world), unless --reuse-models runs on the
world and models already there; --flush erases it first (each repeat needs a fresh world).
""".format(arms=", ".join(name for name, *_ in ARMS))


class Command(BaseCommand):
    help = HELP_TEXT

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = LabConfig()
        parser.add_argument("--advertisers", type=int, default=defaults.advertisers)
        parser.add_argument(
            "--days", type=int, default=defaults.days, help="days of history the world starts with"
        )
        parser.add_argument("--seed", type=int, default=defaults.seed, help="world seed")
        parser.add_argument(
            "--repeats",
            type=int,
            default=1,
            help="runs on world seeds seed, seed+1, ...; mean +- sd (needs --flush)",
        )
        parser.add_argument("--train-advertisers", type=int, default=defaults.train_advertisers)
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument(
            "--exploration-share",
            type=float,
            default=defaults.exploration_share,
            help="share of advertisers given a random exploration task",
        )
        parser.add_argument(
            "--campaign-holdout",
            type=float,
            default=defaults.campaign_holdout_share,
            help="every campaign's random no-task holdout share",
        )
        parser.add_argument(
            "--budget-per-arm",
            type=Decimal,
            default=None,
            help="reward budget of each arm (default 2.5 x the arm's size)",
        )
        parser.add_argument("--reward-cap", type=Decimal, default=defaults.reward_cap)
        parser.add_argument(
            "--uplift-estimator",
            default=defaults.uplift_estimator,
            help="take-up (P(take up) x the gain of those who do) or t-learner "
            "(campaigns/uplift.py explains both)",
        )
        parser.add_argument("--reuse-models", action="store_true")
        parser.add_argument(
            "--flush", action="store_true", help="erase the database before each run"
        )
        parser.add_argument("--out", default=str(defaults.out))

    def handle(self, *args: object, **opts: object) -> None:
        repeats = int(opts["repeats"])
        if repeats < 1:
            raise CommandError(f"--repeats must be >= 1, got {repeats}.")
        if repeats > 1 and not opts["flush"]:
            raise CommandError("--repeats > 1 needs --flush: every repeat builds a fresh world.")
        out = Path(str(opts["out"]))
        base = LabConfig(
            advertisers=int(opts["advertisers"]),
            days=int(opts["days"]),
            seed=int(opts["seed"]),
            train_advertisers=int(opts["train_advertisers"]),
            epochs=int(opts["epochs"]),
            exploration_share=float(opts["exploration_share"]),
            campaign_holdout_share=float(opts["campaign_holdout"]),
            budget_per_arm=opts["budget_per_arm"],  # type: ignore[arg-type]
            reward_cap=opts["reward_cap"],  # type: ignore[arg-type]
            uplift_estimator=str(opts["uplift_estimator"]),
            reuse_models=bool(opts["reuse_models"]),
            out=out,
        )
        self.stdout.write(
            f"lab on {database_label()}: {base.advertisers:,} advertisers, "
            f"{len(ARMS)} arms of {base.arm_size:,}, budget {base.budget} per arm"
        )
        per_repeat, payload = [], {"config": dataclasses.asdict(base), "runs": []}
        for i in range(repeats):
            config = dataclasses.replace(
                base, seed=base.seed + i, out=out / f"seed-{base.seed + i}"
            )
            if opts["flush"]:
                call_command("flush", interactive=False, verbosity=0)
            try:
                result = lab_run(config, progress=self.stdout.write)
            except LabError as exc:
                raise CommandError(str(exc)) from exc
            rows = report.arm_table(result.report, result.expected, result.true_increments)
            comparison = report.targeted_comparison(result.report)
            md = report.markdown(rows, comparison)
            report.chart_png(rows, config.out / "lab.png")
            report.write(
                config.out,
                {
                    "rows": rows,
                    "comparison": comparison,
                    "ratios": report.ratios(rows),
                    "uplift_quality": result.uplift_quality,
                    "exploration": result.exploration,
                    "expected": result.expected,
                    "true_increments": result.true_increments,
                    "stage_seconds": result.stage_seconds,
                    "experiment": result.experiment_key,
                },
                md,
            )
            self.stdout.write(f"\nseed {config.seed}: experiment {result.experiment_key}\n{md}")
            self._ratios(report.ratios(rows))
            per_repeat.append(rows)
            payload["runs"].append(
                {
                    "seed": config.seed,
                    "rows": rows,
                    "comparison": comparison,
                    "stage_seconds": result.stage_seconds,
                }
            )
        summary = report.repeats_summary(per_repeat)
        md = report.repeats_markdown(summary)
        report.chart_png(per_repeat[-1], out / "lab.png")
        report.write(out, {**payload, "summary": summary}, md)
        self.stdout.write(
            f"\nover {repeats} run(s), mean ± sd:\n{md}\nwrote {out}/lab.md, lab.json and lab.png"
        )

    def _ratios(self, ratios: dict[str, float]) -> None:
        what = {
            "_paid": "incremental actives per 1,000 of reward paid",
            "_true": "true (twin world) incremental actives per 1,000 of budget",
            "_expected": "expected (oracle formula) incremental actives per 1,000 of budget",
            "": "incremental actives per 1,000 of budget",
        }
        for name, value in ratios.items():
            shown = "-" if not math.isfinite(value) else f"{value:.2f}x"
            suffix = next(s for s in what if name.endswith(s))
            label = (name.removesuffix(suffix) if suffix else name).replace("_", " ")
            self.stdout.write(f"{what[suffix]}, {label}: {shown}")
