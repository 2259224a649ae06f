"""Revocation and rate limits hold across server processes: two gunicorn servers on loopback
share the Redis cache, as production's workers do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.test import override_settings

from campaigns.models import ApiScope
from campaigns.services import api_key_create, api_key_revoke

REPO = Path(__file__).resolve().parents[2]
FEED = "/api/v1/messages"
RATE = 8  # requests per minute per key, over both servers together

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cache_env(redis_url: str) -> dict[str, str]:
    # A fresh prefix: no counter or key of an earlier run is seen.
    return {"CACHE_URL": redis_url, "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}


@pytest.fixture
def shared_cache(cache_env: dict[str, str]) -> Iterator[None]:
    """This test process uses the servers' cache, so a revocation here reaches them."""
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": cache_env["CACHE_URL"],
            "KEY_PREFIX": cache_env["CACHE_KEY_PREFIX"],
        }
    }
    with override_settings(CACHES=caches):
        yield


@pytest.fixture
def servers(transactional_db: None, cache_env: dict[str, str]) -> Iterator[list[str]]:
    """Two gunicorn servers (one worker process each) on the test database."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "CELERY_BROKER_URL")}
    env.update(
        cache_env,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        DB_CONN_MAX_AGE="0",
        API_KEY_RATE=f"{RATE}/min",
        SECRET_KEY="p" * 50,
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "platform")]),
    )
    ports = [_free_port(), _free_port()]
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


def _getter(secret: str) -> Callable[[str], int]:
    headers = {"Authorization": f"Api-Key {secret}"}
    return lambda url: requests.get(f"{url}{FEED}", headers=headers, timeout=10).status_code


def test_a_revoked_key_is_refused_on_the_next_request_in_every_process(
    servers, shared_cache
) -> None:
    api_key, secret = api_key_create(name="soon revoked", scopes=[ApiScope.PUSH])
    get = _getter(secret)
    assert [get(url) for url in servers] == [200, 200]  # both processes have seen the key

    api_key_revoke(api_key=api_key)

    assert [get(url) for url in servers] == [401, 401]


def test_the_rate_limit_is_shared_by_the_processes(servers, shared_cache) -> None:
    limited = _getter(api_key_create(name="limited", scopes=[ApiScope.PUSH])[1])
    other = _getter(api_key_create(name="other", scopes=[ApiScope.PUSH])[1])

    statuses = [limited(servers[i % 2]) for i in range(RATE + 4)]

    # Per process each server would allow RATE requests, 2 x RATE in all.
    assert statuses.count(200) == RATE
    assert statuses[RATE:] == [429] * 4
    assert other(servers[1]) == 200  # another key keeps its own count
