"""Fixtures for client and CLI tests: the real services in-process (plain, TLS, mutual TLS), a ConvgenClient on
them, and the `convgen` command line run in-process against them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from clients import ConvgenClient
from clients.cli.main import main
from tests.clients.helpers import Pki, Result, secured_services
from tests.support.certificates import make_pki
from tests.support.postgres import PostgresServer
from tests.support.services import Services, running_services, test_settings

TempDirs = pytest.TempPathFactory


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Both services on OS-assigned ports, with the demo catalog loaded."""
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


@pytest.fixture
async def client(services: Services) -> AsyncIterator[ConvgenClient]:
    """A client connected to both services."""
    generation, batch = services.targets
    async with await ConvgenClient.connect(generation, batch) as connected:
        yield connected


@pytest.fixture
def cli(services: Services, capsys: pytest.CaptureFixture[str]) -> Callable[..., Awaitable[Result]]:
    """Runs `convgen ARGS` in-process (on its own thread and event loop) against the test's services."""
    generation, batch = services.targets

    async def run(*argv: str) -> Result:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["--generation-target", generation, "--batch-target", batch, *argv])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """(ca, server, client) certificates for the module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def module_database(postgres: PostgresServer) -> AsyncIterator[str]:
    """A fresh migrated database with the demo catalog, shared by the module's services."""
    dsn = await postgres.create_database()
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture(scope="module")
async def tls_services(module_database: str, pki: Pki, tmp_path_factory: TempDirs) -> AsyncIterator[Services]:
    """Both services over TLS (no client certificate asked) with AUTH_TOKENS set."""
    async with secured_services(module_database, tmp_path_factory.mktemp("tls"), pki, mutual=False) as running:
        yield running


@pytest.fixture(scope="module")
async def mtls_services(module_database: str, pki: Pki, tmp_path_factory: TempDirs) -> AsyncIterator[Services]:
    """Both services requiring a client certificate signed by the CA (mutual TLS), with AUTH_TOKENS set."""
    async with secured_services(module_database, tmp_path_factory.mktemp("mtls"), pki, mutual=True) as running:
        yield running
