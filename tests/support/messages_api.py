"""A local HTTP server that speaks the Anthropic Messages API, with scripted and random fault injection.

Besides ``POST /v1/messages`` it serves ``POST /v1/messages/count_tokens`` and ``GET /v1/models/{model}`` (with the
model's capabilities), caches prompt prefixes like the API (``tests/support/fake_api_cache.py``), enforces request,
input-token and output-token limits with the API's headers and 429s (``tests/support/fake_api_limits.py``), accepts
``output_config.effort`` (thinking tokens per effort level, billed as output and counted against max_tokens, when
configured) and honours ``output_config.format``: the reply is JSON matching the schema (constrained decoding, so
the unparseable and schema-invalid faults cannot happen then).

Point ``anthropic.AsyncAnthropic(base_url=api.base_url)`` at it. Run standalone with
``python -m tests.support.messages_api --ready-file PATH`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import json
import logging
import math
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jsonschema
from aiohttp import web

from tests.support.fake_api_cache import (
    CachePlan,
    CacheRequestError,
    PromptCache,
    check_breakpoints,
    prompt_blocks,
    token_count,
)
from tests.support.fake_api_limits import Charge, RateLimits, RateRefused

__all__ = [
    "FakeApiConfig",
    "FakeMessagesApi",
    "Fault",
    "RecordedRequest",
    "build_conversation",
    "main",
]


class Fault(enum.StrEnum):
    """What the server does with one request."""

    OK = "ok"
    OK_FENCED = "ok_fenced"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_GATEWAY_HTML = "bad_gateway_html"
    SERVICE_UNAVAILABLE = "service_unavailable"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNPARSEABLE = "unparseable"
    TRUNCATED = "truncated"
    SCHEMA_INVALID = "schema_invalid"
    CONNECTION_RESET = "connection_reset"
    SLOW = "slow"
    CREDIT_EXHAUSTED = "credit_exhausted"


@dataclass
class FakeApiConfig:
    """Behaviour knobs; the server reads them on every request, so they can change at run time."""

    latency_seconds: float = 0.0
    latency_jitter: float = 0.0
    seed: int = 0
    requests_per_minute: float = 0.0
    burst: float | None = None
    fault_mix: dict[str, float] = field(default_factory=dict)
    slow_seconds: float = 30.0
    retry_after_seconds: int = 1
    max_recorded_requests: int = 5_000
    input_tokens_per_minute: float = 0.0
    output_tokens_per_minute: float = 0.0
    token_burst_seconds: float = 60.0
    """Capacity of the token buckets in seconds of their rate; the API's is a full minute."""
    min_cacheable_tokens: int = 1024
    """Shortest prefix the model caches; below it nothing is cached and nothing is said."""
    cache_ttl_scale: float = 1.0
    """Multiplies the cache TTLs (5 minutes, 1 hour), so that tests can see entries expire."""
    output_tokens: int = 0
    """Length the reply's conversation is padded to, in tokens; 0 keeps the natural six-turn conversation."""
    thinking_tokens: dict[str, int] = field(default_factory=dict)
    """Thinking tokens per effort level (low, medium, high, xhigh, max); no effort sent means high."""
    structured_outputs: bool = True
    """Whether models support output_config.format (GET /v1/models says so; the request is refused otherwise)."""
    known_models: list[str] | None = None
    """Models the API knows; others get 404 not_found_error. None: every model."""
    service_tier: str = "standard"
    """usage.service_tier of the replies: standard, or batch (as the Message Batches API reports it)."""

    def validate(self) -> None:
        """Raises ValueError when a field is out of range or the fault mix is not a distribution."""
        if self.latency_seconds < 0:
            raise ValueError(f"latency_seconds must not be negative (got {self.latency_seconds})")
        if not 0 <= self.latency_jitter <= 1:
            raise ValueError(f"latency_jitter must be within 0..1 (got {self.latency_jitter})")
        if self.requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must not be negative (got {self.requests_per_minute})")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be at least 1 (got {self.burst})")
        if self.slow_seconds < 0:
            raise ValueError(f"slow_seconds must not be negative (got {self.slow_seconds})")
        if self.retry_after_seconds < 0:
            raise ValueError(f"retry_after_seconds must not be negative (got {self.retry_after_seconds})")
        if self.max_recorded_requests < 1:
            raise ValueError(f"max_recorded_requests must be at least 1 (got {self.max_recorded_requests})")
        for name in ("input_tokens_per_minute", "output_tokens_per_minute", "min_cacheable_tokens", "output_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (got {getattr(self, name)})")
        if self.token_burst_seconds <= 0 or self.cache_ttl_scale <= 0:
            raise ValueError("token_burst_seconds and cache_ttl_scale must be positive")
        unknown_efforts = set(self.thinking_tokens) - set(EFFORTS)
        if unknown_efforts:
            raise ValueError(f"thinking_tokens: unknown effort levels {sorted(unknown_efforts)}; known: {EFFORTS}")
        if not isinstance(self.fault_mix, dict):
            raise ValueError(f"fault_mix must be a dict of fault name to probability (got {self.fault_mix!r})")
        _parse_mix(self.fault_mix)

    @property
    def bucket_capacity(self) -> float:
        """Burst size of the request bucket: ``burst`` or one second's worth of requests, at least 1."""
        if self.burst is not None:
            return self.burst
        return max(1.0, self.requests_per_minute / 60.0)

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class RecordedRequest:
    """One request to ``POST /v1/messages`` as the server saw and answered it."""

    arrived_at: float
    headers: dict[str, str]
    body: Any
    fault: Fault | None = None
    """The fault applied; None when the request was rejected first (validation or the rate limiter)."""
    status: int = 0
    """HTTP status sent; 0 while pending, or when no response was sent (connection reset, client gone)."""
    throttled: bool = False
    """Whether the rate limiter (not a fault) answered 429."""


