"""`convgen serve`, `convgen migrate` and `convgen catalog load`: each reads the settings and returns an exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal

from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file
from convgen.db.bootstrap import open_database
from convgen.errors import ConvgenError
from convgen.logging_setup import configure_logging
from convgen.rpc.status import status_code_for
from convgen.settings import Settings

Service = Literal["generation", "batch", "all"]
SERVICES: tuple[Service, ...] = ("generation", "batch", "all")


def serve(service: Service) -> int:
    """Runs one service, or both in one process (all), until SIGTERM or SIGINT."""
    settings = _settings()
    if service == "generation":
        from generation_service.app import serve as serve_generation  # noqa: PLC0415 - only the service started

        return _run(serve_generation(settings))
    if service == "batch":
        from batch_service.app import serve as serve_batch  # noqa: PLC0415 - only the service started

        return _run(serve_batch(settings))
    from server_commands.serve_all import serve_all  # noqa: PLC0415 - only the services started

    return _run(serve_all(settings))


def migrate() -> int:
    """Applies pending database migrations."""
    settings = _settings()

    async def run() -> None:
        handle = await open_database(settings)
        await handle.close()
        print("database schema is up to date")

    return _run(run())


def load_catalog_file(path: Path | None) -> int:
    """Loads a catalog file (default: the packaged demo catalog) and the built-in prompt templates."""
    settings = _settings()
    source = path or packaged_catalog_path()

    async def load() -> None:
        catalog, _ = read_catalog_file(source)
        handle = await open_database(settings)
        try:
            async with handle.db.connection() as conn:
                summary = await load_catalog(conn, catalog)
        finally:
            await handle.close()
        print(
            f"loaded {source}: {summary.personas} personas, {summary.emotional_arcs} emotional arcs, "
            f"{summary.training_topics} training topics, {summary.templates} prompt templates"
        )

    return _run(load())


def _settings() -> Settings:
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    return settings


def _run(coro: Coroutine[Any, Any, None]) -> int:
    try:
        asyncio.run(coro)
    except ConvgenError as error:
        print(f"error: {status_code_for(error).name}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
