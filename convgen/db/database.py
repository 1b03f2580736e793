"""The asyncpg pool wrapper: hands out connections and turns connectivity failures into DatabaseUnavailable."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from convgen.errors import Unavailable

logger = logging.getLogger(__name__)

# How long close() waits for connections in use before terminating them.
CLOSE_WAIT_SECONDS = 10.0

# What repositories receive: a pooled connection, or a direct one (migrations, tests).
if TYPE_CHECKING:
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.Connection | PoolConnectionProxy

# Errors that mean "the database is not reachable right now", as opposed to a bad statement.
CONNECTIVITY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
)


class DatabaseUnavailable(Unavailable):
    """PostgreSQL could not be reached or dropped the connection."""

    default_reason = "DATABASE_UNAVAILABLE"


def is_connectivity_error(error: BaseException) -> bool:
    """True when an exception means PostgreSQL is unreachable rather than a statement failing."""
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        # After a server restart a connection that was mid-operation is left in a state asyncpg cannot continue
        # from ("cannot switch to state ..."): the connection is gone, whatever the message says.
        return True
    if isinstance(error, asyncpg.InterfaceError):
        text = str(error)
        return "connection" in text or "closed" in text or "pool" in text
    return isinstance(error, CONNECTIVITY_ERRORS)


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool reset: convgen keeps no session state (no SET, no LISTEN on pooled connections), so skip RESET ALL."""


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """An asyncpg pool with error translation at the boundary."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 20) -> Database:
        """Opens a pool; fails with DatabaseUnavailable when PostgreSQL cannot be reached."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                # asyncpg's default reset costs a round trip per release; there is nothing to reset.
                reset=_keep_session,
                # Statements are prepared per connection; this bounds the cache and keeps plans reused.
                statement_cache_size=256,
                max_inactive_connection_lifetime=60.0,
            )
        except Exception as error:
            if is_connectivity_error(error):
                raise DatabaseUnavailable(f"database unavailable: {_describe(error)}") from error
            raise
        return cls(pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; connectivity failures inside the block become DatabaseUnavailable."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except Exception as error:
            if is_connectivity_error(error):
                raise DatabaseUnavailable(f"database unavailable: {_describe(error)}") from error
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside a transaction, committed when the block ends without error."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        """Closes the pool, waiting briefly for connections in use."""
        try:
            # asyncpg waits for every acquired connection to come back; a caller that never releases one must
            # not stall shutdown, so after a short wait the rest are terminated.
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.pool.close()
        except TimeoutError:
            logger.warning("database pool: connections still in use after %.0fs; terminating them", CLOSE_WAIT_SECONDS)
            self.pool.terminate()
        except Exception as error:
            if not is_connectivity_error(error):
                raise
            logger.warning("database pool closed with error: %s", _describe(error))


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
