"""`manage.py predict [--kind m2m] [--as-of DATE]`: score every eligible (advertiser, scenario).

Uses the active version of the kind (or --version). Runs in this process by default, chunk by
chunk with the same run record the workers keep; --queue sends the chunks to the `gpu` queue
as a chord instead. Re-running for the same version and date rewrites the same rows.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictor import selectors, services, tasks
from predictor.features import FeatureError
from predictor.models import ModelKind, ModelVersion


class Command(BaseCommand):
    help = "Predict the next 7 days for every eligible advertiser and scenario and store it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", default=ModelKind.M2M, choices=ModelKind.values)
        parser.add_argument(
            "--model-version", type=int, help="model version id (default: the active one)"
        )
        parser.add_argument(
            "--as-of", type=date.fromisoformat, help="last observed day (default: latest data)"
        )
        parser.add_argument("--chunk-size", type=int, default=5000, help="advertisers per chunk")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
        parser.add_argument("--queue", action="store_true", help="run on the Celery gpu workers")

    def handle(self, *args: Any, **options: Any) -> None:
        version = self._version(options)
        try:
            as_of = options["as_of"] or services.latest_data_date()
            run = services.prediction_run_create(
                model_version=version, as_of=as_of, chunk_size=options["chunk_size"]
            )
            if options["queue"]:
                tasks.enqueue_prediction_run(run)
                self.stdout.write(f"prediction run {run.pk}: {run.chunks_total} chunk(s) queued")
                return
            started = time.perf_counter()
            loaded = services.model_version_load(version=version, device=options["device"])
            run = services.prediction_run_execute(run=run, loaded=loaded)
        except (FeatureError, ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc
        seconds = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"prediction run {run.pk} {run.status}: {run.pairs_scored} pairs at {as_of} with"
                f" {version} in {seconds:.1f}s"
                f" ({run.pairs_scored / max(seconds, 1e-9):.0f} pairs/s)"
            )
        )

    def _version(self, options: dict[str, Any]) -> ModelVersion:
        if options["model_version"] is not None:
            version = ModelVersion.objects.filter(pk=options["model_version"]).first()
            if version is None:
                raise CommandError(f"model version {options['model_version']} does not exist.")
            return version
        version = selectors.model_version_active(kind=options["kind"])
        if version is None:
            raise CommandError(
                f"no active {options['kind']} model: train one (manage.py train --model"
                f" {options['kind']} --activate) or pass --model-version."
            )
        return version
