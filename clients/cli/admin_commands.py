"""Operator commands: the server-side ones (serve, migrate, catalog load; in server_commands) and health."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.cli import catalog_commands as catalog_list
from convgen.settings import Settings
from server_commands import commands as server


def register(commands: Any) -> None:
    """Adds serve, migrate, catalog load and health."""
    serve = commands.add_parser("serve", help="run a service until SIGTERM/SIGINT")
    serve.add_argument("service", choices=server.SERVICES, help="which service (all = both, one process)")
    serve.set_defaults(handler=lambda args: server.serve(args.service))

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(handler=lambda args: server.migrate())

    catalog = commands.add_parser("catalog", help="manage the catalog")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    load = catalog_commands.add_parser("load", help="load a catalog file and the built-in prompt templates")
    load.add_argument("file", nargs="?", type=Path, help="catalog JSON (default: the packaged demo catalog)")
    load.set_defaults(handler=lambda args: server.load_catalog_file(args.file))
    catalog_list.register_list(catalog_commands)

    health = commands.add_parser("health", help="check a service through grpc.health.v1 (exit 0 when SERVING)")
    health.add_argument("--target", required=True, help="host:port of the service")
    health.add_argument("--service", default="", help="service name to check (default: the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(handler=_health)


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
