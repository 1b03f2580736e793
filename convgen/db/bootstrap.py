"""Opens the database a process uses: DATABASE_URL, or an embedded PostgreSQL under the data directory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from convgen.db.database import Database
from convgen.db.embedded import EmbeddedPostgres, start_embedded_postgres
from convgen.db.migrations import migrate
from convgen.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class DatabaseHandle:
    """A migrated pool, and the embedded server behind it when this process started one."""

    db: Database
    dsn: str
    embedded: EmbeddedPostgres | None

    async def close(self) -> None:
        """Closes the pool (the embedded server stops when the last process using it exits)."""
        await self.db.close()


async def resolve_dsn(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL, or the DSN of an embedded server started (or joined) under CONVGEN_DATA_DIR/pgdata."""
    if settings.database_url:
        return settings.database_url, None
    pgdata = settings.convgen_data_dir / "pgdata"
    embedded = await asyncio.to_thread(start_embedded_postgres, pgdata)
    logger.info("DATABASE_URL not set: using embedded PostgreSQL in %s", pgdata)
    return embedded.dsn, embedded


async def open_database(settings: Settings, *, run_migrations: bool = True) -> DatabaseHandle:
    """Connects a pool and applies pending migrations."""
    dsn, embedded = await resolve_dsn(settings)
    db = await Database.connect(dsn, min_size=settings.database_pool_min_size, max_size=settings.database_pool_max_size)
    if run_migrations:
        async with db.connection() as conn:
            applied = await migrate(conn)
        if applied:
            logger.info("applied %d migration(s)", len(applied))
    return DatabaseHandle(db=db, dsn=dsn, embedded=embedded)
