"""Probes and outages: /healthz and /readyz, the API's JSON 503 and the commands' one line when
the database (or another backing service) cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError
from django.test import Client

from incentive_platform import health
from incentive_platform.outages import outage_of

REPO = Path(__file__).resolve().parents[2]
# Nothing listens on port 1: connecting is refused at once, as with a database that is down.
DOWN_DATABASE = "postgres://postgres@127.0.0.1:1/incentive"

REQUESTS = """
import json, django
django.setup()
from django.test import Client
client = Client(SERVER_NAME="127.0.0.1")
out = {}
for name, path in [("feed", "/api/v1/messages"), ("healthz", "/healthz"), ("readyz", "/readyz")]:
    r = client.get(path, HTTP_AUTHORIZATION="Api-Key ipk_x_y")
    out[name] = [r.status_code, r.get("Content-Type"), r.get("Retry-After"), r.content.decode()]
print(json.dumps(out))
"""


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="incentive_platform.settings", SECRET_KEY="s" * 50)
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def during_outage() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", REQUESTS],
        capture_output=True,
        text=True,
        env=_env(DATABASE_URL=DOWN_DATABASE),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_api_answers_a_json_503_with_retry_after_when_the_database_is_down(
    during_outage,
) -> None:
    status, content_type, retry_after, body = during_outage["feed"]
    assert (status, content_type) == (503, "application/json")
    assert int(retry_after) > 0
    assert "database" in json.loads(body)["detail"]
    assert "Traceback" not in body and "<html" not in body.lower()


def test_liveness_holds_and_readiness_fails_naming_the_database(during_outage) -> None:
    assert during_outage["healthz"][0] == 200
    status, _, retry_after, body = during_outage["readyz"]
    checks = json.loads(body)["checks"]
    assert (status, int(retry_after)) == (503, 30)
    assert checks["database"].startswith("unavailable")
    assert checks["cache"] == "ok"


@pytest.mark.parametrize("command", [["settle"], ["summary"], ["migrate", "--check"]])
def test_a_command_prints_one_line_and_exits_non_zero(command) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *command],
        capture_output=True,
        text=True,
        env=_env(DATABASE_URL=DOWN_DATABASE),
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{command[0]}: the database is unavailable")
    assert "DATABASE_URL" in lines[0]


def test_a_command_shows_the_traceback_when_asked() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "settle", "--traceback"],
        capture_output=True,
        text=True,
        env=_env(DATABASE_URL=DOWN_DATABASE),
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_readiness_is_ok_when_every_service_answers(db: None) -> None:
    response = Client(SERVER_NAME="127.0.0.1").get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_readiness_names_a_broker_that_is_down(db: None, settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    from incentive_platform.celery_app import app

    before, app.conf.broker_url = app.conf.broker_url, settings.CELERY_BROKER_URL
    try:
        response = Client(SERVER_NAME="127.0.0.1").get("/readyz")
    finally:
        app.conf.broker_url = before
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("unavailable")
    assert response.json()["checks"]["database"] == "ok"


def test_an_outage_is_found_behind_a_wrapping_error() -> None:
    try:
        try:
            raise OperationalError("connection refused\nIs the server running?")
        except OperationalError as exc:
            raise RuntimeError("settlement failed") from exc
    except RuntimeError as wrapped:
        outage = outage_of(wrapped)
    assert outage is not None
    assert (outage.service, outage.reason) == ("database", "connection refused")
    assert outage_of(ValueError("a bug")) is None


def test_the_probes_take_get_only() -> None:
    assert set(health.CHECKS) == {"database", "cache", "broker"}
    assert Client(SERVER_NAME="127.0.0.1").post("/healthz").status_code == 405
