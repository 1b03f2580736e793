"""Shared CLI plumbing: connection options, running a command with a client, turning errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from pydantic import ValidationError

from clients.cli.output import Output, print_error
from clients.client import ConvgenClient
from clients.errors import ConvgenRpcError
from convgen.errors import ConvgenError
from convgen.rpc.status import status_code_for
from convgen.settings import Settings

ClientCommand = Callable[[argparse.Namespace, ConvgenClient, Output], Awaitable[int]]
LocalCommand = Callable[[argparse.Namespace, Output], Awaitable[int]]
EXIT_INTERRUPTED = 130


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Adds the global options; on subcommands (suppress) they only override what was given before the command."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--generation-target",
        metavar="HOST:PORT",
        default=default(None),
        help="generation service (also serves the catalog); default GENERATION_TARGET (localhost:50051)",
    )
    group.add_argument(
        "--batch-target",
        metavar="HOST:PORT",
        default=default(None),
        help="batch service; default localhost:BATCH_PORT (localhost:50052)",
    )
    group.add_argument(
        "--token", default=default(None), help="bearer token; default the first token of AUTH_TOKENS, if set"
    )
    group.add_argument("--tls-ca", metavar="PEM", default=default(None), help="CA the servers' certificates chain to")
    group.add_argument("--tls-cert", metavar="PEM", default=default(None), help="client certificate (mutual TLS)")
    group.add_argument("--tls-key", metavar="PEM", default=default(None), help="client private key (mutual TLS)")
    group.add_argument(
        "--timeout", type=float, metavar="SECONDS", default=default(None), help="deadline of each call (default 30)"
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON (JSON lines for streams)"
    )


def connection_parent() -> argparse.ArgumentParser:
    """A parent parser with the global options, so they may also follow the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_options(parent, suppress=True)
    return parent


def settings_or_defaults() -> Settings:
    """Settings from the environment; the built-in defaults when the environment does not validate."""
    try:
        return Settings()
    except ValidationError:
        return Settings.model_construct()


def first_token(settings: Settings) -> str | None:
    """The first token of AUTH_TOKENS, or None."""
    if settings.auth_tokens is None:
        return None
    tokens = [t.strip() for t in settings.auth_tokens.get_secret_value().split(",") if t.strip()]
    return tokens[0] if tokens else None


async def connect(args: argparse.Namespace) -> ConvgenClient:
    """A client for the targets, token and TLS files the options (or the settings) name."""
    settings = settings_or_defaults()
    return await ConvgenClient.connect(
        args.generation_target or settings.generation_target,
        args.batch_target or f"localhost:{settings.batch_port}",
        token=args.token or first_token(settings),
        tls_ca_file=args.tls_ca,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        default_timeout=args.timeout if args.timeout is not None else 30.0,
    )


def run_async(args: argparse.Namespace, body: Callable[[Output], Awaitable[int]]) -> int:
    """Runs a command body on a fresh event loop; errors print 'error: CODE: message' and give exit code 1."""
    out = Output(json_mode=bool(getattr(args, "json", False)))
    try:
        return asyncio.run(_guarded(body, out))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _guarded(body: Callable[[Output], Awaitable[int]], out: Output) -> int:
    try:
        return await body(out)
    except ConvgenRpcError as error:
        print_error(error)
    except ConvgenError as error:
        print_error(ConvgenRpcError(status_code_for(error), error.message))
    except ValidationError as error:
        print_error(ConvgenRpcError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid settings: {error}"))
    except Exception as error:  # noqa: BLE001 - a command line prints every failure as one line, never a traceback
        print_error(ConvgenRpcError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"))
    return 1


def with_client(command: ClientCommand) -> Callable[[argparse.Namespace], int]:
    """A parser handler that connects a client, runs the command and closes the client."""

    def handler(args: argparse.Namespace) -> int:
        async def body(out: Output) -> int:
            async with await connect(args) as client:
                return await command(args, client, out)

        return run_async(args, body)

    return handler


def local(command: LocalCommand) -> Callable[[argparse.Namespace], int]:
    """A parser handler for a command that needs no client (it starts what it needs itself)."""

    def handler(args: argparse.Namespace) -> int:
        return run_async(args, lambda out: command(args, out))

    return handler
