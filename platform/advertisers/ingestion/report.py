"""What a load did: rows inserted and updated per file, and the implausible values it allowed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableCounts:
    inserted: int = 0
    updated: int = 0


@dataclass(frozen=True)
class IngestReport:
    scenarios: TableCounts | None
    advertisers: TableCounts | None
    daily_stats: TableCounts | None
    seconds: float
    # `file:line: column: reason` of the implausible values loaded anyway (allow_implausible).
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: rows inserted and updated per file and the elapsed time."""
        parts = [
            f"{label} {counts.inserted:,} inserted, {counts.updated:,} updated"
            for label, counts in (
                ("scenarios", self.scenarios),
                ("advertisers", self.advertisers),
                ("daily stats", self.daily_stats),
            )
            if counts is not None
        ]
        return f"Loaded in {self.seconds:.1f} s: {'; '.join(parts)}."
