"""Step timings, logged at DEBUG (bench/ingest.py prints them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


def log_since(label: str, started: float) -> None:
    """Log how long a step took (DEBUG; bench/ingest.py shows them)."""
    logger.debug("%-48s %6.2f s", label, time.perf_counter() - started)


@contextmanager
def phase(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    log_since(label, started)
