"""The entry points: find the contract files, then check and load them in one transaction."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from advertisers.ingestion.checking import Scan, read_whole, scan_file
from advertisers.ingestion.contract import (
    FileSpec,
    Maps,
    advertisers_spec,
    scenarios_spec,
    stats_spec,
)
from advertisers.ingestion.generic_load import executemany_staging
from advertisers.ingestion.loading import Sink, stats_rows
from advertisers.ingestion.pg_bulk import bulk_sink, bulk_worthwhile
from advertisers.ingestion.pg_copy import pg_staging
from advertisers.ingestion.problems import IngestError, ProblemLog, Source
from advertisers.ingestion.reference_load import advertisers_upsert, scenarios_upsert
from advertisers.ingestion.report import IngestReport, TableCounts
from advertisers.ingestion.rules import CodeMap
from advertisers.ingestion.timing import phase
from advertisers.models import Advertiser, Scenario
from advertisers.services import WindowActivity, scenario_stats_refresh

FILE_KINDS = {"scenarios": "scenarios", "advertisers": "advertisers", "stats": "daily_stats"}
SUFFIXES = (".csv", ".parquet")

FileArg = str | os.PathLike[str] | None


def _stats_sink(source: Source, maps: Maps):
    if connection.vendor != "postgresql":
        return executemany_staging()
    return bulk_sink(maps, source.name) if bulk_worthwhile(source) else pg_staging()


def _stats_load(scan: Scan, maps: Maps, log: ProblemLog) -> Sink | None:
    """Stream checked blocks into the database; raise IngestError (inside the sink) on a problem.

    Returns the sink, which holds the counts, or None when there were problems before."""
    if not log.clean:
        for _ in scan.blocks:  # nothing will be stored: only check
            pass
        return None
    try:
        with _stats_sink(scan.source, maps) as sink:
            with phase(f"daily stats: read, check and send ({sink.strategy})"):
                for block in scan.blocks:
                    if log.clean:
                        sink.write(stats_rows(block.batch, maps))
            # Raising here aborts the COPY; the caller's transaction then rolls everything back.
            log.raise_if_any()
    except (DatabaseError, psycopg.Error) as error:
        # The checks should leave the database nothing to refuse; if it does, say so plainly.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise IngestError(
            [f"{scan.source.name}:0: -: the database refused the rows ({reason}); please report it"]
        ) from error
    return sink


def contract_files(directory: FileArg) -> dict[str, Path]:
    """The contract files found in a directory, keyed scenarios / advertisers / stats.

    Looks for scenarios, advertisers and daily_stats, each as .csv or .parquet.
    """
    folder = Path(directory or ".")
    if not folder.is_dir():
        raise IngestError([f"{folder}: not a directory"])
    found: dict[str, Path] = {}
    for kind, stem in FILE_KINDS.items():
        matches = [
            folder / f"{stem}{suffix}"
            for suffix in SUFFIXES
            if (folder / f"{stem}{suffix}").is_file()
        ]
        if len(matches) > 1:
            raise IngestError(
                [f"{folder}: both {stem}.csv and {stem}.parquet; keep one or name the file to load"]
            )
        if matches:
            found[kind] = matches[0]
    if not found:
        raise IngestError(
            [f"{folder}: no scenarios, advertisers or daily_stats file (.csv or .parquet) in it"]
        )
    return found


def _sources(paths: dict[str, FileArg]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    problems: list[str] = []
    for order, (kind, given) in enumerate(paths.items()):
        if given is None:
            continue
        path = Path(given)
        if path.suffix.lower() not in SUFFIXES:
            problems.append(f"{path.name}:0: -: unsupported file type; use .csv or .parquet")
        elif not path.is_file():
            problems.append(f"{path.name}:0: -: file not found ({path})")
        else:
            sources[kind] = Source(path, order)
    if problems:
        raise IngestError(problems)
    if not sources:
        raise IngestError(["nothing to load: give a scenarios, advertisers or daily stats file"])
    return sources


@dataclass(frozen=True, eq=False)
class _Load:
    """One load's options and problem logs."""

    log: ProblemLog
    doubts: ProblemLog  # implausible values: `log` itself unless the load allows them
    load_date: date
    ignore_unknown_columns: bool
    progress: bool

    def scan(self, source: Source, spec: FileSpec) -> Scan:
        return scan_file(
            source, spec, self.ignore_unknown_columns, self.log, self.progress, doubts=self.doubts
        )


