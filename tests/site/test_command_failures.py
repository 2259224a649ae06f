"""Command-line failures read as one line that says what to do: a database that was never
migrated or does not exist; and a SQLite database finds its model files without ARTIFACT_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DatabaseError

from incentive_platform.cli import database_not_ready

ROOT = Path(__file__).resolve().parents[2]
SETUP = (
    "import django; django.setup(); from django.conf import settings; print(settings.ARTIFACT_DIR)"
)


def _manage(*args: str, **overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ARTIFACT_DIR")}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def test_it_names_the_fix_in_one_line_when_the_database_is_not_migrated(tmp_path: Path) -> None:
    result = _manage("summary", DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not migrated" in lines[0]
    assert "run `python manage.py migrate` first" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_it_names_the_fix_in_one_line_when_the_database_does_not_exist() -> None:
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/incentive_no_such_database"
    result = _manage("summary", DATABASE_URL=url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'incentive_no_such_database' does not exist" in lines[0]
    assert "createdb incentive_no_such_database" in lines[0]


def test_it_puts_the_artifacts_of_a_sqlite_database_beside_it(tmp_path: Path) -> None:
    code = SETUP
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ARTIFACT_DIR")}
    env["DJANGO_SETTINGS_MODULE"] = "incentive_platform.settings"
    for url, expected in (
        (f"sqlite:///{tmp_path / 'demo' / 'demo.sqlite3'}", tmp_path / "demo" / "artifacts"),
        (None, ROOT / "var" / "artifacts"),
    ):
        run_env = env if url is None else {**env, "DATABASE_URL": url}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()) == expected.resolve()


def test_it_keeps_an_explicit_artifact_dir(tmp_path: Path) -> None:
    code = SETUP
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="incentive_platform.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'a.sqlite3'}",
        ARTIFACT_DIR=str(tmp_path / "elsewhere"),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert Path(result.stdout.strip()) == tmp_path / "elsewhere"


def test_it_leaves_a_real_error_of_a_migrated_database_to_its_traceback(db: None) -> None:
    assert database_not_ready(DatabaseError("deadlock detected")) is None
