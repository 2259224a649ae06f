"""Shared test set-up: which real services are here, and fixtures every area uses.

The suite runs against the real PostgreSQL and Redis (`make test` points DATABASE_URL and
TEST_REDIS_URL at the local servers). Outside CI a machine without them may fall back to
SQLite; tests marked `postgres` or `redis` are then skipped with the reason printed. With
CI=true a missing service stops the run instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _tcp_reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def redis_available() -> bool:
    return _tcp_reachable(TEST_REDIS_URL, 6379)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing: dict[str, str] = {}
    if not on_postgres():
        missing["postgres"] = "DATABASE_URL is not PostgreSQL"
    if not redis_available():
        missing["redis"] = f"no Redis at {TEST_REDIS_URL}"
    if IN_CI and missing:
        raise pytest.UsageError(f"CI=true and a required service is missing: {missing}")
    for item in items:
        for marker, reason in missing.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def redis_url() -> str:
    return TEST_REDIS_URL


# --- a real browser --------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip() -> Any:
    """Headless Chromium through its driver's explicit path (no driver manager, no network)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (
            f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        )
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,2400"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _browser_or_skip()
    yield driver
    driver.quit()


@pytest.fixture
def staff_browser(browser: Any, live_server: Any, django_user_model: Any) -> Any:
    """The browser, logged in to the admin of `live_server` as a superuser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_user(
        "analyst", password="pw-analyst", is_staff=True, is_superuser=True
    )
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("analyst")
    browser.find_element(By.NAME, "password").send_keys("pw-analyst")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login's own navigation must end first, or it can replace the page asked for next.
    WebDriverWait(browser, 10).until(lambda b: "Site administration" in b.title)
    return browser
