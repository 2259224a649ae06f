"""Revocation and rate limits hold across server processes: two gunicorn servers on loopback
share the Redis cache, as production's workers do."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
from django.test import override_settings

from campaigns.models import ApiScope
from campaigns.services import api_key_create, api_key_revoke

FEED = "/api/v1/messages"
RATE = 8  # requests per minute per key, over both servers together

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


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
def servers(
    transactional_db: None, cache_env: dict[str, str], gunicorn_servers
) -> Iterator[list[str]]:
    """Two gunicorn servers (one worker process each) on the test database."""
    with gunicorn_servers(2, {**cache_env, "API_KEY_RATE": f"{RATE}/min"}) as urls:
        yield urls


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