@dataclass
class _Injection:
    """A scripted fault waiting for matching requests."""

    fault: Fault
    remaining: int
    match: bytes | None


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(FakeApiConfig)}
_OK_FAULTS = frozenset(
    {Fault.OK, Fault.OK_FENCED, Fault.UNPARSEABLE, Fault.TRUNCATED, Fault.SCHEMA_INVALID, Fault.SLOW}
)
_ERROR_FAULTS: dict[Fault, tuple[int, str, str]] = {
    Fault.OVERLOADED: (529, "overloaded_error", "Overloaded"),
    Fault.RATE_LIMITED: (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. Please try again later.",
    ),
    Fault.SERVER_ERROR: (500, "api_error", "Internal server error"),
    Fault.SERVICE_UNAVAILABLE: (503, "api_error", "Service unavailable"),
    Fault.BAD_REQUEST: (400, "invalid_request_error", "messages: text content blocks must be non-empty"),
    Fault.UNAUTHORIZED: (401, "authentication_error", "invalid x-api-key"),
    Fault.FORBIDDEN: (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    Fault.CREDIT_EXHAUSTED: (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
        "purchase credits.",
    ),
}
EFFORTS = ("low", "medium", "high", "xhigh", "max")
# Faults that constrained decoding (output_config.format) rules out: the reply is always schema-valid JSON.
_FORMAT_PREVENTS = frozenset({Fault.OK_FENCED, Fault.UNPARSEABLE, Fault.SCHEMA_INVALID})
_BAD_GATEWAY_HTML = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>"
)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_EXCERPT_CHARS = 60
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _parse_mix(mix: Mapping[str, float]) -> list[tuple[Fault, float]]:
    """Checks a fault mix and returns it as (fault, probability) pairs in a stable order."""
    pairs: list[tuple[Fault, float]] = []
    for name, probability in mix.items():
        try:
            fault = Fault(name)
        except ValueError:
            raise ValueError(f"fault_mix: unknown fault {name!r}; known: {', '.join(Fault)}") from None
        if not isinstance(probability, int | float) or isinstance(probability, bool) or probability < 0:
            raise ValueError(f"fault_mix: probability of {name!r} must be a non-negative number (got {probability!r})")
        pairs.append((fault, float(probability)))
    total = sum(p for _, p in pairs)
    if total > 1 + 1e-9:
        raise ValueError(f"fault_mix: probabilities add up to {total:g}, more than 1")
    return pairs


def _text_of(content: Any) -> str:
    """The text of a message content: a string, or the text blocks of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"] for block in content if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


def _excerpt(messages: Sequence[Any]) -> str:
    """A short, whitespace-collapsed excerpt of the last text block of the last user message (what varies most)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
                content = texts[-1] if texts else ""
            text = " ".join(_text_of(content).split())
            return text[:_EXCERPT_CHARS] or "my situation"
    return "my situation"


