"""Run settlement once: complete tasks that reached their target, expire overdue ones."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.services import tasks_settle


class Command(BaseCommand):
    help = "Settle incentive tasks with the ingested data (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--through", help="Last data day to count (YYYY-MM-DD; default: the latest ingested)."
        )

    def handle(self, *args: object, **options: object) -> None:
        through = None
        if options["through"]:
            try:
                through = date.fromisoformat(options["through"])
            except ValueError as exc:
                raise CommandError(f"--through {options['through']!r}: use YYYY-MM-DD.") from exc
        result = tasks_settle(through=through)
        self.stdout.write(
            f"Settled through {result.through or 'no data yet'}: {result.open_tasks} open tasks "
            f"checked, {result.completed} completed (paid {result.settled_amount}), "
            f"{result.expired} expired (released {result.released_amount})."
        )
