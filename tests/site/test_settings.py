"""Settings come from the environment; production refuses to start without a secret."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"


def run_setup(**overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="incentive_platform.settings", **overrides)
    return subprocess.run(
        [sys.executable, "-c", SETUP], capture_output=True, text=True, env=env, timeout=60
    )


def test_it_refuses_to_start_without_secret_key_when_debug_is_off():
    result = run_setup(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_it_starts_with_debug_off_when_a_secret_is_given():
    result = run_setup(DEBUG="0", SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_it_reads_the_secret_from_a_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("y" * 50)
    result = run_setup(DEBUG="0", SECRET_KEY_FILE=str(secret_file))
    assert result.returncode == 0, result.stderr


def test_it_defaults_to_sqlite_and_eager_celery():
    code = (
        "import django; django.setup(); from django.conf import settings;"
        "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_TASK_ALWAYS_EAGER)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "incentive_platform.settings"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "True"]


def test_it_creates_the_folder_of_the_default_sqlite_database(tmp_path):
    var = tmp_path / "fresh" / "var"  # not there yet, as in a fresh checkout
    code = (
        "import django; django.setup(); from django.db import connection;"
        "connection.ensure_connection()"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="incentive_platform.settings", VAR_DIR=str(var))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (var / "db.sqlite3").exists()


def test_debug_is_off_when_the_variable_is_unset():
    result = run_setup(SECRET_KEY="z" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_it_refuses_to_start_without_secret_key_when_debug_is_unset():
    result = run_setup()
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_debug_1_turns_debug_on_with_a_throwaway_secret():
    result = run_setup(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_the_demo_runs_with_debug_on(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    for name in ("DEBUG", "DATABASE_URL", "CELERY_BROKER_URL", "ARTIFACT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    demo.embedded_environment(db_path=tmp_path / "demo.sqlite3", out=tmp_path)
    assert os.environ["DEBUG"] == "1"
    assert "CELERY_BROKER_URL" not in os.environ
    result = run_setup(DEBUG=os.environ["DEBUG"])
    assert (result.returncode, result.stdout.strip()) == (0, "True")
