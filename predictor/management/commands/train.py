"""`manage.py train --model m2m`: train one model kind and register it as a ready version.

Paper defaults (DESIGN section 4): 10 epochs, batch 256, Adam lr 2e-3, early stopping on the
validation split. Interrupt it and run the same command again: it resumes from the last
finished epoch's checkpoint. For several GPUs run it under torchrun, e.g.
`torchrun --nproc_per_node=4 manage.py train --model m2m` (rank 0 writes the registry).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictor import services, training
from predictor.evaluation import fmt
from predictor.features import FeatureError
from predictor.models import ModelKind


def add_training_arguments(parser: CommandParser) -> None:
    """Options shared by `train` and `evaluate`."""
    defaults = services.TrainOptions()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--task-weighting",
        choices=training.TASK_WEIGHTINGS,
        default=defaults.task_weighting,
        help="lambda_t of eq. 19: by each task's null deviance, or all 1",
    )
    parser.add_argument(
        "--generator-lr-scale",
        type=float,
        default=defaults.generator_lr_scale,
        help="learning rate of the meta units' generators (V_w, V_b) relative to --lr;"
        " default 1/d, where d is the width of the scenario knowledge",
    )
    parser.add_argument(
        "--l2",
        type=float,
        default=defaults.l2,
        help="alpha of eq. 19: the weight of the L2 penalty on the meta-unit and the other weights",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="epochs without a better validation score before stopping",
    )
    parser.add_argument(
        "--select-by",
        choices=training.SELECTIONS,
        default=defaults.select_by,
        help="the validation score for early stopping and the kept epoch: overall NMAE"
        " (eq. 22) or the Poisson loss",
    )
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        help="first day of the data window (default: first day with data)",
    )
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        help="last day of the data window (default: last day with data)",
    )
    parser.add_argument(
        "--window", type=int, default=defaults.window_days, help="T, days of history per sample"
    )
    parser.add_argument(
        "--stride", type=int, default=defaults.stride, help="days between as-of dates"
    )
    parser.add_argument(
        "--bins", type=int, default=defaults.n_bins, help="quantile bins per channel"
    )
    parser.add_argument(
        "--hparams",
        type=json.loads,
        default={},
        help="model hyperparameters as JSON, e.g. '{\"d_view\": 128}'; for evaluate, the keys"
        " go to every model whose config has them, or give one dict per kind:"
        ' \'{"m2m": {...}, "mmoe": {...}}\'',
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_options(options: dict[str, Any], **overrides: Any) -> services.TrainOptions:
    values = {
        "epochs": options["epochs"],
        "batch_size": options["batch_size"],
        "lr": options["lr"],
        "seed": options["seed"],
        "device": options["device"],
        "patience": options["patience"],
        "l2": options["l2"],
        "generator_lr_scale": options["generator_lr_scale"],
        "select_by": options["select_by"],
        "task_weighting": options["task_weighting"],
        "start": options["start"],
        "end": options["end"],
        "window_days": options["window"],
        "stride": options["stride"],
        "n_bins": options["bins"],
        "hparams": options["hparams"],
        "progress": not options["no_progress"],
    }
    return services.TrainOptions(**(values | overrides))


class Command(BaseCommand):
    help = "Train M2M or a baseline on the daily stats and register a ready model version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, choices=ModelKind.values)
        add_training_arguments(parser)
        parser.add_argument(
            "--no-resume", action="store_true", help="ignore an existing checkpoint"
        )
        parser.add_argument("--activate", action="store_true", help="activate the new version")

    def handle(self, *args: Any, **options: Any) -> None:
        opts = train_options(options, resume=not options["no_resume"])
        try:
            version = services.model_train(kind=options["model"], options=opts)
            if version is not None and options["activate"]:
                version = services.model_version_activate(version=version)
        except (FeatureError, ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            training.dist_cleanup()
        if version is None:  # a torchrun rank other than 0
            return
        overall = version.metrics["test"]["overall"]
        self.stdout.write(
            self.style.SUCCESS(
                f"model version {version.pk} ({version.kind}, {version.status}) on"
                f" {training.dist_info().world_size} process(es): test NMAE {fmt(overall['nmae'])},"
                f" SMAPE {fmt(overall['smape'])}, best epoch {version.metrics['best_epoch']}"
            )
        )
