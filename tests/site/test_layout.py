"""The layout guards of DESIGN section 2: no package root may shadow another module."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = (REPO, REPO / "platform")
OUR_DISTRIBUTION = "incentive-platform"


def top_level_names(root: Path) -> set[str]:
    names = set()
    for entry in root.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
    return names


def installed_module_names() -> set[str]:
    names = set()
    for module, dists in importlib.metadata.packages_distributions().items():
        if any(d.lower() != OUR_DISTRIBUTION for d in dists):
            names.add(module)
    return names


def test_it_keeps_platform_a_source_root_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists()


@pytest.mark.parametrize("root", PACKAGE_ROOTS, ids=lambda p: p.name or "repo")
def test_it_has_no_module_that_shadows_stdlib_or_a_dependency(root: Path):
    taken = set(sys.stdlib_module_names) | installed_module_names()
    clashes = sorted(top_level_names(root) & taken)
    assert clashes == [], f"modules on package root {root.name!r} shadow others: {clashes}"


def test_it_imports_the_real_stdlib_platform_module():
    import platform

    assert hasattr(platform, "python_version")
    assert Path(platform.__file__).parent != REPO / "platform"


def run_from(cwd: Path, *args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_it_runs_manage_check_from_any_directory(where: str, tmp_path: Path):
    cwd = REPO if where == "repo" else tmp_path
    result = run_from(cwd, str(REPO / "manage.py"), "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_loads_the_celery_app_from_another_directory(tmp_path: Path):
    code = (
        "from incentive_platform import celery_app;"
        "print(sorted(q.name for q in celery_app.conf.task_queues))"
    )
    result = run_from(tmp_path, "-c", code, DJANGO_SETTINGS_MODULE="incentive_platform.settings")
    assert result.returncode == 0, result.stderr
    assert "['default', 'gpu']" in result.stdout
