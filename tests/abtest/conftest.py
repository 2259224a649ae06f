"""Fixtures for the A/B tests: advertisers, scenarios and daily stats built in plain code."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from advertisers.models import Advertiser, DailyStat, Scenario


@pytest.fixture
def scenario(db) -> Scenario:
    return Scenario.objects.create(
        code="search", name="Sponsored search", kind="search", launched_on=dt.date(2020, 1, 1)
    )


@pytest.fixture
def other_scenario(db) -> Scenario:
    return Scenario.objects.create(
        code="display", name="Display", kind="display", launched_on=dt.date(2021, 1, 1)
    )


def make_advertisers(n: int, *, prefix: str = "adv", **fields) -> list[Advertiser]:
    defaults = {
        "registered_on": dt.date(2022, 1, 1),
        "business_scale": 2,
        "main_category": "retail",
        "star_level": 1,
    }
    defaults.update(fields)
    Advertiser.objects.bulk_create(
        [Advertiser(advertiser_id=f"{prefix}{i:06d}", name=f"{prefix} {i}", **defaults)
         for i in range(n)]
    )  # fmt: skip
    return list(Advertiser.objects.filter(advertiser_id__startswith=prefix).order_by("pk"))


@pytest.fixture
def advertisers_factory(db):
    return make_advertisers


@pytest.fixture
def stat_factory(db):
    return stat


def stat(advertiser: Advertiser, scenario: Scenario, day: dt.date, spend: str, clicks: int = 0):
    return DailyStat(
        advertiser=advertiser,
        scenario=scenario,
        date=day,
        expenditure=Decimal(spend),
        clicks=clicks,
        impressions=clicks * 10,
    )


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    # Staff users are created per test; PBKDF2's deliberate slowness buys nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
