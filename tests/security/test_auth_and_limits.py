"""Auth off (logged, loopback only), health and reflection under auth, the request size limit and its docs, log
redaction, and the batch service's own token towards the generation service."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import ConvgenClient
from convgen.logging_setup import REDACTED, configure_logging, log_context
from convgen.settings import Settings
from convgen.v1 import batch_pb2, batch_pb2_grpc, catalog_pb2, catalog_pb2_grpc, generation_pb2
from tests.bad_input.strategies import Answer
from tests.security.helpers import BATCH_TO_GENERATION, CLIENT_TOKEN, bearer
from tests.support import tcp_proxy
from tests.support.checkout import ROOT
from tests.support.demo_catalog import seed_combination, seed_item_parameters, seed_job_request
from tests.support.reflection_client import ReflectionClient
from tests.support.services import assert_serving, running_services, test_settings

DOCS = ROOT / "docs" / "limits.md"
AUTH_OFF_WARNING = "{}: auth is OFF (AUTH_TOKENS unset): accepting local callers only"
GENERATION_SERVICES = [
    "convgen.v1.CatalogService",
    "convgen.v1.GenerationService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
]
BATCH_SERVICES = [
    "convgen.v1.BatchService",
    "convgen.v1.DatasetService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
]


def auth_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of the records the auth module logged."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "convgen.rpc.auth"]


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this host that is neither loopback nor link-local, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET:
                ip = ipaddress.IPv4Address(address.address)
                if not (ip.is_loopback or ip.is_link_local):
                    return str(ip)
    return None


class _ConnectingFrom:
    """The asyncio module, except that open_connection binds the local end of the connection to source."""

    def __init__(self, source: str) -> None:
        self._source = source

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def open_connection(
        self, host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, local_addr=(self._source, 0), **kwargs)


@asynccontextmanager
async def reached_from(source: str, port: int, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to 127.0.0.1:port whose connections arrive from source: nothing leaves the host or listens on it."""
    # A TcpProxy on 127.0.0.1 whose upstream sockets are bound to source, so the server sees that peer address.
    monkeypatch.setattr(tcp_proxy, "asyncio", _ConnectingFrom(source))
    async with (
        tcp_proxy.TcpProxy("127.0.0.1", port) as proxy,
        grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel,
    ):
        yield channel


