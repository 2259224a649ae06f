"""`manage.py simulate`: write a synthetic world's contract files and its latent state.

Writes scenarios.csv, advertisers.csv and daily_stats.csv (ready for `manage.py ingest`) and
world.npz, which `advertisers.simulator.World.load` continues later. The world itself is
described in the `advertisers.simulator` module docstring.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from advertisers.simulator import SimulationError, simulate


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--end-date {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-10-31."
        ) from exc


class Command(BaseCommand):
    help = (
        "Simulate advertisers in five scenarios and write scenarios.csv, advertisers.csv, "
        "daily_stats.csv and world.npz (the latent state, for World.load) into --out."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--advertisers", type=int, default=10_000, help="How many (>= 1); the default world."
        )
        parser.add_argument("--days", type=int, default=180, help="Days to simulate (>= 14).")
        parser.add_argument("--seed", type=int, default=1, help="Same seed, same files.")
        parser.add_argument("--out", type=Path, required=True, help="Output directory.")
        parser.add_argument(
            "--end-date",
            type=_iso_date,
            default=None,
            help="Last simulated day, YYYY-MM-DD (default 2026-10-31, so output is reproducible).",
        )

    def handle(self, *args: object, **options: object) -> None:
        out = Path(options["out"])
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is a file; pass a directory (it is created if new).")
        started = time.perf_counter()
        try:
            world = simulate(
                advertisers=options["advertisers"],
                days=options["days"],
                seed=options["seed"],
                end_date=options["end_date"],
            )
        except SimulationError as exc:
            raise CommandError(f"simulate: {exc}") from exc
        paths = world.write(out)
        state = world.save(out / "world.npz")
        rows = {
            "scenarios": len(world.specs),
            "advertisers": world.n_advertisers,
            "daily_stats": world.daily_stats.num_rows,
        }
        for name, path in paths.items():
            self.stdout.write(f"wrote {path} ({rows[name]:,} rows)")
        self.stdout.write(f"saved the world state to {state}")
        self.stdout.write(
            self.style.SUCCESS(
                f"simulated {world.n_advertisers:,} advertisers x {options['days']} days "
                f"({world.start_date} to {world.end_date}, seed {options['seed']}) "
                f"in {time.perf_counter() - started:.1f} s"
            )
        )
        # The world's days may be past the real today, which ingest takes as the load date.
        self.stdout.write(f"load it with: manage.py ingest {out} --load-date {world.end_date}")
