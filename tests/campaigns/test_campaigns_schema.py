"""Property-based run of the push-message API against its own OpenAPI schema (schemathesis,
over HTTP against a live gunicorn server on loopback, with production settings, on the test
database): no input gives a 5xx, and every response matches the documented status codes,
content types and shapes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from rest_framework.exceptions import ValidationError
from schemathesis.specs.openapi.checks import positive_data_acceptance

from campaigns.api import IDEMPOTENCY_KEY_PATTERN, occurred_at_check
from campaigns.models import ApiScope
from campaigns.services import api_key_create

# This app's operations; the other apps' endpoints have their own tests.
OUR_PATHS = r"^/api/v1/(messages|advertisers/)"


# The server sees only committed rows: every test's data is committed, then flushed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def live_api(django_db_setup: None, gunicorn_servers) -> Iterator[str]:
    # A rate limit far above what the run sends: 429s would hide the answers under test.
    with gunicorn_servers(1, {"API_KEY_RATE": "1000000/min"}) as urls:
        yield urls[0]


@pytest.fixture
def all_scopes_key(db: None) -> str:
    return api_key_create(name="schemathesis", scopes=[ApiScope.PUSH, ApiScope.OPS])[1]


def _served_schema() -> dict:
    """The schema exactly as the app serves it (the view reads only code, no database)."""
    return Client().get("/api/schema/?format=json", HTTP_HOST="127.0.0.1").json()


# Cases are drawn from the served schema at collection time; each is sent over HTTP to the
# live server (base_url), not through the WSGI app.
schema = schemathesis.openapi.from_dict(_served_schema()).include(path_regex=OUR_PATHS)


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_api_honours_its_schema(case, produced, all_scopes_key: str, live_api: str) -> None:
    _fresh_idempotency_keys(case)
    # An event's occurred_at must lie in a window relative to now, which a schema cannot say:
    # a generated time outside it is a documented 400, not a valid request refused.
    excluded = [positive_data_acceptance] if _occurred_outside_window(case.body) else []
    case.call_and_validate(
        base_url=live_api,
        headers={"Authorization": f"Api-Key {all_scopes_key}"},
        excluded_checks=excluded,
        timeout=30,
    )


def _fresh_idempotency_keys(case) -> None:
    """Valid keys made unique: hypothesis reuses values across cases, and a key reused with
    another request is a correct 422, not the answer a fresh valid request should get."""
    headers = case.headers or {}
    if _valid_key(headers.get("Idempotency-Key")):
        headers["Idempotency-Key"] = uuid.uuid4().hex
    events = case.body.get("events") if isinstance(case.body, dict) else None
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and _valid_key(event.get("idempotency_key")):
            event["idempotency_key"] = uuid.uuid4().hex


def _valid_key(key: object) -> bool:
    return isinstance(key, str) and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is not None


def _occurred_outside_window(body: object) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("occurred_at"), str):
        return False  # in a batch the window is one event's 400 result, not the request's
    try:
        at = datetime.fromisoformat(body["occurred_at"])
        occurred_at_check(at if at.tzinfo else at.replace(tzinfo=UTC))
    except (ValueError, OverflowError, ValidationError):
        return True
    return False
