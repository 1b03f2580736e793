"""docker-compose.yml and the Dockerfile: valid, wired to real settings, health-checked through gRPC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from convgen.settings import environment_variable_names
from tests.support.checkout import ROOT

SETTINGS = set(environment_variable_names())
CONVGEN_SERVICES = ("migrate", "generation", "batch")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_docker_compose_config_validates() -> None:
    env = {**os.environ, "CONVGEN_AUTH_TOKEN": "test-token"}
    result = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "CONVGEN_AUTH_TOKEN"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0
    assert "set CONVGEN_AUTH_TOKEN" in missing.stderr


def test_every_convgen_environment_variable_is_a_setting(compose: dict[str, Any]) -> None:
    for name in CONVGEN_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = sorted(set(environment) - SETTINGS)
        assert unknown == [], f"{name} sets variables that no setting reads: {unknown}"


def test_dockerfile_environment_variables_are_settings() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    names = set(re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]+)=", dockerfile, flags=re.MULTILINE))
    names -= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
    assert names == {"LISTEN_HOST", "CONVGEN_DATA_DIR"}
    assert names <= SETTINGS


def test_the_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "minio-buckets", "migrate", "generation", "batch"} <= set(services)
    assert services["batch"]["deploy"]["replicas"] == 2
    assert services["batch"]["environment"]["GENERATION_TARGET"].startswith("dns:///generation:")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["generation"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["batch"]["depends_on"]["generation"]["condition"] == "service_healthy"
    for name in ("generation", "batch"):
        probe = services[name]["healthcheck"]["test"]
        assert probe[:3] == ["CMD", "convgen", "health"], "health checks go through grpc.health.v1"
    shared = services["generation"]["environment"]
    assert shared["BLOB_STORE"] == "s3"
    assert shared["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert shared["DATABASE_URL"].startswith("postgresql://")
