"""Builds the model client the settings ask for: Claude, or the offline generator when there is no key."""

from __future__ import annotations

import logging

from convgen.errors import FailedPrecondition
from convgen.settings import Settings
from generation_service.model.offline import OfflineModelClient
from generation_service.model.port import ModelClient

logger = logging.getLogger(__name__)


def build_model_client(settings: Settings) -> ModelClient:
    """One model client per process."""
    if settings.uses_offline_model:
        logger.warning(
            "using the OFFLINE synthetic generator (model offline-synthetic): no ANTHROPIC_API_KEY is set; "
            "conversations are deterministic templates, not Claude output"
        )
        return OfflineModelClient()
    if settings.anthropic_api_key is None:
        raise FailedPrecondition("MODEL_CLIENT=anthropic needs ANTHROPIC_API_KEY")
    # The SDK takes seconds to import; processes on the offline model never load it.
    from generation_service.model.anthropic_client import build_anthropic_client  # noqa: PLC0415

    return build_anthropic_client(settings)
