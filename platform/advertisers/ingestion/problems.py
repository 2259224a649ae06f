"""Problems found in the files: `file:line: column: reason`, the first PROBLEM_LIMIT worded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBLEM_LIMIT = 50


class IngestError(Exception):
    """A load was rejected and nothing was stored.

    `problems` are `file:line: column: reason` lines (at most PROBLEM_LIMIT), `more` counts the
    problems that were found but not listed, `implausible` how many of all were implausible
    values (which a load allowing them would have taken).
    """

    def __init__(self, problems: list[str], more: int = 0, implausible: int = 0) -> None:
        self.problems = problems
        self.more = more
        self.implausible = implausible
        total = len(problems) + more
        super().__init__(f"{total} problem{'s' if total != 1 else ''}; nothing was stored")

    def lines(self) -> list[str]:
        """Every problem line, and a last line counting the unlisted ones."""
        return _with_tail(self.problems, self.more)

    def implausible_hint(self, how: str) -> str:
        """ "; 2 are implausible values: if they are right, {how}", or "" when none is."""
        if not self.implausible:
            return ""
        if self.implausible == 1:
            return f"; 1 is an implausible value: if it is right, {how}"
        return f"; {self.implausible} are implausible values: if they are right, {how}"


def _with_tail(listed: list[str], more: int) -> list[str]:
    return [*listed, f"... and {more} more problems"] if more else list(listed)


@dataclass(frozen=True)
class Source:
    path: Path
    order: int  # position in the load, so problems list file by file

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() == ".parquet"


class ProblemLog:
    """Counts every problem and keeps the first `limit` worded, in file, line, column order."""

    def __init__(self, limit: int = PROBLEM_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self.implausible = 0
        self._kept: list[tuple[int, int, int, str]] = []

    @property
    def clean(self) -> bool:
        return self.total == 0

    def add(self, source: Source, line: int, column: str, reason: str, order: int = -1) -> None:
        self.add_many(source, np.array([line]), column, lambda _: reason, order)

    def add_implausible(
        self,
        source: Source,
        lines: np.ndarray,
        column: str,
        reason_of: Callable[[int], str],
        order: int = 0,
    ) -> None:
        """Record problems of plausibility (counted apart: a load may allow them)."""
        self.implausible += len(lines)
        self.add_many(source, lines, column, reason_of, order)

    def add_many(
        self,
        source: Source,
        lines: np.ndarray,
        column: str,
        reason_of: Callable[[int], str],
        order: int = 0,
    ) -> None:
        """Record problems at `lines`; `reason_of(i)` words the i-th, only if it is listed."""
        self.total += len(lines)
        first = np.argsort(lines, kind="stable")[: self.limit]
        fresh = [
            (
                source.order,
                int(lines[i]),
                order,
                f"{source.name}:{lines[i]}: {column}: {reason_of(i)}",
            )
            for i in first
        ]
        self._kept = sorted(self._kept + fresh)[: self.limit]

    def lines(self) -> list[str]:
        """The worded problems, and a last line counting the others."""
        return _with_tail(self._listed(), self.total - len(self._kept))

    def _listed(self) -> list[str]:
        return [text for *_, text in self._kept]

    def raise_if_any(self) -> None:
        if self.total:
            more = self.total - len(self._kept)
            raise IngestError(self._listed(), more, self.implausible)
