"""A PostgreSQL server for tests and benchmarks: DATABASE_URL when set, else an ephemeral embedded one; every
database is cloned from a migrated template that holds the demo catalog."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped]

from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file
from convgen.db.embedded import EmbeddedPostgres, start_embedded_postgres
from convgen.db.migrations import migrate

# Clones of the template kept in the making by fresh_database.
CLONES_AHEAD = 3

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


TemplateStep = Callable[["asyncpg.Connection[Any]"], Awaitable[None]]
"""Adds to a template database after the migrations and the demo catalog (e.g. the benchmarks' larger catalog)."""


async def create_template_database(admin_dsn: str, name: str, extend: TemplateStep | None = None) -> str:
    """Creates a database, migrates it, loads the demo catalog and runs extend on it; returns its DSN."""
    await execute_as_admin(admin_dsn, f'CREATE DATABASE "{name}"')
    dsn = dsn_for_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        catalog, _ = read_catalog_file(packaged_catalog_path())
        await load_catalog(conn, catalog)
        if extend is not None:
            await extend(conn)
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
class PostgresServer:
    """A server plus a migrated template database with the demo catalog loaded; databases are clones of it."""

    admin_dsn: str
    template: str
    embedded: EmbeddedPostgres | None
    prefix: str = "convgen_test"
    tmpdir: Path | None = None
    databases: list[str] = field(default_factory=list)
    """Databases made by create_database and not dropped yet (dropped by close on an external server)."""
    postmaster_pid: int | None = None
    """The embedded server's postmaster pid when it started (None for an external server)."""
    _clones_ahead: collections.deque[asyncio.Task[str]] = field(default_factory=collections.deque)

    @classmethod
    async def start(
        cls,
        *,
        server_settings: Mapping[str, str] = TEST_SERVER_SETTINGS,
        prefix: str = "convgen_test",
        extend_template: TemplateStep | None = None,
    ) -> PostgresServer:
        """Starts (or connects to) the server and builds the template database."""
        external = os.environ.get("DATABASE_URL")
        embedded = None
        tmpdir = None
        if external:
            admin_dsn = external
        else:
            tmpdir = Path(tempfile.mkdtemp(prefix=f"{prefix.replace('_', '-')}-pg-"))
            embedded = await asyncio.to_thread(
                start_embedded_postgres, tmpdir / "pgdata", ephemeral=True, server_settings=server_settings
            )
            admin_dsn = embedded.dsn
        server = cls(admin_dsn, f"{prefix}_template_{uuid.uuid4().hex[:8]}", embedded, prefix, tmpdir)
        server.postmaster_pid = _postmaster_pid(embedded)
        try:
            await create_template_database(admin_dsn, server.template, extend_template)
        except BaseException:
            await server.close()
            raise
        return server

    async def create_database(self, *, empty: bool = False) -> str:
        """A fresh database cloned from the template (or empty); returns its DSN."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        dsn = await clone_database(self.admin_dsn, "template0" if empty else self.template, name)
        self.databases.append(name)
        return dsn

    async def fresh_database(self) -> str:
        """Like create_database, but cloned ahead of time: CLONES_AHEAD clones are kept in the making.

        A clone waits on the server more than it works (a few tenths of a second each on a busy machine, one after
        the other; several at once take hardly longer than one), so the clones a test suite needs are made
        concurrently, while the tests before them run.
        """
        while len(self._clones_ahead) <= CLONES_AHEAD:
            self._clones_ahead.append(asyncio.ensure_future(self.create_database()))
        return await self._clones_ahead.popleft()

    async def drop_database(self, dsn: str) -> None:
        """Drops a database made by create_database, disconnecting its sessions."""
        name = database_name(dsn)
        await execute_as_admin(self.admin_dsn, drop_statement(name))
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    async def close(self) -> None:
        """Stops an embedded server (deleting its data), or drops what this run created on an external one."""
        while self._clones_ahead:
            with contextlib.suppress(Exception):
                await self._clones_ahead.popleft()  # finished, so that its database is in self.databases
        if self.embedded is not None:
            await asyncio.to_thread(self._stop_embedded)
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            return
        await execute_as_admin(self.admin_dsn, *(drop_statement(name) for name in [*self.databases, self.template]))

    def _stop_embedded(self) -> None:
        """Stops the embedded server (the library deletes its data), then makes sure its postmaster is gone.

        The fallback is for a server the library no longer recognises as its own: then its cleanup deletes the data
        directory and leaves the postmaster running, which a SIGINT (fast shutdown) by pid ends.
        """
        assert self.embedded is not None
        with contextlib.suppress(Exception):
            self.embedded.close()
        if self.postmaster_pid is None:
            return
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(self.postmaster_pid)
            if str(self.embedded.pgdata) in " ".join(postmaster.cmdline()):
                postmaster.send_signal(signal.SIGINT)
                postmaster.wait(15)


def _postmaster_pid(embedded: EmbeddedPostgres | None) -> int | None:
    """The pid in the embedded server's postmaster.pid (None when there is no embedded server or no file)."""
    if embedded is None:
        return None
    try:
        return int((embedded.pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
