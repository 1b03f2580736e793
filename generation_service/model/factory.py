"""Builds the model client the settings ask for: Claude, or the offline generator when there is no key."""

from __future__ import annotations

import logging

import anthropic
import httpx2

from convgen.errors import FailedPrecondition
from convgen.settings import Settings
from generation_service.model.anthropic_client import AnthropicModelClient, RetryPolicy
from generation_service.model.offline import OfflineModelClient
from generation_service.model.pacing import RequestPacer
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
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        # convgen retries itself (classified, paced, with a shared cooldown); the SDK must not retry too.
        max_retries=0,
        timeout=httpx2.Timeout(settings.model_timeout_seconds, connect=10.0),
        http_client=anthropic.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(
                max_connections=settings.model_max_concurrency + 8,
                max_keepalive_connections=settings.model_max_concurrency + 8,
            ),
            timeout=httpx2.Timeout(settings.model_timeout_seconds, connect=10.0),
        ),
    )
    logger.info(
        "using Claude model %s at %s", settings.anthropic_model, settings.anthropic_base_url or "api.anthropic.com"
    )
    return AnthropicModelClient(
        client,
        model=settings.anthropic_model,
        retry=RetryPolicy(
            max_attempts=settings.model_max_attempts,
            base_seconds=settings.model_retry_base_seconds,
            max_seconds=settings.model_retry_max_seconds,
        ),
        pacer=RequestPacer(
            max_concurrency=settings.model_max_concurrency,
            requests_per_minute=settings.model_requests_per_minute,
        ),
    )
