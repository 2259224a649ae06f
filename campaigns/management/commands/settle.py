"""Run settlement once: complete tasks that reached their target, expire overdue ones.

A campaign whose books do not add up is reported on stderr and skipped; the others are
settled, and the command then exits with status 1."""

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
        for skipped in result.skipped:
            self.stderr.write(skipped.line())
        if result.skipped:
            raise CommandError(
                f"{len(result.skipped)} campaign(s) skipped, the others settled; fix their "
                "books and run settle again."
            )
