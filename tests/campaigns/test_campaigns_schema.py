"""Property-based run of the push-message API against its own OpenAPI schema (schemathesis,
in-process through the WSGI app): no input gives a 5xx, and every response matches the
documented status codes, content types and shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from campaigns.models import ApiScope
from campaigns.services import api_key_create

# This app's operations; the other apps' endpoints have their own tests.
OUR_PATHS = r"^/api/v1/(messages|advertisers/)"


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    # As Django's test client does: a request must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def all_scopes_key(db: None) -> str:
    return api_key_create(name="schemathesis", scopes=[ApiScope.PUSH, ApiScope.OPS])[1]


# Loading the schema needs no database: the schema view reads only code.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application()).include(
    path_regex=OUR_PATHS
)


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
def test_the_api_honours_its_schema(case, produced, all_scopes_key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Api-Key {all_scopes_key}"})