async def test_with_auth_off_the_services_log_it_serve_loopback_and_refuse_other_addresses(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without AUTH_TOKENS each service logs a warning, serves loopback callers and refuses a non-loopback peer."""
    caplog.set_level(logging.WARNING, logger="convgen.rpc.auth")
    async with running_services(test_settings(database_url, tmp_path)) as services:
        assert auth_warnings(caplog) == [
            (logging.WARNING, AUTH_OFF_WARNING.format("generation")),
            (logging.WARNING, AUTH_OFF_WARNING.format("batch")),
        ]
        personas = await services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest())
        assert len(personas.personas) == 3
        jobs = await services.batch_stub.ListBatchJobs(batch_pb2.ListBatchJobsRequest())
        assert list(jobs.batch_jobs) == []

        source = non_loopback_ipv4()
        if source is None:
            pytest.skip("this host has no non-loopback IPv4 address to call from")
        assert services.generation is not None
        try:
            _, probe = await asyncio.open_connection("127.0.0.1", services.generation.port, local_addr=(source, 0))
        except OSError as error:
            pytest.skip(f"this host does not route {source} -> 127.0.0.1 ({error})")
        probe.close()
        await probe.wait_closed()
        assert services.generation is not None
        assert services.batch is not None
        remote_calls: list[tuple[int, Callable[[grpc.aio.Channel], Any]]] = [
            (
                services.generation.port,
                lambda channel: catalog_pb2_grpc.CatalogServiceStub(channel).ListPersonas(
                    catalog_pb2.ListPersonasRequest()
                ),
            ),
            (
                services.batch.port,
                lambda channel: batch_pb2_grpc.BatchServiceStub(channel).ListBatchJobs(
                    batch_pb2.ListBatchJobsRequest()
                ),
            ),
        ]
        for port, call in remote_calls:
            async with reached_from(source, port, monkeypatch) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(channel)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert caught.value.details() == (
                    "auth is off on this server (AUTH_TOKENS unset), so only local callers are accepted"
                )
                # Health stays open (AUTH_OPEN_HEALTH_AND_REFLECTION), to remote callers too.
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING


def _services_with_tokens(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return test_settings(database_url, tmp_path, auth_tokens=CLIENT_TOKEN, **overrides)


async def test_under_auth_health_and_reflection_stay_open_by_default(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With AUTH_TOKENS set, both services answer health and list their services by reflection without a token."""
    caplog.set_level(logging.WARNING, logger="convgen.rpc.auth")
    async with running_services(_services_with_tokens(database_url, tmp_path)) as services:
        assert auth_warnings(caplog) == []
        for channel, names in (
            (services.generation_channel, GENERATION_SERVICES),
            (services.batch_channel, BATCH_SERVICES),
        ):
            assert channel is not None
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert await ReflectionClient(channel).list_services() == names
        # Auth is really on: the services themselves still need the token.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_closing_health_and_reflection_makes_them_require_a_token(database_url: str, tmp_path: Path) -> None:
    """AUTH_OPEN_HEALTH_AND_REFLECTION=false makes health and reflection UNAUTHENTICATED without a token on both."""
    settings = _services_with_tokens(database_url, tmp_path, auth_open_health_and_reflection=False)
    async with running_services(settings) as services:
        for channel, names in (
            (services.generation_channel, GENERATION_SERVICES),
            (services.batch_channel, BATCH_SERVICES),
        ):
            assert channel is not None
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused_health:
                await health.Check(health_pb2.HealthCheckRequest())
            assert refused_health.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as refused_reflection:
                await ReflectionClient(channel).list_services()
            assert refused_reflection.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert refused_reflection.value.details() == "missing bearer token in the authorization metadata"
            ok = await health.Check(health_pb2.HealthCheckRequest(), metadata=bearer(CLIENT_TOKEN))
            assert ok.status == health_pb2.HealthCheckResponse.SERVING
            assert await ReflectionClient(channel, bearer(CLIENT_TOKEN)).list_services() == names


# --- request size ----------------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


UNKNOWN_FIELD_KEY = _varint(1000 << 3 | 2)  # field 1000, length-delimited: no convgen request defines it


M = TypeVar("M", bound=Message)


def of_wire_size(size: int, build: Callable[[int], M]) -> M:
    """build(n) for the n whose serialized size is exactly size bytes."""
    n = size
    for _ in range(8):
        message = build(n)
        if message.ByteSize() == size:
            return message
        n += size - message.ByteSize()
    raise AssertionError(f"no message of exactly {size} bytes")


def list_personas_padded(n: int) -> catalog_pb2.ListPersonasRequest:
    """A ListPersonasRequest carrying an n-byte unknown field (kept and sent by protobuf, ignored by the server)."""
    return catalog_pb2.ListPersonasRequest.FromString(UNKNOWN_FIELD_KEY + _varint(n) + b"x" * n)


async def test_a_request_over_the_message_limit_is_resource_exhausted_and_one_at_it_is_served(
    database_url: str, tmp_path: Path
) -> None:
    """A request of GRPC_MAX_MESSAGE_BYTES+1 gets RESOURCE_EXHAUSTED; one of exactly the limit reaches convgen."""
    async with running_services(test_settings(database_url, tmp_path)) as services:
        limit = services.settings.grpc_max_message_bytes
        assert limit == Settings.model_fields["grpc_max_message_bytes"].default
        calls: list[tuple[Any, Callable[[int], Message]]] = [
            (services.catalog_stub.ListPersonas, list_personas_padded),
            (
                services.generation_stub.GenerateConversation,
                lambda n: generation_pb2.GenerateConversationRequest(
                    parameters=seed_item_parameters(), request_id="r" * n
                ),
            ),
            (services.batch_stub.CreateBatchJob, lambda n: seed_job_request(request_id="r" * n)),
        ]
        for method, build in calls:
            with pytest.raises(grpc.aio.AioRpcError) as over:
                await method(of_wire_size(limit + 1, build))
            assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # gRPC's own text; grpcio 1.85 prefixes it with "SERVER: " (the side that refused it).
            expected = re.escape(f"Received message larger than max ({limit + 1} vs. {limit})")
            assert re.fullmatch(f"(SERVER: )?{expected}", over.value.details() or ""), over.value.details()

        # At the limit: ListPersonas is served; the other two reach validation, which names the long field.
        personas = await services.catalog_stub.ListPersonas(of_wire_size(limit, list_personas_padded))
        assert len(personas.personas) == 3
        for method, build in calls[1:]:
            request = of_wire_size(limit, build)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await method(request)
            answer = Answer.of_error(invalid.value)
            length = len(request.request_id)  # type: ignore[attr-defined]
            assert (answer.code, answer.message) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request_id: is {length} characters long; the limit is 200",
            )
            assert [v.field for v in answer.violations()] == ["request_id"]

        jobs = await services.batch_stub.ListBatchJobs(batch_pb2.ListBatchJobsRequest())
        assert list(jobs.batch_jobs) == []
        await assert_serving(services)


def test_docs_state_the_settings_defaults_for_sizes_and_page_caps() -> None:
    """docs/limits.md's settings table, message-size text and page_size caps match the Settings defaults."""
    text = DOCS.read_text(encoding="utf-8")
    fields = Settings.model_fields
    table = dict(re.findall(r"^\| `([A-Z_]+)` \| (\d+)", text, flags=re.MULTILINE))
    assert set(table) >= {"GRPC_MAX_MESSAGE_BYTES", "MAX_PAGE_SIZE", "BATCH_MAX_ITEMS"}
    for name, documented in table.items():
        assert int(documented) == fields[name.lower()].default, name

    message_bytes = fields["grpc_max_message_bytes"]
    minimum = next(m.ge for m in message_bytes.metadata if hasattr(m, "ge"))
    assert f"| {message_bytes.default} (4 MiB; at least {minimum}) |" in text
    assert f'"Received message larger than max (N vs. {message_bytes.default})"' in text

    max_page = fields["max_page_size"].default
    caps = re.findall(r"`page_size` 0 \((\d+)\) \.\. (\d+)", text)
    assert len(caps) == 5  # ListConversations, the catalog Lists, ListBatchJobs, ListBatchItems, ListExports
    assert {int(cap) for _, cap in caps} == {max_page}
    assert f"`page_size: must be at most {max_page} (got {max_page + 1})`" in text


