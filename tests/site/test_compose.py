"""docker-compose.yml describes the production stack of DESIGN section 6."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def command_of(service: dict) -> str:
    return " ".join(service["command"])


def test_it_has_every_service(services):
    assert set(services) >= {"db", "redis", "migrate", "web", "worker", "worker-gpu", "beat"}


def test_it_runs_postgres_16_and_redis_with_healthchecks(services):
    assert services["db"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]


def test_it_migrates_once_before_the_app_starts(services):
    assert "migrate" in command_of(services["migrate"])
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "worker-gpu", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["db"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_it_serves_web_with_gunicorn(services):
    assert command_of(services["web"]).startswith("gunicorn incentive_platform.wsgi")


def test_it_splits_workers_by_queue(services):
    assert "-Q default" in command_of(services["worker"])
    gpu = command_of(services["worker-gpu"])
    assert "-Q gpu" in gpu
    assert "--concurrency 1" in gpu
    assert "--prefetch-multiplier 1" in gpu


def test_it_reserves_a_gpu_for_the_gpu_worker(services):
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]


def test_it_runs_the_beat_scheduler(services):
    assert command_of(services["beat"]).endswith("beat --loglevel INFO")


def test_it_checks_the_web_service_through_healthz(services):
    check = services["web"]["healthcheck"]
    assert "http://localhost:8000/healthz" in " ".join(check["test"])
    assert check["test"][0] == "CMD"
    assert "localhost" in services["web"]["environment"]["ALLOWED_HOSTS"].split(",")
