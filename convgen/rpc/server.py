"""A grpc.aio server with health checking, reflection, interceptors, TLS, and graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from convgen.errors import FailedPrecondition
from convgen.rpc.interceptors import ErrorInterceptor
from convgen.settings import Settings

logger = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
# What a servicer method receives (the servicers' methods do not depend on its request and response types).
Context: TypeAlias = grpc.aio.ServicerContext[object, object]


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel options every convgen server uses."""
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        # Two servers must never share a port silently (Linux defaults SO_REUSEPORT on in gRPC).
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured (mutual TLS when a client CA is too)."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise FailedPrecondition("TLS needs both TLS_CERT_FILE and TLS_KEY_FILE")
    key = settings.tls_key_file.read_bytes()
    cert = settings.tls_cert_file.read_bytes()
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class ServiceHost:
    """Hosts servicers on one port with health and reflection; stops gracefully."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        key: str,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.settings = settings
        self.name = name
        self.key = key
        # The error interceptor comes first so it wraps (and maps the errors of) everything after it.
        self.server = grpc.aio.server(
            interceptors=[ErrorInterceptor(), *interceptors], options=server_options(settings)
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self.port = 0

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, service_name: str) -> None:
        """Registers a servicer (with its generated add_*_to_server function) under its full service name."""
        register(servicer, self.server)
        self._service_names.append(service_name)

    async def start(self, port: int) -> int:
        """Binds (port 0 picks a free one), starts serving and marks every service SERVING; returns the port."""
        reflection.enable_server_reflection(
            [*self._service_names, HEALTH_SERVICE, reflection.SERVICE_NAME], self.server
        )
        address = f"{self.settings.listen_host}:{port}"
        credentials = server_credentials(self.settings)
        bound = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        if bound == 0:
            raise FailedPrecondition(f"{self.name}: could not bind {address}")
        self.port = bound
        await self.server.start()
        for service in ["", *self._service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.ready_file is not None:
            with self.settings.ready_file.open("a", encoding="utf-8") as ready:
                ready.write(f"{self.key} {self.settings.listen_host}:{bound}\n")
        logger.info(
            "%s listening on %s:%d (%s)",
            self.name,
            self.settings.listen_host,
            bound,
            "TLS" if credentials else "plaintext",
        )
        return bound

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, refuses new calls and lets in-flight calls finish within grace seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        logger.info("%s stopped", self.name)


def freeze_startup_objects() -> None:
    """Takes everything allocated while starting out of the garbage collector's full passes."""
    # Modules, protobuf descriptors, the SDK's models and gRPC's objects never die, but every full collection
    # walked them: 70-130 ms pauses of the event loop every few seconds under load (gc.freeze, as Instagram does).
    gc.collect()
    gc.freeze()


async def wait_for_termination_signal() -> str:
    """Returns the name of the first SIGTERM or SIGINT this process receives."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not received.done():
            received.set_result(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