def _metadata(excerpt: str) -> dict[str, str]:
    """The conversation_metadata object of a generated conversation."""
    return {
        "client_persona": "Pragmatic mid-career professional balancing a mortgage, retirement savings and childcare",
        "session_context": f"Initial planning session; the client opened with: {excerpt}",
        "conversation_phase": "discovery",
        "expected_outcome": "The client leaves with a prioritised list of next steps and a follow-up date",
    }


@lru_cache(maxsize=4096)
def build_conversation(excerpt: str) -> str:
    """The default reply text: a valid six-turn conversation JSON quoting the excerpt."""
    quoted = f'"{excerpt}"'
    turns = [
        (
            "user",
            f"I wanted to talk about {quoted} because it keeps me up at night and I do not know where to start.",
            ("anxious", "hopeful", 0.7),
        ),
        (
            "assistant",
            f"Thank you for bringing up {quoted}. Let us start by listing your income, fixed costs and goals "
            "so we can see the whole picture before deciding anything.",
            ("calm", "empathetic", 0.5),
        ),
        (
            "user",
            "We bring home about 7,800 a month, the mortgage is 2,100 and daycare is another 1,400. "
            "Savings feel impossible.",
            ("frustrated", "embarrassed", 0.6),
        ),
        (
            "assistant",
            "That is a common squeeze and nothing to be embarrassed about. After fixed costs you still have "
            "room; automating even 300 a month into retirement keeps the employer match.",
            ("reassuring", "confident", 0.55),
        ),
        (
            "user",
            "I did not realise we were leaving the match on the table. What should we do first, "
            "the emergency fund or the retirement account?",
            ("curious", "relieved", 0.5),
        ),
        (
            "assistant",
            f"First capture the full match, then build three months of expenses in a high-yield savings account. "
            f"We will revisit {quoted} at our follow-up in six weeks.",
            ("encouraging", "warm", 0.6),
        ),
    ]
    document = {
        "conversation_metadata": _metadata(excerpt),
        "turns": [
            {
                "turn_number": number,
                "role": role,
                "content": content,
                "emotional_context": {"primary_emotion": primary, "secondary_emotion": secondary, "intensity": level},
            }
            for number, (role, content, (primary, secondary, level)) in enumerate(turns, start=1)
        ],
    }
    return json.dumps(document, ensure_ascii=False)


