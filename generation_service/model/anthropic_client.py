"""The Claude adapter: one AsyncAnthropic per process, errors read once and classified by HTTP status."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
from anthropic.types import CacheControlEphemeralParam, TextBlockParam

from convgen.conversation_schema import output_schema
from convgen.errors import ConvgenError, FailedPrecondition
from convgen.pricing import TokenUsage
from convgen.settings import Settings
from generation_service.model.errors import (
    ModelAuthenticationFailed,
    ModelCreditExhausted,
    ModelNotFound,
    ModelOutputInvalid,
    ModelOverloaded,
    ModelPermissionDenied,
    ModelRateLimited,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from generation_service.model.pacing import CallCharge, InputEstimates, RatePacer
from generation_service.model.port import CacheTtl, ModelRequest, ModelResponse

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
# How long a failed look-up of the model's capabilities is trusted before it is tried again.
CAPABILITY_RETRY_SECONDS = 60.0
_CREDIT_EXHAUSTED = "credit balance is too low"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter; retry-after wins when the provider sends it."""

    max_attempts: int = 4
    base_seconds: float = 1.0
    max_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after the given (1-based) failed attempt."""
        backoff = min(self.max_seconds, self.base_seconds * (2 ** (attempt - 1)))
        jittered = rng.uniform(backoff / 2, backoff)
        if retry_after is not None:
            return min(max(retry_after, jittered), max(self.max_seconds, retry_after))
        return jittered


@dataclass(frozen=True)
class _Failure:
    """One failed attempt, read once: what to say, whether to retry, and how long the provider asked us to wait."""

    status: int | None
    error_type: str
    message: str
    transient: bool
    retry_after: float | None
    request_id: str | None


@dataclass(frozen=True)
class CallOptions:
    """How convgen calls the model beyond the prompt: cache TTL, effort, and structured output."""

    cache_ttl: CacheTtl = "5m"
    effort: str = "medium"
    structured_output: bool = True


@dataclass(frozen=True)
class _Capabilities:
    """What the model says it supports (GET /v1/models/{model}); unknown when the look-up failed."""

    structured_outputs: bool
    effort: bool
    known: bool


_UNKNOWN_CAPABILITIES = _Capabilities(structured_outputs=False, effort=False, known=False)


class AnthropicModelClient:
    """Calls the Messages API with the prompt laid out for caching, paced to the API's limits; retries itself."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        model: str,
        retry: RetryPolicy,
        pacer: RatePacer,
        options: CallOptions | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._model = model
        self._retry = retry
        self._pacer = pacer
        self._options = options or CallOptions()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._estimates = InputEstimates()
        self._capabilities: _Capabilities | None = None
        self._capabilities_checked_at = -CAPABILITY_RETRY_SECONDS
        self._capabilities_lock = asyncio.Lock()
        self._schema = anthropic.transform_schema(output_schema())

    @property
    def name(self) -> str:
        """The configured Claude model."""
        return self._model

    @property
    def pacer(self) -> RatePacer:
        """The process's pacer (its limits are learned from the responses)."""
        return self._pacer

    async def close(self) -> None:
        """Closes the SDK's HTTP client."""
        await self._client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Calls the model, retrying 429, 529, 5xx, timeouts and resets with backoff; raises a classified error."""
        capabilities = await self._model_capabilities()
        charge = CallCharge(
            input_tokens=self._estimates.estimate(request.template_key, request.prompt.characters),
            output_tokens=request.max_tokens,
        )
        failure: _Failure | None = None
        for attempt in range(1, self._retry.max_attempts + 1):
            response: ModelResponse | None = None
            headers: dict[str, str] = {}
            async with self._pacer.call(charge) as ticket:
                try:
                    response = await self._call(request, attempt, capabilities)
                    headers = response.headers
                    ticket.settle(response.usage)
                except anthropic.APIStatusError as error:
                    headers = _headers(error.response.headers)
                    failure = _status_failure(error)
                except anthropic.APITimeoutError:
                    failure = _Failure(None, "timeout", "request timed out", True, None, None)
                except anthropic.APIConnectionError as error:
                    failure = _Failure(None, "connection_error", _connection_text(error), True, None, None)
            # After the call has settled: the headers say what remains once its unused charge went back.
            if headers:
                self._pacer.observe(headers)
            if response is not None:
                self._estimates.learn(request.template_key, response.usage)
                return response
            assert failure is not None
            if not failure.transient:
                raise _final_error(failure, attempt)
            if failure.status in (429, 529) and failure.retry_after is not None:
                self._pacer.cool_down(failure.retry_after)
            if attempt < self._retry.max_attempts:
                delay = self._retry.delay(attempt, failure.retry_after, self._rng)
                logger.info(
                    "model call attempt %d failed (%s); retrying in %.1fs",
                    attempt,
                    _describe(failure),
                    delay,
                    extra={"request_id": request.request_id},
                )
                await self._sleep(delay)
        assert failure is not None
        raise _final_error(failure, self._retry.max_attempts)

    async def count_tokens(self, system: str, user: str) -> int:
        """Input tokens of this prompt as the model counts them (POST /v1/messages/count_tokens)."""
        try:
            counted = await self._client.messages.count_tokens(
                model=self._model, system=system, messages=[{"role": "user", "content": user}]
            )
        except anthropic.APIStatusError as error:
            raise _final_error(_status_failure(error), 1) from error
        except anthropic.APIConnectionError as error:
            raise _final_error(
                _Failure(None, "connection_error", _connection_text(error), True, None, None), 1
            ) from error
        return counted.input_tokens

    async def _model_capabilities(self) -> _Capabilities:
        """What the model supports, looked up once (again a minute after a failed look-up)."""
        known = self._capabilities
        if known is not None and (
            known.known or self._clock() - self._capabilities_checked_at < CAPABILITY_RETRY_SECONDS
        ):
            return known
        async with self._capabilities_lock:
            known = self._capabilities
            if known is None or (
                not known.known and self._clock() - self._capabilities_checked_at >= CAPABILITY_RETRY_SECONDS
            ):
                known = await self._look_up_capabilities()
                self._capabilities = known
                self._capabilities_checked_at = self._clock()
            return known

    async def _look_up_capabilities(self) -> _Capabilities:
        try:
            info = await self._client.models.retrieve(self._model)
        except anthropic.NotFoundError:
            logger.warning(
                "model %s is unknown to the API at %s (GET /v1/models): calls will fail; sending neither "
                "effort nor a structured-output schema",
                self._model,
                self._client.base_url,
            )
            return _Capabilities(structured_outputs=False, effort=False, known=True)
        except anthropic.APIError as error:
            logger.warning(
                "could not look up what model %s supports (%s): sending neither effort nor a structured-output "
                "schema for now; trying again in %.0fs",
                self._model,
                type(error).__name__,
                CAPABILITY_RETRY_SECONDS,
            )
            return _UNKNOWN_CAPABILITIES
        capabilities = info.capabilities
        found = _Capabilities(
            structured_outputs=bool(capabilities and capabilities.structured_outputs.supported),
            effort=bool(capabilities and capabilities.effort.supported),
            known=True,
        )
        logger.info(
            "model %s: structured outputs %s, effort %s",
            self._model,
            "supported" if found.structured_outputs else "not supported",
            "supported" if found.effort else "not supported",
        )
        return found

    def _output_config(self, capabilities: _Capabilities) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if capabilities.effort:
            config["effort"] = self._options.effort
        if capabilities.structured_outputs and self._options.structured_output:
            config["format"] = {"type": "json_schema", "schema": self._schema}
        return config

    async def _call(self, request: ModelRequest, attempt: int, capabilities: _Capabilities) -> ModelResponse:
        cache: CacheControlEphemeralParam = {"type": "ephemeral", "ttl": self._options.cache_ttl}
        prompt = request.prompt
        content: list[TextBlockParam] = [
            {"type": "text", "text": prompt.shared, "cache_control": cache},
            {"type": "text", "text": prompt.topic},
        ]
        extra: dict[str, Any] = {}
        output_config = self._output_config(capabilities)
        if output_config:
            extra["output_config"] = output_config
        raw = await self._client.messages.with_raw_response.create(
            model=self._model,
            max_tokens=request.max_tokens,
            # Longest shared prefix first, a cache breakpoint after each shared part: the output contract (every
            # conversation), then the template with persona and arc (every topic of a job), then the topic.
            system=[{"type": "text", "text": prompt.contract, "cache_control": cache}],
            messages=[{"role": "user", "content": content}],
            **extra,
        )
        body = await raw.read()
        return _read_message(
            body,
            fallback_model=self._model,
            attempts=attempt,
            headers=_headers(raw.headers),
            cache_ttl=self._options.cache_ttl,
        )


def _read_message(
    body: bytes, *, fallback_model: str, attempts: int, headers: dict[str, str], cache_ttl: CacheTtl = "5m"
) -> ModelResponse:
    """The fields convgen uses, read from the JSON body with json (the SDK's typed model costs ~0.5 ms per call)."""
    try:
        message = json.loads(body)
        usage = message["usage"]
        text = "".join(block["text"] for block in message["content"] if block.get("type") == "text" and "text" in block)
        return ModelResponse(
            raw_body=body,
            text=text,
            stop_reason=message.get("stop_reason"),
            model=message.get("model") or fallback_model,
            usage=_usage(usage, cache_ttl),
            attempts=attempts,
            headers=headers,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ModelOutputInvalid(
            f"anthropic response is not a Messages API message ({type(error).__name__}: {error}): "
            f"{_summarise_body(body.decode(errors='replace'))}",
            reason="MODEL_RESPONSE_UNREADABLE",
            metadata={"step": "model_call", "provider": "anthropic", "attempts": str(attempts)},
        ) from error


def _usage(usage: Mapping[str, Any], cache_ttl: CacheTtl) -> TokenUsage:
    """Token counts by kind; cache writes by TTL from usage.cache_creation, else all at the TTL convgen asked for."""
    written = int(usage.get("cache_creation_input_tokens") or 0)
    by_ttl = usage.get("cache_creation")
    if isinstance(by_ttl, Mapping):
        five_minutes = int(by_ttl.get("ephemeral_5m_input_tokens") or 0)
        one_hour = int(by_ttl.get("ephemeral_1h_input_tokens") or 0)
    elif cache_ttl == "1h":
        five_minutes, one_hour = 0, written
    else:
        five_minutes, one_hour = written, 0
    return TokenUsage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_creation_5m_input_tokens=five_minutes,
        cache_creation_1h_input_tokens=one_hour,
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        service_tier=str(usage.get("service_tier") or "standard"),
    )


def _headers(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _status_failure(error: anthropic.APIStatusError) -> _Failure:
    """Classifies an HTTP error once, from its status code and the body the SDK already read."""
    status = error.status_code
    headers = _headers(error.response.headers)
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        detail = body["error"]
        error_type = str(detail.get("type") or "error")
        message = str(detail.get("message") or "")
    else:
        content_type = headers.get("content-type", "unknown content type").split(";")[0]
        error_type = "non_json_body"
        message = f"non-JSON {content_type} body: {_summarise_body(body)}"
    return _Failure(
        status=status,
        error_type=error_type,
        message=message,
        transient=status in TRANSIENT_STATUSES or status >= 500,
        retry_after=_retry_after(headers),
        request_id=headers.get("request-id"),
    )


def _summarise_body(body: object) -> str:
    text = body if isinstance(body, str) else repr(body)
    title = _TITLE.search(text)
    if title:
        return repr(" ".join(title.group(1).split()))
    flat = " ".join(text.split())
    return repr(flat[:120] + ("..." if len(flat) > 120 else ""))


def _connection_text(error: anthropic.APIConnectionError) -> str:
    cause = error.__cause__
    return f"connection failed: {type(cause).__name__}: {cause}" if cause else "connection failed"


def _describe(failure: _Failure) -> str:
    if failure.status is None:
        return f"anthropic {failure.error_type}: {failure.message}"
    return f"anthropic {failure.status} {failure.error_type}: {failure.message}"


def _final_error(failure: _Failure, attempts: int) -> ConvgenError:
    """The convgen error for the last failure, with the provider's status, type and message."""
    text = _describe(failure)
    if failure.transient:
        text += f" (after {attempts} attempt{'s' if attempts != 1 else ''})"
    metadata = {
        "step": "model_call",
        "provider": "anthropic",
        "provider_status": str(failure.status or ""),
        "provider_error_type": failure.error_type,
        "attempts": str(attempts),
    }
    if failure.request_id:
        metadata["provider_request_id"] = failure.request_id
    status, retry_after = failure.status, failure.retry_after
    if status == 429:
        return ModelRateLimited(text, metadata=metadata, retry_after=retry_after)
    if status == 529:
        return ModelOverloaded(text, metadata=metadata, retry_after=retry_after)
    if status is None and failure.error_type == "timeout":
        return ModelTimeout(text, metadata=metadata)
    if status is None or failure.transient:
        return ModelUnavailable(text, metadata=metadata, retry_after=retry_after)
    if status == 401:
        return ModelAuthenticationFailed(text, metadata=metadata)
    if status == 403:
        return ModelPermissionDenied(text, metadata=metadata)
    if status == 402:
        return FailedPrecondition(text, metadata=metadata, reason="MODEL_PAYMENT_REQUIRED")
    if status == 404:
        return ModelNotFound(text, metadata=metadata)
    if _CREDIT_EXHAUSTED in failure.message.lower():
        return ModelCreditExhausted(text, metadata=metadata)
    return ModelRequestRejected(text, metadata=metadata)


def build_anthropic_client(settings: Settings) -> AnthropicModelClient:
    """The Claude client of a process, from its settings (the SDK's own retries off: convgen retries itself)."""
    assert settings.anthropic_api_key is not None
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        # convgen retries itself (classified, paced, with a shared cooldown); the SDK must not retry too.
        max_retries=0,
        timeout=httpx2.Timeout(settings.model_timeout_seconds, connect=10.0),
        # The SDK's aiohttp transport: httpx's pool checked every idle connection's socket on each request
        # (a tenth of the service's CPU at 64 calls in flight).
        http_client=anthropic.DefaultAioHttpClient(
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
        pacer=RatePacer(
            max_concurrency=settings.model_max_concurrency,
            requests_per_minute=settings.model_requests_per_minute,
            input_tokens_per_minute=settings.model_input_tokens_per_minute,
            output_tokens_per_minute=settings.model_output_tokens_per_minute,
        ),
        options=CallOptions(
            cache_ttl=settings.model_cache_ttl,
            effort=settings.model_effort,
            structured_output=settings.model_structured_output == "auto",
        ),
    )
