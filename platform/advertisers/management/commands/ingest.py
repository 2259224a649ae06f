"""`manage.py ingest DIR` (or --scenarios / --advertisers / --stats FILE): load contract files.

All or nothing: on any problem it prints every problem line (`file:line: column: reason`, the
first 50 and a count of the rest), stores nothing and exits with status 1.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from advertisers.ingestion import IngestError, contract_files, ingest_files


class Command(BaseCommand):
    help = (
        "Load scenarios, advertisers and daily stats (CSV or Parquet, DESIGN section 3) from a "
        "directory or named files. Nothing is stored if any row is bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "directory",
            nargs="?",
            help="folder holding scenarios, advertisers and/or daily_stats (.csv or .parquet)",
        )
        parser.add_argument("--scenarios", type=Path, help="scenarios file (overrides DIR's)")
        parser.add_argument("--advertisers", type=Path, help="advertisers file (overrides DIR's)")
        parser.add_argument("--stats", type=Path, help="daily stats file (overrides DIR's)")
        parser.add_argument(
            "--ignore-unknown-columns",
            action="store_true",
            help="skip columns the contract does not define instead of rejecting the file",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, **options) -> None:
        try:
            files = contract_files(options["directory"]) if options["directory"] else {}
            for kind in ("scenarios", "advertisers", "stats"):
                if options[kind] is not None:
                    files[kind] = options[kind]
            if not files:
                raise CommandError(
                    "Nothing to load: give DIR or --scenarios/--advertisers/--stats."
                )
            report = ingest_files(
                **files,
                ignore_unknown_columns=options["ignore_unknown_columns"],
                progress=not options["no_progress"],
            )
        except IngestError as error:
            for line in error.lines():
                self.stderr.write(line)
            raise CommandError(f"Rejected: {error}. Fix the files and run again.") from error
        self.stdout.write(self.style.SUCCESS(report.summary()))
