"""Create a campaign from a model's latest predictions, launch it and report what it produced.

manage.py campaign_run --name "Win back" --kind m2m --top 200 --budget 5000 [--scenario search]

All or nothing: a run that fails, and a --dry-run, leave no campaign behind.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from advertisers.models import Scenario
from campaigns.models import Campaign
from campaigns.selectors import NoModelVersion
from campaigns.services import (
    ProductionError,
    ProductionResult,
    campaign_create,
    campaign_produce,
    templates_default_ensure,
)
from predictor.models import ModelKind, ModelVersion


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise CommandError(f"{text!r} is not an amount; write e.g. 5000 or 5000.50.") from exc
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise CommandError(f"{text!r}: amounts are non-negative with at most 2 decimals.")
    return value


class Command(BaseCommand):
    help = "Create a campaign with the default templates, launch it, print tasks and budget."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--kind", default=ModelKind.M2M, choices=ModelKind.values)
        parser.add_argument("--model-version", type=int, help="A version id instead of --kind's.")
        policy = parser.add_mutually_exclusive_group(required=True)
        policy.add_argument("--top", type=int, help="The N least active eligible advertisers.")
        policy.add_argument("--threshold", help="Predicted active days at or below this.")
        parser.add_argument("--budget", required=True, help="Total budget, e.g. 5000.")
        parser.add_argument("--reward-cap", default="100", help="Per advertiser (default 100).")
        parser.add_argument(
            "--scenario", action="append", default=[], help="Scope (repeatable; default all)."
        )
        parser.add_argument("--cooldown-days", type=int, default=14)
        parser.add_argument(
            "--holdout",
            type=float,
            default=0.05,
            help="Share of the selected advertisers held out without a task, to measure the"
            " campaign's incremental effect (default 0.05; 0 for none).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Preview; write nothing.")

    def handle(self, *args: object, **options: object) -> None:
        if options["top"] is not None and options["top"] < 1:
            raise CommandError("--top must be at least 1.")
        if not 0 <= options["holdout"] < 1:
            raise CommandError(f"--holdout must be in [0, 1), got {options['holdout']}.")
        scenarios = self._scenarios(options["scenario"])
        version = self._version(options["model_version"])
        try:
            with transaction.atomic():
                campaign, result = self._run(options, scenarios, version)
        except (ValidationError, ProductionError, NoModelVersion) as exc:
            raise CommandError(f"{exc} Nothing was stored.") from exc
        verb = "would produce" if result.dry_run else "produced"
        label = "Dry run (nothing stored)" if result.dry_run else f"Campaign {campaign.pk}"
        self.stdout.write(
            f"{label} '{campaign.name}' (model version {result.model_version_id}, "
            f"predictions as of {result.as_of}): {verb} {result.produced} tasks of "
            f"{result.selected} selected; budget reserved {result.budget_reserved} of "
            f"{campaign.budget} ({result.skipped_budget} skipped for budget)."
            + (f" {result.held_out} held out without a task." if result.held_out else "")
        )
        for template, count in sorted(result.by_template.items()):
            self.stdout.write(f"  {template}: {count}")

    def _run(
        self, options: dict, scenarios: list[Scenario], version: ModelVersion | None
    ) -> tuple[Campaign, ProductionResult]:
        """Create and produce inside the caller's transaction; a dry run rolls it back."""
        campaign = campaign_create(
            name=options["name"],
            budget=_money(options["budget"]),
            reward_cap=_money(options["reward_cap"]),
            templates=templates_default_ensure(),
            model_kind="" if version else options["kind"],
            model_version=version,
            policy=Campaign.Policy.BOTTOM_N if options["top"] else Campaign.Policy.THRESHOLD,
            top_n=options["top"],
            threshold=_money(options["threshold"]) if options["threshold"] else None,
            scenarios=scenarios,
            cooldown_days=options["cooldown_days"],
            holdout_share=options["holdout"],
        )
        result = campaign_produce(campaign=campaign, dry_run=options["dry_run"])
        campaign.refresh_from_db()
        if result.dry_run:
            transaction.set_rollback(True)
        return campaign, result

    def _scenarios(self, codes: list[str]) -> list[Scenario]:
        found = {s.code: s for s in Scenario.objects.filter(code__in=codes)}
        missing = [c for c in codes if c not in found]
        if missing:
            known = ", ".join(Scenario.objects.values_list("code", flat=True)) or "none yet"
            raise CommandError(f"Unknown scenario(s) {missing}; known: {known}.")
        return [found[c] for c in codes]

    def _version(self, pk: int | None) -> ModelVersion | None:
        if pk is None:
            return None
        version = ModelVersion.objects.filter(pk=pk).first()
        if version is None:
            raise CommandError(f"No model version {pk}; see the admin's model versions.")
        return version
