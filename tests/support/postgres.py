"""A PostgreSQL server for tests: DATABASE_URL when set, else an ephemeral embedded one; databases from a template."""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file
from convgen.db.embedded import EmbeddedPostgres, start_embedded_postgres
from convgen.db.migrations import migrate

# Durability is not under test; these make CREATE DATABASE and commits fast.
TEST_SERVER_SETTINGS = {
    "max_connections": "500",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Runs one query on a fresh connection."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def dsn_for_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class PostgresForTests:
    """A server plus a migrated template database with the demo catalog loaded."""

    admin_dsn: str
    template: str
    embedded: EmbeddedPostgres | None

    @classmethod
    async def start(cls) -> PostgresForTests:
        """Starts (or connects to) the server and builds the template database."""
        external = os.environ.get("DATABASE_URL")
        embedded = None
        if external:
            admin_dsn = external
        else:
            pgdata = Path(tempfile.mkdtemp(prefix="convgen-test-pg-")) / "pgdata"
            embedded = start_embedded_postgres(pgdata, ephemeral=True, server_settings=TEST_SERVER_SETTINGS)
            admin_dsn = embedded.dsn
        template = f"convgen_template_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{template}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(dsn_for_database(admin_dsn, template))
        try:
            await migrate(conn)
            catalog, _ = read_catalog_file(packaged_catalog_path())
            await load_catalog(conn, catalog)
        finally:
            await conn.close()
        return cls(admin_dsn=admin_dsn, template=template, embedded=embedded)

    async def create_database(self, *, empty: bool = False) -> str:
        """A fresh database cloned from the template (or empty); returns its DSN."""
        name = f"convgen_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            source = "template0" if empty else self.template
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        finally:
            await admin.close()
        return dsn_for_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        """Drops a database made by create_database, disconnecting its sessions."""
        name = urlsplit(dsn).path.lstrip("/")
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def close(self) -> None:
        """Drops the template and stops an embedded server."""
        if self.embedded is not None:
            self.embedded.close()
            return
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await admin.close()
