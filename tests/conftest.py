"""Fixtures every test can use: a real PostgreSQL (one database per test, cloned from a migrated template), moto's
S3 over HTTP and the local Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from convgen.db.database import Database
from tests.support.messages_api import FakeMessagesApi
from tests.support.moto_s3 import MotoS3Server
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresServer]:
    """The test PostgreSQL server with its template database."""
    server = await PostgresServer.start()
    yield server
    await server.close()


@pytest.fixture
async def database_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database with the demo catalog, dropped after the test."""
    dsn = await postgres.fresh_database()
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture
async def empty_database(postgres: PostgresServer) -> AsyncIterator[str]:
    """DSN of a fresh, empty database (no migrations, no catalog), dropped after the test."""
    dsn = await postgres.create_database(empty=True)
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A pool on the test's database."""
    database = await Database.connect(database_url, min_size=1, max_size=10)
    yield database
    await database.close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """moto's S3 over HTTP on an OS-assigned port, shared by the session."""
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeMessagesApi]:
    """A local server speaking the Anthropic Messages API, with fault injection."""
    async with FakeMessagesApi() as api:
        yield api
