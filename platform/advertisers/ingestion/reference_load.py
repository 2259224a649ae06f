"""Loading scenarios and advertisers: small reference tables, upserted by their code."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from advertisers.ingestion.report import TableCounts
from advertisers.ingestion.rules import CodeMap
from advertisers.models import Advertiser, Scenario


def _counts(codes: pa.ChunkedArray, stored: CodeMap) -> TableCounts:
    updated = int(stored.contains(codes).sum())
    return TableCounts(inserted=len(codes) - updated, updated=updated)


def scenarios_upsert(table: pa.Table, stored: CodeMap) -> TableCounts:
    attributes = [name for name in table.column_names if name.startswith("attr_")]
    rows = [
        Scenario(
            code=row["code"],
            name=row["name"],
            kind=row["kind"],
            launched_on=date.fromisoformat(row["launched_on"]),
            attributes={name: float(row[name]) for name in attributes},
        )
        for row in table.to_pylist()
    ]
    Scenario.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["code"],
        update_fields=["name", "kind", "launched_on", "attributes"],
    )
    return _counts(table.column("code"), stored)


def advertisers_upsert(table: pa.Table, stored: CodeMap) -> TableCounts:
    rows = [
        Advertiser(
            advertiser_id=row["advertiser_id"],
            name=row["name"],
            registered_on=date.fromisoformat(row["registered_on"]),
            business_scale=int(row["business_scale"]),
            main_category=row["main_category"],
            star_level=int(row["star_level"]),
        )
        for row in table.to_pylist()
    ]
    Advertiser.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["advertiser_id"],
        update_fields=["name", "registered_on", "business_scale", "main_category", "star_level"],
    )
    return _counts(table.column("advertiser_id"), stored)