def ingest_files(
    *,
    scenarios: FileArg = None,
    advertisers: FileArg = None,
    stats: FileArg = None,
    ignore_unknown_columns: bool = False,
    progress: bool = False,
    load_date: date | None = None,
    allow_implausible: bool = False,
) -> IngestReport:
    """Check and load contract files, all or nothing; raise IngestError listing every problem.

    Loading the same files again leaves the same rows (rows are keyed by scenario code,
    advertiser id, and advertiser + scenario + date). Scenario statistics are refreshed after.

    Implausible values (`plausibility`: a date after `load_date`, today by default; clicks
    above impressions; stats before their scenario's launch or their advertiser's registration)
    are problems like any other, unless `allow_implausible`: the rows are then loaded and the
    problems come back as the report's warnings.
    """
    started = time.perf_counter()
    sources = _sources({"scenarios": scenarios, "advertisers": advertisers, "stats": stats})
    log = ProblemLog()
    load = _Load(
        log=log,
        doubts=ProblemLog() if allow_implausible else log,
        load_date=load_date or timezone.localdate(),
        ignore_unknown_columns=ignore_unknown_columns,
        progress=progress,
    )
    counts: dict[str, TableCounts | None] = {}
    activity: WindowActivity | None = None
    with transaction.atomic():
        stored = Maps(_stored_scenarios(), _stored_advertisers())
        tables = {
            kind: read_whole(load.scan(sources[kind], spec))
            for kind, spec in (
                ("scenarios", scenarios_spec(load.load_date)),
                ("advertisers", advertisers_spec(load.load_date)),
            )
            if kind in sources
        }
        maps = _reference_load(tables, stored, log, counts)
        if "stats" in sources:
            scan = load.scan(sources["stats"], stats_spec(maps, load.load_date))
            sink = _stats_load(scan, maps, log)
            counts["stats"], activity = (sink.counts, sink.activity) if sink else (None, None)
        log.raise_if_any()
        with phase("scenario statistics"):
            scenario_stats_refresh(activity)
    return IngestReport(
        scenarios=counts.get("scenarios"),
        advertisers=counts.get("advertisers"),
        daily_stats=counts.get("stats"),
        seconds=time.perf_counter() - started,
        warnings=tuple(load.doubts.lines()) if allow_implausible else (),
    )


def _stored_scenarios() -> CodeMap:
    return CodeMap.stored(Scenario, "code", "launched_on")


def _stored_advertisers() -> CodeMap:
    return CodeMap.stored(Advertiser, "advertiser_id", "registered_on")


def _with_file_codes(stored: CodeMap, table: pa.Table | None, key: str, since: str) -> CodeMap:
    if table is None or key not in table.column_names:
        return stored
    return stored.with_codes(table.column(key), table.column(since))


def _reference_load(
    tables: dict[str, pa.Table], stored: Maps, log: ProblemLog, counts: dict
) -> Maps:
    """Upsert checked reference files; return the codes daily stats may use."""
    if not log.clean:
        # Nothing will be stored, but daily stats are still checked against these codes.
        return Maps(
            _with_file_codes(stored.scenarios, tables.get("scenarios"), "code", "launched_on"),
            _with_file_codes(
                stored.advertisers, tables.get("advertisers"), "advertiser_id", "registered_on"
            ),
        )
    scenarios, advertisers = stored.scenarios, stored.advertisers
    if "scenarios" in tables:
        counts["scenarios"] = scenarios_upsert(tables["scenarios"], stored.scenarios)
        scenarios = _stored_scenarios()
    if "advertisers" in tables:
        counts["advertisers"] = advertisers_upsert(tables["advertisers"], stored.advertisers)
        advertisers = _stored_advertisers()
    return Maps(scenarios, advertisers)
