"""`manage.py ingest DIR` (or --scenarios / --advertisers / --stats FILE): load contract files.

All or nothing: on any problem it prints every problem line (`file:line: column: reason`, the
first 50 and a count of the rest), stores nothing and exits with status 1. Implausible values
(a date after --load-date, clicks above impressions, stats before a launch or a registration)
are problems too, unless --allow-implausible: then they are loaded and printed as warnings.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from advertisers.ingestion import IngestError, IngestReport, contract_files, ingest_files


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--load-date {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-10-31."
        ) from exc


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
        parser.add_argument(
            "--load-date",
            type=_iso_date,
            help="the day of this load, YYYY-MM-DD (default today): no date may be after it",
        )
        parser.add_argument(
            "--allow-implausible",
            action="store_true",
            help="load implausible values (e.g. clicks above impressions) and print them as "
            "warnings instead of rejecting the file",
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
                load_date=options["load_date"],
                allow_implausible=options["allow_implausible"],
            )
        except IngestError as error:
            for line in error.lines():
                self.stderr.write(line)
            raise CommandError(f"Rejected: {error}. {_fix(error)}") from error
        self._warn(report)
        self.stdout.write(self.style.SUCCESS(report.summary()))

    def _warn(self, report: IngestReport) -> None:
        if not report.warnings:
            return
        self.stderr.write(self.style.WARNING("Loaded anyway (--allow-implausible):"))
        for line in report.warnings:
            self.stderr.write(line)


def _fix(error: IngestError) -> str:
    hint = error.implausible_hint("load with --allow-implausible (or give the right --load-date)")
    return f"Fix the files and run again{hint}."
