"""Fixtures for client and CLI tests: the real services in-process and a ConvgenClient on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients import ConvgenClient
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Both services on OS-assigned ports, with the demo catalog loaded."""
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


def targets(services: Services) -> tuple[str, str]:
    """(generation target, batch target) of running services."""
    assert services.generation is not None
    assert services.batch is not None
    return f"127.0.0.1:{services.generation.port}", f"127.0.0.1:{services.batch.port}"


@pytest.fixture
async def client(services: Services) -> AsyncIterator[ConvgenClient]:
    """A client connected to both services."""
    generation, batch = targets(services)
    async with await ConvgenClient.connect(generation, batch) as connected:
        yield connected