@lru_cache(maxsize=4096)
def padded_conversation(excerpt: str, output_tokens: int) -> str:
    """The default conversation with every turn lengthened alike until the JSON is about output_tokens long."""
    document = json.loads(build_conversation(excerpt))
    turns = document["turns"]
    missing = output_tokens * 4 - len(build_conversation(excerpt))
    if missing > 0:
        filler = (
            " Let me say a little more about that, because the details matter here and I want to be sure we "
            "understand each other before we move on to the next question."
        )
        per_turn = math.ceil(missing / len(turns))
        for turn in turns:
            turn["content"] += (filler * (per_turn // len(filler) + 1))[:per_turn]
    return json.dumps(document, ensure_ascii=False)


def _reply_text(fault: Fault, excerpt: str, output_tokens: int = 0) -> str:
    """The assistant text a 200 fault answers with."""
    conversation = padded_conversation(excerpt, output_tokens) if output_tokens else build_conversation(excerpt)
    if fault is Fault.OK_FENCED:
        return (
            f"Here is the conversation you asked for.\n\n```json\n{conversation}\n```\n\n"
            "Let me know if you would like a different emotional arc."
        )
    if fault is Fault.UNPARSEABLE:
        return (
            f"I am sorry, but I cannot write that conversation in the requested format right now. "
            f"In short: the client asked about {excerpt}, and the advisor suggested reviewing the budget first."
        )
    if fault is Fault.TRUNCATED:
        return conversation[: len(conversation) // 2]
    if fault is Fault.SCHEMA_INVALID:
        return json.dumps({"conversation_metadata": _metadata(excerpt), "dialogue": "omitted"}, ensure_ascii=False)
    return conversation


def _is_loopback(host: str) -> bool:
    """Whether a host name or address is on the loopback interface."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Rejection(Exception):
    """An error response decided while checking a request."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _validate_body(body: Any) -> None:
    """Checks the Messages API body fields, naming the first bad one like the real API does."""
    if not isinstance(body, dict):
        raise _Rejection(400, "invalid_request_error", "Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Rejection(400, "invalid_request_error", "model: Field required")
    max_tokens = body.get("max_tokens")
    if "max_tokens" not in body:
        raise _Rejection(400, "invalid_request_error", "max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Rejection(400, "invalid_request_error", "max_tokens: must be an integer greater than or equal to 1")
    messages = body.get("messages")
    if "messages" not in body:
        raise _Rejection(400, "invalid_request_error", "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise _Rejection(400, "invalid_request_error", "messages: must be a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _Rejection(400, "invalid_request_error", f"messages.{index}.role: must be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise _Rejection(400, "invalid_request_error", f"messages.{index}.content: Field required")
    system = body.get("system")
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _Rejection(400, "invalid_request_error", "system: must be a string or a list of text blocks")
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _Rejection(400, "invalid_request_error", f"system.{index}: must be a text block with a text field")


@dataclass(frozen=True)
class _OutputOptions:
    """What output_config and thinking ask of a reply: the effort level and the JSON schema, if any."""

    effort: str
    thinking: bool
    schema: dict[str, Any] | None


def _output_options(body: Mapping[str, Any], config: FakeApiConfig) -> _OutputOptions:
    """Reads (and checks, naming the bad field like the API) output_config.effort, output_config.format, thinking."""
    output_config = body.get("output_config") or {}
    if not isinstance(output_config, dict):
        raise _Rejection(400, "invalid_request_error", "output_config: Input should be an object")
    effort = output_config.get("effort") or "high"
    if effort not in EFFORTS:
        raise _Rejection(
            400, "invalid_request_error", f"output_config.effort: Input should be {', '.join(map(repr, EFFORTS))}"
        )
    schema = None
    output_format = output_config.get("format")
    if output_format is not None:
        if not config.structured_outputs:
            raise _Rejection(
                400,
                "invalid_request_error",
                f"output_config.format: structured outputs are not supported by {body['model']}",
            )
        if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
            raise _Rejection(400, "invalid_request_error", "output_config.format.type: Input should be 'json_schema'")
        schema = output_format.get("schema")
        if not isinstance(schema, dict):
            raise _Rejection(400, "invalid_request_error", "output_config.format.schema: Field required")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise _Rejection(400, "invalid_request_error", f"output_config.format.schema: {error.message}") from None
    thinking = body.get("thinking")
    thinks = not (isinstance(thinking, dict) and thinking.get("type") == "disabled")
    return _OutputOptions(effort=str(effort), thinking=thinks, schema=schema)


def _instance_of(schema: Mapping[str, Any], root: Mapping[str, Any], excerpt: str) -> object:
    """A value valid against a (strict-subset) JSON schema, for schemas the default conversation does not fit."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _instance_of(root.get("$defs", {}).get(name, {}), root, excerpt)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "allOf"):
        if schema.get(key):
            return _instance_of(schema[key][0], root, excerpt)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _instance_of(sub, root, excerpt) for name, sub in properties.items()}
    if kind == "array":
        return [_instance_of(schema.get("items", {}), root, excerpt) for _ in range(max(2, schema.get("minItems", 0)))]
    if kind == "integer":
        return 1
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"About {excerpt}"


def _structured_text(schema: Mapping[str, Any], conversation: str, excerpt: str) -> str:
    """The reply under output_config.format: the conversation when it matches the schema, else a generated instance."""
    if jsonschema.Draft202012Validator(schema).is_valid(json.loads(conversation)):
        return conversation
    return json.dumps(_instance_of(schema, schema, excerpt), ensure_ascii=False)


# Writes the text of an OK reply from the request body, instead of the default conversation (see replies=).
ReplyWriter = Callable[[Mapping[str, Any]], str]


class FakeMessagesApi:
    """An in-process aiohttp server imitating ``POST /v1/messages``, with fault injection and request records."""

    def __init__(
        self, config: FakeApiConfig | None = None, *, verbose: bool = False, replies: ReplyWriter | None = None
    ) -> None:
        self.config = config if config is not None else FakeApiConfig()
        # Serves a scripted corpus (e.g. tests/support/near_duplicates.py) for OK replies; faults are unchanged.
        self._replies = replies
        self.config.validate()
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._verbose = verbose
        self._runner: web.AppRunner | None = None
        self._injections: list[_Injection] = []
        self._rng = random.Random(self.config.seed)
        self._seeded_with = self.config.seed
        self._limits = RateLimits()
        self._cache = PromptCache()
        self.token_counts: list[dict[str, Any]] = []
        """Bodies of the POST /v1/messages/count_tokens requests answered."""
        self._mix_source: dict[str, float] | None = None
        self._mix_snapshot: dict[str, float] = {}
        self._mix: list[tuple[Fault, float]] = []
        self._total = 0
        self._faults: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._throttled = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Starts listening (port 0 picks a free port) and returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the fake Messages API is already running")
        if not _is_loopback(host):
            raise ValueError(f"the fake Messages API listens on loopback only, not {host!r}")
        # The real API accepts bodies up to 32 MB; aiohttp's default is 1 MB.
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models/{model}", self._model_info)
        app.router.add_get("/_fake/stats", self._control_stats)
        app.router.add_post("/_fake/config", self._control_config)
        app.router.add_post("/_fake/inject", self._control_inject)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(
            app,
            # Without this a stalled `slow` handler outlives its disconnected client and delays shutdown.
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=logging.getLogger("aiohttp.access") if self._verbose else None,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stops listening and cancels requests still in flight."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def inject(self, fault: Fault | str, *, times: int = 1, match: str | None = None) -> None:
        """Queues a fault for the next ``times`` requests whose raw body contains ``match`` (None: any)."""
        if times < 1:
            raise ValueError(f"times must be at least 1 (got {times})")
        self._injections.append(_Injection(Fault(fault), times, match.encode() if match is not None else None))

    def clear_injections(self) -> None:
        """Drops every scripted fault not yet used."""
        self._injections.clear()

    def reset(self) -> None:
        """Forgets records, scripted faults, the rate buckets and cache memory, and reseeds the random source."""
        self.requests.clear()
        self._injections.clear()
        self._limits.reset()
        self._cache.clear()
        self.token_counts.clear()
        self._rng.seed(self.config.seed)
        self._seeded_with = self.config.seed
        self._total = 0
        self._faults.clear()
        self._statuses.clear()
        self._throttled = 0

    def update_config(self, changes: Mapping[str, Any]) -> FakeApiConfig:
        """Changes config fields by name (validated as a whole; nothing changes on error)."""
        unknown = sorted(set(changes) - _CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        candidate = dataclasses.replace(self.config, **changes)
        candidate.validate()
        for name in changes:
            setattr(self.config, name, getattr(candidate, name))
        return self.config

    def stats(self) -> dict[str, Any]:
        """Counts since the last reset: total, per fault, per HTTP status (as strings), 429s, limiter rejections."""
        return {
            "total": self._total,
            "faults": dict(self._faults),
            "statuses": dict(self._statuses),
            "rate_limited": self._statuses.get("429", 0),
            "throttled": self._throttled,
            "pending_injections": sum(injection.remaining for injection in self._injections),
        }

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """Handles ``POST /v1/messages``."""
        arrived_at = time.time()
        raw = await request.read()
        self._maybe_reseed()
        # Drawn for every request so the random sequence depends only on request order.
        fault_draw = self._rng.random()
        jitter_draw = self._rng.random()
        message_id = self._make_id("msg_01")
        request_id = self._make_id("req_011C")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            arrived_at=arrived_at, headers={k.lower(): v for k, v in request.headers.items()}, body=body
        )
        self._remember(record)
        headers = {"request-id": request_id}
        try:
            self._check_headers(record.headers)
            if body is None:
                raise _Rejection(400, "invalid_request_error", "There was an error parsing the body of your request")
            _validate_body(body)
            self._check_model(body["model"])
            options = _output_options(body, self.config)
            plan = self._cache_plan(body)
            charge = Charge(input_tokens=plan.counted_input_tokens, output_tokens=body["max_tokens"])
            self._admit(charge, headers)
        except _Rejection as rejection:
            if rejection.status == 429:
                record.throttled = True
                self._throttled += 1
            headers.update(self._limits.headers())
            return self._finish(record, self._error(rejection.status, rejection.error_type, rejection.message, headers))

        fault = self._choose_fault(raw, fault_draw)
        record.fault = fault
        self._faults[fault.value] += 1
        try:
            if fault is Fault.SLOW:
                await asyncio.sleep(self.config.slow_seconds)
            else:
                delay = self._latency(jitter_draw)
                if delay > 0:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            # The client went away: the request counts for nothing.
            self._limits.settle(charge, input_used=0, output_used=0)
            raise

        if fault in _OK_FAULTS:
            reply = self._reply(body, fault, message_id, headers, plan, options)
            return self._finish(record, reply)
        # A failed request uses none of its charge.
        self._limits.settle(charge, input_used=0, output_used=0)
        headers.update(self._limits.headers())
        if fault is Fault.CONNECTION_RESET:
            if request.transport is not None:
                request.transport.close()
            # aiohttp's write to the closed transport fails quietly, so the client sees no response at all.
            return web.Response(status=500)
        if fault is Fault.BAD_GATEWAY_HTML:
            response = web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html", headers=headers)
            return self._finish(record, response)
        status, error_type, message = _ERROR_FAULTS[fault]
        if fault is Fault.RATE_LIMITED:
            headers["retry-after"] = str(self.config.retry_after_seconds)
        return self._finish(record, self._error(status, error_type, message, headers))

    def _check_model(self, model: str) -> None:
        """A model the API does not know is a 404, as the real API answers it."""
        known = self.config.known_models
        if known is not None and model not in known:
            raise _Rejection(404, "not_found_error", f"model: {model}")

    def _cache_plan(self, body: Mapping[str, Any]) -> CachePlan:
        """How the request's input divides into cache reads, writes and uncached input (nothing stored yet)."""
        try:
            blocks = prompt_blocks(body)
            check_breakpoints(blocks)
        except CacheRequestError as error:
            raise _Rejection(400, "invalid_request_error", str(error)) from None
        return self._cache.plan(
            body["model"], blocks, minimum=self.config.min_cacheable_tokens, ttl_scale=self.config.cache_ttl_scale
        )

    def _admit(self, charge: Charge, headers: dict[str, str]) -> None:
        """Charges the request to the rate limits, or refuses it with a 429 and retry-after."""
        config = self.config
        self._limits.configure(
            requests_per_minute=config.requests_per_minute,
            request_burst=config.bucket_capacity,
            input_tokens_per_minute=config.input_tokens_per_minute,
            output_tokens_per_minute=config.output_tokens_per_minute,
            token_burst_seconds=config.token_burst_seconds,
        )
        try:
            self._limits.admit(charge)
        except RateRefused as refused:
            headers["retry-after"] = str(refused.retry_after)
            raise _Rejection(429, "rate_limit_error", str(refused)) from None

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``: the input tokens of a request, counted as /v1/messages counts them."""
        headers = {"request-id": self._make_id("req_011C")}
        try:
            self._check_headers({k.lower(): v for k, v in request.headers.items()})
            try:
                body = json.loads(await request.read())
            except ValueError:
                raise _Rejection(
                    400, "invalid_request_error", "There was an error parsing the body of your request"
                ) from None
            _validate_body({"max_tokens": 1, **body} if isinstance(body, dict) else body)
            self._check_model(body["model"])
            blocks = prompt_blocks(body)
        except _Rejection as rejection:
            return self._error(rejection.status, rejection.error_type, rejection.message, headers)
        self.token_counts.append(body)
        return web.json_response({"input_tokens": sum(token_count(b.text) for b in blocks)}, headers=headers)

    async def _model_info(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{model}``: the model and what it supports (structured outputs, effort, thinking)."""
        model = request.match_info["model"]
        headers = {"request-id": self._make_id("req_011C")}
        try:
            self._check_headers({k.lower(): v for k, v in request.headers.items()})
            self._check_model(model)
        except _Rejection as rejection:
            return self._error(rejection.status, rejection.error_type, rejection.message, headers)
        yes, no = {"supported": True}, {"supported": False}
        info = {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "2026-01-01T00:00:00Z",
            "lifecycle": "active",
            "max_input_tokens": 200_000,
            "max_tokens": 64_000,
            "capabilities": {
                "batch": yes,
                "citations": yes,
                "code_execution": no,
                "context_management": {"supported": False},
                "effort": {"supported": True, **dict.fromkeys(EFFORTS, yes)},
                "image_input": yes,
                "pdf_input": yes,
                "server_tools": {"supported": False, "code_execution": no, "web_search": no},
                "structured_outputs": yes if self.config.structured_outputs else no,
                "thinking": {
                    "supported": True,
                    "types": {"adaptive": yes, "between_tools": no, "disabled": yes, "enabled": yes},
                },
            },
        }
        return web.json_response(info, headers=headers)

    def _remember(self, record: RecordedRequest) -> None:
        """Records a request, dropping the oldest half of the records when over the limit."""
        self._total += 1
        self.requests.append(record)
        limit = self.config.max_recorded_requests
        if len(self.requests) > limit:
            # Trimming by half keeps the cost amortised; stats() counts independently of the records.
            del self.requests[: len(self.requests) - max(1, limit // 2)]

    def _finish(self, record: RecordedRequest, response: web.Response) -> web.Response:
        """Notes the status a request is answered with."""
        record.status = response.status
        self._statuses[str(response.status)] += 1
        return response

    def _maybe_reseed(self) -> None:
        """Restarts the random sequence when the configured seed changed."""
        if self.config.seed != self._seeded_with:
            self._rng.seed(self.config.seed)
            self._seeded_with = self.config.seed

    def _make_id(self, prefix: str) -> str:
        """A realistic-looking identifier drawn from the seeded random source."""
        value = self._rng.getrandbits(128)
        chars = []
        for _ in range(22):
            value, digit = divmod(value, 62)
            chars.append(_BASE62[digit])
        return prefix + "".join(chars)

    @staticmethod
    def _check_headers(headers: Mapping[str, str]) -> None:
        """Rejects requests without an API key or API version, as the real API does."""
        # SDK 2.x sends the key as `Authorization: Bearer <key>`; older clients send `x-api-key`.
        bearer = headers.get("authorization", "")
        if not headers.get("x-api-key") and not (bearer[:7].lower() == "bearer " and bearer[7:].strip()):
            raise _Rejection(401, "authentication_error", "x-api-key header is required")
        if not headers.get("anthropic-version"):
            raise _Rejection(400, "invalid_request_error", "anthropic-version: header is required")

    def _choose_fault(self, raw: bytes, draw: float) -> Fault:
        """The first matching scripted fault, else one drawn from the mix, else ok."""
        for index, injection in enumerate(self._injections):
            if injection.match is None or injection.match in raw:
                injection.remaining -= 1
                if injection.remaining <= 0:
                    del self._injections[index]
                return injection.fault
        mix = self.config.fault_mix
        if mix is not self._mix_source or mix != self._mix_snapshot:
            self._mix = _parse_mix(mix)
            self._mix_source = mix
            self._mix_snapshot = dict(mix)
        cumulative = 0.0
        for fault, probability in self._mix:
            cumulative += probability
            if draw < cumulative:
                return fault
        return Fault.OK

    def _latency(self, draw: float) -> float:
        """The configured latency with uniform ± jitter."""
        mean = self.config.latency_seconds
        return max(0.0, mean * (1 + self.config.latency_jitter * (2 * draw - 1)))

    def _reply(
        self,
        body: Mapping[str, Any],
        fault: Fault,
        message_id: str,
        headers: dict[str, str],
        plan: CachePlan,
        options: _OutputOptions,
    ) -> web.Response:
        """A 200 Messages API response for an ok-like fault: the cache written, the output charge settled."""
        excerpt = _excerpt(body["messages"])
        if options.schema is not None and fault in _FORMAT_PREVENTS:
            fault = Fault.OK
        if self._replies is not None and fault is Fault.OK:
            text = self._replies(body)
        else:
            text = _reply_text(fault, excerpt, self.config.output_tokens)
        if options.schema is not None and fault is not Fault.TRUNCATED:
            text = _structured_text(options.schema, text, excerpt)
        max_tokens: int = body["max_tokens"]
        thinking = min(self.config.thinking_tokens.get(options.effort, 0) if options.thinking else 0, max_tokens)
        output_tokens = thinking + token_count(text)
        stop_reason = "end_turn"
        if fault is Fault.TRUNCATED or output_tokens > max_tokens:
            # Thinking counts against max_tokens: what is left of it cuts the text.
            stop_reason = "max_tokens"
            text = text[: len(text) // 2] if fault is Fault.TRUNCATED else text[: (max_tokens - thinking) * 4]
            output_tokens = max_tokens
        content: list[dict[str, Any]] = []
        if thinking:
            content.append({"type": "thinking", "thinking": "(thinking summarised)", "signature": "sig_fake"})
        content.append({"type": "text", "text": text})
        self._cache.commit(plan)
        self._limits.settle(
            Charge(plan.counted_input_tokens, max_tokens),
            input_used=plan.counted_input_tokens,
            output_used=output_tokens,
        )
        headers.update(self._limits.headers())
        payload = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": plan.input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": plan.write_5m_tokens + plan.write_1h_tokens,
                "cache_read_input_tokens": plan.read_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": plan.write_5m_tokens,
                    "ephemeral_1h_input_tokens": plan.write_1h_tokens,
                },
                "output_tokens_details": {"thinking_tokens": thinking},
                "service_tier": self.config.service_tier,
            },
        }
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json", headers=headers)

    @staticmethod
    def _error(status: int, error_type: str, message: str, headers: dict[str, str]) -> web.Response:
        """An error response in the real API's shape."""
        payload = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": headers["request-id"],
        }
        return web.Response(
            status=status, body=json.dumps(payload).encode(), content_type="application/json", headers=headers
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        """Unknown paths answer like the real API."""
        return self._error(
            404,
            "not_found_error",
            f"Not found: {request.method} {request.path}",
            {"request-id": f"req_{uuid.uuid4().hex}"},
        )

    async def _control_stats(self, request: web.Request) -> web.Response:
        """``GET /_fake/stats``."""
        return web.json_response(self.stats())

    async def _control_config(self, request: web.Request) -> web.Response:
        """``POST /_fake/config``: changes the named config fields and returns the whole config."""
        changes = await _json_object(request)
        try:
            config = self.update_config(changes)
        except (TypeError, ValueError) as error:
            raise _bad_control(str(error)) from None
        return web.json_response(config.to_json())

    async def _control_inject(self, request: web.Request) -> web.Response:
        """``POST /_fake/inject``: queues a scripted fault."""
        spec = await _json_object(request)
        times = spec.get("times", 1)
        match = spec.get("match")
        if not isinstance(times, int) or isinstance(times, bool):
            raise _bad_control("times must be an integer")
        if match is not None and not isinstance(match, str):
            raise _bad_control("match must be a string or null")
        try:
            self.inject(str(spec.get("fault")), times=times, match=match)
        except ValueError as error:
            raise _bad_control(str(error)) from None
        return web.json_response({"pending_injections": self.stats()["pending_injections"]})

    async def _control_reset(self, request: web.Request) -> web.Response:
        """``POST /_fake/reset``."""
        self.reset()
        return web.json_response(self.stats())


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        value = await request.json()
    except ValueError:
        raise _bad_control("body must be JSON") from None
    if not isinstance(value, dict):
        raise _bad_control("body must be a JSON object")
    return value


def _bad_control(message: str) -> web.HTTPBadRequest:
    """A 400 for a control endpoint."""
    return web.HTTPBadRequest(
        text=json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
        content_type="application/json",
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.messages_api", description="Fake Anthropic Messages API with fault injection."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="mean response latency in seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="latency jitter as a fraction (0.2 = ±20%%)")
    parser.add_argument("--rpm", type=float, default=0.0, help="requests per minute (0 = unlimited)")
    parser.add_argument("--burst", type=float, default=None, help="rate bucket capacity (default: rpm/60, min 1)")
    parser.add_argument("--fault-mix", default="{}", help="JSON fault → probability, e.g. '{\"overloaded\":0.2}'")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="how long the slow fault stalls")
    parser.add_argument("--retry-after", type=int, default=1, help="retry-after seconds of rate_limited faults")
    parser.add_argument("--ready-file", type=Path, default=None, help="file to write the base URL to once listening")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--config",
        default="{}",
        help="JSON object of further FakeApiConfig fields, e.g. '{\"output_tokens_per_minute\": 60000}'",
    )
    args = parser.parse_args(argv)
    try:
        extra = json.loads(args.config)
    except ValueError:
        parser.error(f"--config is not JSON: {args.config!r}")
    unknown = sorted(set(extra) - _CONFIG_FIELDS) if isinstance(extra, dict) else ["(not an object)"]
    if unknown:
        parser.error(f"--config: unknown fields {', '.join(unknown)}")
    args.config = extra
    try:
        mix = json.loads(args.fault_mix)
    except ValueError:
        parser.error(f"--fault-mix is not JSON: {args.fault_mix!r}")
    if not isinstance(mix, dict):
        parser.error("--fault-mix must be a JSON object")
    args.fault_mix = mix
    return args


def _write_atomically(path: Path, text: str) -> None:
    """Writes a file so readers see either nothing or the whole text."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def _serve(args: argparse.Namespace) -> None:
    """Runs the server until SIGTERM or SIGINT."""
    config = FakeApiConfig(
        latency_seconds=args.latency,
        latency_jitter=args.jitter,
        seed=args.seed,
        requests_per_minute=args.rpm,
        burst=args.burst,
        fault_mix=args.fault_mix,
        slow_seconds=args.slow_seconds,
        retry_after_seconds=args.retry_after,
        **args.config,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    api = FakeMessagesApi(config, verbose=args.verbose)
    base_url = await api.start(args.host, args.port)
    try:
        if args.ready_file is not None:
            _write_atomically(args.ready_file, base_url)
        if args.verbose:
            logging.getLogger(__name__).info("fake Messages API listening on %s", base_url)
        await stop.wait()
    finally:
        await api.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tests.support.messages_api``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
