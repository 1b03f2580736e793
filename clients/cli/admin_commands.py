"""Operator commands: serve, migrate, catalog load, health."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.cli import catalog_commands as catalog_list
from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file
from convgen.db.bootstrap import open_database
from convgen.errors import ConvgenError
from convgen.logging_setup import configure_logging
from convgen.rpc.status import status_code_for
from convgen.settings import Settings

logger = logging.getLogger(__name__)


def register(commands: Any) -> None:
    """Adds serve, migrate and catalog load."""
    serve = commands.add_parser("serve", help="run a service until SIGTERM/SIGINT")
    serve.add_argument(
        "service", choices=["generation", "batch", "all"], help="which service (all = both, one process)"
    )
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(handler=_migrate)

    catalog = commands.add_parser("catalog", help="manage the catalog")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    load = catalog_commands.add_parser("load", help="load a catalog file and the built-in prompt templates")
    load.add_argument("file", nargs="?", type=Path, help="catalog JSON (default: the packaged demo catalog)")
    load.set_defaults(handler=_catalog_load)
    catalog_list.register_list(catalog_commands)

    health = commands.add_parser("health", help="check a service through grpc.health.v1 (exit 0 when SERVING)")
    health.add_argument("--target", required=True, help="host:port of the service")
    health.add_argument("--service", default="", help="service name to check (default: the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(handler=_health)


def _settings() -> Settings:
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    return settings


def _run(coro: Any) -> int:
    try:
        asyncio.run(coro)
    except ConvgenError as error:
        print(f"error: {status_code_for(error).name}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.service == "generation":
        from generation_service.app import serve  # noqa: PLC0415 - import only the service being started

        return _run(serve(settings))
    if args.service == "batch":
        from batch_service.app import serve  # noqa: PLC0415 - import only the service being started

        return _run(serve(settings))
    from clients.cli.serve_all import serve_all  # noqa: PLC0415 - import only the services being started

    return _run(serve_all(settings))


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings()

    async def migrate() -> None:
        handle = await open_database(settings)
        await handle.close()
        print("database schema is up to date")

    return _run(migrate())


def _catalog_load(args: argparse.Namespace) -> int:
    settings = _settings()
    path = args.file or packaged_catalog_path()

    async def load() -> None:
        catalog, _ = read_catalog_file(path)
        handle = await open_database(settings)
        try:
            async with handle.db.connection() as conn:
                summary = await load_catalog(conn, catalog)
        finally:
            await handle.close()
        print(
            f"loaded {path}: {summary.personas} personas, {summary.emotional_arcs} emotional arcs, "
            f"{summary.training_topics} training topics, {summary.templates} prompt templates"
        )

    return _run(load())


def _health(args: argparse.Namespace) -> int:
    """Used by container health checks: a plain gRPC health check, with the token when AUTH_TOKENS is set."""
    settings = Settings()
    tokens = sorted(settings.accepted_tokens)
    metadata = (("authorization", f"Bearer {tokens[0]}"),) if tokens else ()

    async def check() -> str:
        async with grpc.aio.insecure_channel(args.target) as channel:
            request = health_pb2.HealthCheckRequest(service=args.service)
            response = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout, metadata=metadata)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    try:
        status = asyncio.run(check())
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1
