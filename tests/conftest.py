"""Shared fixtures: a real PostgreSQL (one database per test, cloned from a migrated template)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from convgen.db.database import Database
from tests.support.postgres import PostgresForTests


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresForTests]:
    """The test PostgreSQL server with its template database."""
    server = await PostgresForTests.start()
    yield server
    await server.close()


@pytest.fixture
async def database_url(postgres: PostgresForTests) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database with the demo catalog, dropped after the test."""
    dsn = await postgres.create_database()
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A pool on the test's database."""
    database = await Database.connect(database_url, min_size=1, max_size=10)
    yield database
    await database.close()
