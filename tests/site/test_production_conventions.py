"""Production conventions: JSON logs with LOG_FORMAT=json, an optional Sentry DSN, and static
files served by the app itself with DEBUG off (whitenoise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings
from django.test import Client


def _python(code: str, **overrides: str) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "SENTRY_DSN", "DATABASE_URL")
    }
    env.update(DJANGO_SETTINGS_MODULE="incentive_platform.settings", **overrides)
    setup = "import django, logging; django.setup(); "
    return subprocess.run(
        [sys.executable, "-c", setup + code], capture_output=True, text=True, env=env, timeout=60
    )


LOG = (
    "log = logging.getLogger('campaigns.test')\n"
    "log.warning('paused %s', 7, extra={'campaign': 7})\n"
    "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')"
)


def test_it_writes_one_json_object_per_log_line_with_log_format_json() -> None:
    result = _python(LOG, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("WARNING", "campaigns.test", "paused 7"),
        ("ERROR", "campaigns.test", "failed"),
    ]
    assert lines[0]["campaign"] == 7
    assert lines[1]["exc_info"].splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert lines[0]["time"].endswith("+00:00")


def test_it_writes_plain_lines_by_default_and_refuses_an_unknown_format() -> None:
    plain = _python(LOG)
    assert " WARNING campaigns.test: paused 7" in plain.stderr.splitlines()[0]
    unknown = _python("", LOG_FORMAT="xml")
    assert unknown.returncode != 0
    assert "LOG_FORMAT='xml': use plain or json." in unknown.stderr


def test_it_reports_to_sentry_only_when_a_dsn_is_set() -> None:
    code = "import sentry_sdk; c = sentry_sdk.get_client(); print(c.is_active(), c.dsn)"
    dsn = "https://key@sentry.example.invalid/42"
    assert _python(code, SENTRY_DSN=dsn).stdout.split() == ["True", dsn]
    assert _python(code).stdout.split() == ["False", "None"]


def test_it_serves_static_files_with_debug_off(client: Client) -> None:
    assert settings.DEBUG is False  # as pytest-django runs the app
    for path in (
        "admin/css/base.css",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        response = client.get(f"/{settings.STATIC_URL.lstrip('/')}{path}")
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content)
    assert client.get("/static/admin/css/no-such-file.css").status_code == 404
