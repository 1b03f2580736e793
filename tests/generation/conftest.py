"""Fixtures for generation tests: the generation service alone, with the offline model or the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.messages_api import FakeMessagesApi
from tests.support.services import Services, claude_settings, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """The generation service (and its catalog service) with the offline model, blobs under tmp_path/blobs."""
    async with running_services(test_settings(database_url, tmp_path), batch=False) as running:
        yield running


@pytest.fixture
async def claude(database_url: str, tmp_path: Path, fake_api: FakeMessagesApi) -> AsyncIterator[Services]:
    """The generation service calling the local Messages API through the real anthropic SDK."""
    settings = test_settings(database_url, tmp_path, **claude_settings(fake_api.base_url))
    async with running_services(settings, batch=False) as running:
        yield running
