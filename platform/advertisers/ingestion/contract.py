"""The contract's three files: their columns, keys and the rule of each column."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db import models

from advertisers.ingestion.plausibility import NotAfter, NotBeforeStart, NotMore, RowCheck
from advertisers.ingestion.rules import (
    Choice,
    CodeMap,
    Count,
    IsoDate,
    Known,
    Money,
    Number,
    Rule,
    Text,
)
from advertisers.models import Advertiser, DailyStat, Scenario


@dataclass(frozen=True, eq=False)
class FileSpec:
    label: str
    key: tuple[str, ...]
    rules: dict[str, Rule]
    extra_prefix: str = ""  # optional columns with this prefix use extra_rule
    extra_rule: Rule | None = None
    checks: tuple[RowCheck, ...] = ()  # plausibility, across columns and files

    def allows(self, column: str) -> bool:
        return column in self.rules or bool(
            self.extra_prefix and column.startswith(self.extra_prefix)
        )

    def rule(self, column: str) -> Rule:
        return self.rules.get(column) or self.extra_rule  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Maps:
    scenarios: CodeMap
    advertisers: CodeMap


def _max_length(model: type[models.Model], name: str) -> int:
    return model._meta.get_field(name).max_length  # type: ignore[union-attr, return-value]


def scenarios_spec(load_date: date) -> FileSpec:
    return FileSpec(
        label="scenarios",
        key=("code",),
        rules={
            "code": Text(
                _max_length(Scenario, "code"),
                r"^[-a-zA-Z0-9_]+$",
                "is not a code; use letters, digits, - and _",
            ),
            "name": Text(_max_length(Scenario, "name")),
            "kind": Choice(tuple(Scenario.Kind.values)),
            "launched_on": IsoDate(),
        },
        extra_prefix="attr_",
        extra_rule=Number(),
        checks=(NotAfter("launched_on", load_date, "a scenario cannot launch in the future"),),
    )


def advertisers_spec(load_date: date) -> FileSpec:
    return FileSpec(
        label="advertisers",
        key=("advertiser_id",),
        rules={
            "advertiser_id": Text(_max_length(Advertiser, "advertiser_id")),
            "name": Text(_max_length(Advertiser, "name")),
            "registered_on": IsoDate(),
            "business_scale": Count(1, 5),
            "main_category": Text(_max_length(Advertiser, "main_category")),
            "star_level": Count(0, 5),
        },
        checks=(
            NotAfter("registered_on", load_date, "an advertiser cannot register in the future"),
        ),
    )


def _counter_rule(name: str) -> Rule:
    field = DailyStat._meta.get_field(name)
    if isinstance(field, models.DecimalField):
        return Money(field.max_digits - field.decimal_places)
    if isinstance(field, models.BigIntegerField):
        return Count(0, 10**18 - 1)
    return Count(0, 2**31 - 1)


def stats_spec(maps: Maps, load_date: date) -> FileSpec:
    return FileSpec(
        label="daily stats",
        key=("advertiser_id", "scenario", "date"),
        rules={
            "advertiser_id": Known(maps.advertisers, "advertiser", "the advertisers file"),
            "scenario": Known(maps.scenarios, "scenario", "the scenarios file"),
            "date": IsoDate(),
            **{name: _counter_rule(name) for name in DailyStat.COUNTERS},
        },
        checks=(
            NotMore("clicks", "impressions"),
            NotAfter("date", load_date, "no day of stats can be in the future"),
            NotBeforeStart("date", "scenario", maps.scenarios, "scenario", "was launched"),
            NotBeforeStart("date", "advertiser_id", maps.advertisers, "advertiser", "registered"),
        ),
    )
