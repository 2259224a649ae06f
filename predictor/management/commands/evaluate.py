"""`manage.py evaluate --models m2m,mmoe,... --seeds 3 [--ablations] --out DIR`.

Trains every model for every seed on one time split and writes results.md and results.json
(Table 4 layout: NMAE and SMAPE per scenario x task and overall, mean ± std over seeds, and
M2M's relative improvement over the best baseline). Nothing is added to the model registry.
On a simulated world, `--oracle-world DIR/world.npz` adds the error floor any model faces
(`predictor.oracle`) and the headroom over the best baseline. The reference rows (zero, last 7
days repeated, LightGBM; `--references`) and the decision tables (P(inactive), 80% intervals,
median) come with every run; reliability.png is the reliability diagram of P(inactive), and
DIR/predictions/<model>-seed<k>.npz every model's test predictions with their sample keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictor import evaluation, oracle, reference
from predictor.features import FeatureError
from predictor.management.commands.train import add_training_arguments, train_options
from predictor.networks import MODEL_KINDS


class Command(BaseCommand):
    help = "Compare M2M with the baselines (and ablations) over several seeds on one split."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--models", default=",".join(MODEL_KINDS), help="comma-separated model kinds"
        )
        parser.add_argument("--seeds", type=int, default=3)
        parser.add_argument(
            "--ablations", action="store_true", help="add M2M w/o tower, attention, transformer"
        )
        parser.add_argument(
            "--out",
            type=Path,
            required=True,
            help="folder for results.md, results.json, reliability.png and predictions/",
        )
        parser.add_argument(
            "--oracle-world",
            type=Path,
            help="world.npz of the `simulate` run whose files were ingested: adds the oracle"
            " rows (the error floor) and the headroom over the best baseline",
        )
        parser.add_argument(
            "--oracle-replicas",
            type=int,
            default=oracle.DEFAULT_REPLICAS,
            help="simulated futures per sample for the oracle rows",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            help="model x seed fits to run at once, each in its own process (on a GPU, several"
            " side by side finish sooner; on a CPU each gets its share of the cores)",
        )
        parser.add_argument(
            "--references",
            default=",".join(reference.REFERENCES),
            help="comma-separated reference rows (zero, last_7_days, lightgbm); '' for none",
        )
        add_training_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        try:
            report = evaluation.evaluate(
                models=models,
                seeds=options["seeds"],
                ablations=options["ablations"],
                options=train_options(options, resume=False),
                on_progress=self.stdout.write,
                oracle_world=options["oracle_world"],
                oracle_replicas=options["oracle_replicas"],
                jobs=options["jobs"],
                references=tuple(r.strip() for r in options["references"].split(",") if r.strip()),
                predictions_dir=Path(options["out"]) / "predictions",
            )
        except (FeatureError, ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc
        md, js = evaluation.report_write(report, options["out"])
        self.stdout.write(self.style.SUCCESS(f"wrote {md} and {js}"))