# --- log redaction ---------------------------------------------------------------------------------------------------

API_KEY = "sk-ant-api03-REDACT-me-5e2d9c"
TOKEN = "bearer-REDACT-token-0b7f"


@contextmanager
def json_log(secrets: list[str]) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the handler configure_logging builds (JSON, redacting secrets) into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: lg.level for name, lg in root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    try:
        configure_logging(level="DEBUG", fmt="json", secrets=secrets)
        (handler,) = root.handlers
    finally:
        # configure_logging sets up the whole process; put back what pytest and other tests rely on.
        for installed in root.handlers[:]:
            root.removeHandler(installed)
        for saved in handlers:
            root.addHandler(saved)
        root.setLevel(level)
        for name, lg in root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    logger = logging.getLogger("tests.security.redaction")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def entries(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The JSON objects logged, one per line."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_secrets_in_messages_args_and_extra_fields_are_redacted_in_the_json_output() -> None:
    """A configured API key and bearer token become [REDACTED] in the message text, its args and `extra` strings."""
    with json_log([API_KEY, TOKEN]) as (logger, buffer):
        logger.info("calling the API with key " + API_KEY)
        logger.warning("retrying with %s and key=%r", f"Bearer {TOKEN}", API_KEY)
        logger.info("outgoing call", extra={"api_key": API_KEY, "authorization": f"Bearer {TOKEN}", "attempt": 2})
    first, second, third = entries(buffer)
    assert first["msg"] == f"calling the API with key {REDACTED}"
    assert second["msg"] == f"retrying with Bearer {REDACTED} and key='{REDACTED}'"
    assert (third["msg"], third["api_key"], third["authorization"], third["attempt"]) == (
        "outgoing call",
        REDACTED,
        f"Bearer {REDACTED}",
        2,
    )
    assert API_KEY not in buffer.getvalue()
    assert TOKEN not in buffer.getvalue()


def test_only_whole_secrets_are_redacted_so_a_prefix_alone_stays_visible() -> None:
    """Only whole secret values are replaced: a key prefix logged on its own, or a secret under 4 characters, stays."""
    with json_log([API_KEY, "abc"]) as (logger, buffer):
        logger.info("key starts %s; full key %s", API_KEY[:12], API_KEY)
        logger.info("short secret abc")
    first, second = entries(buffer)
    assert first["msg"] == f"key starts {API_KEY[:12]}; full key {REDACTED}"
    assert second["msg"] == "short secret abc"


@pytest.mark.parametrize("where", ["extra dict", "log context"])
def test_secrets_inside_non_string_fields_are_redacted(where: str) -> None:
    """A token inside a dict-valued `extra` field or a log_context field is redacted too."""
    with json_log([TOKEN]) as (logger, buffer):
        if where == "extra dict":
            logger.info("outgoing call", extra={"headers": {"authorization": f"Bearer {TOKEN}"}})
        else:
            with log_context(caller=f"Bearer {TOKEN}"):
                logger.info("outgoing call")
    assert TOKEN not in buffer.getvalue()


# --- the batch service's own token -----------------------------------------------------------------------------------


async def test_the_batch_service_presents_generation_auth_token_which_the_client_token_could_not_replace(
    database_url: str, tmp_path: Path
) -> None:
    """Generation accepts only the batch's token, batch only the client's: a job completes, so batch sent its own."""
    settings = test_settings(database_url, tmp_path, auth_tokens=BATCH_TO_GENERATION)
    overrides = {"auth_tokens": CLIENT_TOKEN, "generation_auth_token": BATCH_TO_GENERATION}
    async with running_services(settings, batch_overrides=overrides) as services:
        # The tokens are not interchangeable: each service refuses the other's.
        for call in (
            services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest(), metadata=bearer(CLIENT_TOKEN)),
            services.batch_stub.ListBatchJobs(batch_pb2.ListBatchJobsRequest(), metadata=bearer(BATCH_TO_GENERATION)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert (refused.value.code(), refused.value.details()) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid bearer token",
            )

        # The client library sends CLIENT_TOKEN on every call, the stream included.
        client = ConvgenClient.from_channels(batch_channel=services.batch_channel, token=CLIENT_TOKEN)
        job = await client.create_batch_job(combination=seed_combination())
        async with asyncio.timeout(60):
            async for _ in client.watch_batch_job(job.id):
                pass
        done = await client.get_batch_job(job.id)
        assert (done.state, done.completed_items, done.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8, 0)
