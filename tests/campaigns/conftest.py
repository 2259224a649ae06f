"""A small world for campaign tests: two scenarios, six advertisers active in search, an active
M2M version whose predictions rank them A000 (least active) to A005 (most), and the default
templates; and real gunicorn servers on loopback for the tests that need the API served as in
production (several processes, real HTTP)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.db import connection
from rest_framework.test import APIClient

from advertisers.models import Advertiser, DailyStat, Scenario
from campaigns.models import ApiScope, Campaign, IncentiveTask, TaskTemplate
from campaigns.services import (
    api_key_create,
    campaign_create,
    campaign_produce,
    templates_default_ensure,
)
from predictor.models import ModelVersion, Prediction

AS_OF = date(2024, 3, 31)


@dataclass
class World:
    search: Scenario
    display: Scenario
    advertisers: list[Advertiser]
    version: ModelVersion
    templates: list[TaskTemplate]


def _advertiser(i: int) -> Advertiser:
    return Advertiser.objects.create(
        advertiser_id=f"A{i:03d}",
        name=f"Shop {i}",
        registered_on=date(2021, 1, 1),
        business_scale=2,
        main_category="food",
        star_level=3,
    )


@pytest.fixture
def world(db: None) -> World:
    search = Scenario.objects.create(
        code="search", name="Sponsored search", kind="search", launched_on=date(2020, 1, 1)
    )
    display = Scenario.objects.create(
        code="display", name="Display", kind="display", launched_on=date(2020, 1, 1)
    )
    advertisers = [_advertiser(i) for i in range(6)]
    DailyStat.objects.bulk_create(
        DailyStat(advertiser=a, scenario=search, date=AS_OF - timedelta(days=3), expenditure=10)
        for a in advertisers
    )
    version = ModelVersion.objects.create(kind="m2m", status=ModelVersion.Status.ACTIVE)
    Prediction.objects.bulk_create(
        Prediction(
            model_version=version,
            advertiser=a,
            scenario=scenario,
            as_of=AS_OF,
            clicks=10.0 * i,
            expenditure=100.0 * i if scenario == search else 0.0,
            active_days=1.0 * i if scenario == search else 0.25,
            impressions=1000.0,
            gmv=50.0,
        )
        for i, a in enumerate(advertisers)
        for scenario in (search, display)
    )
    return World(search, display, advertisers, version, templates_default_ensure())


@pytest.fixture
def make_campaign(world: World) -> Callable[..., Campaign]:
    def make(**overrides: object) -> Campaign:
        fields: dict = {
            "name": "Win back",
            "budget": Decimal("1000"),
            "reward_cap": Decimal("100"),
            "templates": world.templates,
            "model_kind": "m2m",
            "top_n": 10,
            # Most tests count tasks; tests/campaigns/test_campaigns_targeting.py covers holdouts.
            "holdout_share": 0.0,
        }
        fields.update(overrides)
        return campaign_create(**fields)

    return make


@pytest.fixture
def produced(make_campaign: Callable[..., Campaign]) -> Campaign:
    """A campaign whose production gave all six advertisers a task."""
    campaign = make_campaign()
    campaign_produce(campaign=campaign)
    campaign.refresh_from_db()
    assert IncentiveTask.objects.filter(campaign=campaign).count() == 6
    return campaign


@dataclass
class Keys:
    push: str
    ops: str
    none: str


@pytest.fixture
def keys(db: None) -> Keys:
    return Keys(
        push=api_key_create(name="pusher", scopes=[ApiScope.PUSH])[1],
        ops=api_key_create(name="ops", scopes=[ApiScope.OPS])[1],
        none=api_key_create(name="scopeless", scopes=[])[1],
    )


@pytest.fixture
def client_for() -> Callable[[str | None], APIClient]:
    def make(secret: str | None) -> APIClient:
        client = APIClient()
        if secret is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
        return client

    return make


# --- gunicorn on loopback ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
Servers = Callable[[int, dict[str, str]], AbstractContextManager[list[str]]]


@pytest.fixture(scope="session")
def gunicorn_servers() -> Servers:
    """`gunicorn_servers(count, extra_env)`: a context manager yielding the base URLs of `count`
    servers (one worker process each) with production settings on the test database."""
    return _gunicorn_servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _gunicorn_servers(count: int, extra_env: dict[str, str]) -> Iterator[list[str]]:
    """`count` gunicorn servers (one worker process each) with production settings on the test
    database; yields their base URLs and stops them on exit."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "CELERY_BROKER_URL")}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        DB_CONN_MAX_AGE="0",
        SECRET_KEY="p" * 50,
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "platform")]),
    )
    env.update(extra_env)
    ports = [_free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "incentive_platform.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            _wait_until_up(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except requests.RequestException:  # not listening, or still loading Django
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn at {url} did not come up in 60 s")
