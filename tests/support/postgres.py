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


async def execute_as_admin(admin_dsn: str, *statements: str) -> None:
    """Runs statements (CREATE or DROP DATABASE, which cannot run in a transaction) on a fresh connection."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


async def create_template_database(admin_dsn: str, name: str) -> str:
    """Creates a database, migrates it and loads the demo catalog; returns its DSN."""
    await execute_as_admin(admin_dsn, f'CREATE DATABASE "{name}"')
    dsn = dsn_for_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        catalog, _ = read_catalog_file(packaged_catalog_path())
        await load_catalog(conn, catalog)
    finally:
        await conn.close()
    return dsn


async def clone_database(admin_dsn: str, source: str, name: str) -> str:
    """A new database copied from source (a template); returns its DSN."""
    await execute_as_admin(admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return dsn_for_database(admin_dsn, name)


def database_name(dsn: str) -> str:
    """The database a DSN points at."""
    return urlsplit(dsn).path.lstrip("/")


def drop_statement(name: str) -> str:
    """DROP DATABASE that also disconnects the database's sessions."""
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


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
        await create_template_database(admin_dsn, template)
        return cls(admin_dsn=admin_dsn, template=template, embedded=embedded)

    async def create_database(self, *, empty: bool = False) -> str:
        """A fresh database cloned from the template (or empty); returns its DSN."""
        name = f"convgen_test_{uuid.uuid4().hex[:12]}"
        return await clone_database(self.admin_dsn, "template0" if empty else self.template, name)

    async def drop_database(self, dsn: str) -> None:
        """Drops a database made by create_database, disconnecting its sessions."""
        await execute_as_admin(self.admin_dsn, drop_statement(database_name(dsn)))

    async def close(self) -> None:
        """Drops the template and stops an embedded server."""
        if self.embedded is not None:
            self.embedded.close()
            return
        await execute_as_admin(self.admin_dsn, drop_statement(self.template))
