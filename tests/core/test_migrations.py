"""Migrations: ordered, applied once even when processes start together, and edits to applied files are caught."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from convgen.db import migrations
from convgen.db.migrations import Migration, MigrationError, load_migrations, migrate
from tests.support.checkout import ROOT
from tests.support.processes import clean_environment, start_python_module


async def migrate_on_new_connection(dsn: str) -> list[Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_exactly_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate_on_new_connection(empty_database) for _ in range(5)))

    applied = [m.version for result in results for m in result]
    assert sorted(applied) == [m.version for m in load_migrations()], "each migration ran in exactly one process"
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in load_migrations()]
    assert {"conversations", "batch_items", "batch_jobs", "batch_job_events", "prompt_templates"} <= tables


async def test_two_migrate_processes_started_together_apply_each_file_once(empty_database: str) -> None:
    """Two `convgen migrate` processes at once on an empty database: both succeed, every file is applied once."""
    env = clean_environment({"DATABASE_URL": empty_database, "PYTHONPATH": str(ROOT)})
    processes = [await start_python_module("clients.cli.main", "migrate", env=env) for _ in range(2)]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, (out.decode(), err.decode())
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in load_migrations()]


async def test_a_second_run_applies_nothing(empty_database: str) -> None:
    assert len(await migrate_on_new_connection(empty_database)) == len(load_migrations())
    assert await migrate_on_new_connection(empty_database) == []


async def test_an_edited_applied_migration_is_refused(empty_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await migrate_on_new_connection(empty_database)
    original = load_migrations()
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited\n") if m.version == 2 else m for m in original]
    monkeypatch.setattr(migrations, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError) as caught:
        await migrate_on_new_connection(empty_database)
    assert "0002_conversations was changed after it was applied" in caught.value.message


async def test_the_schema_keeps_the_seed_foreign_key(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        definition = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'batch_items_conversation_id_fkey'"
        )
    finally:
        await conn.close()
    assert definition == "FOREIGN KEY (conversation_id) REFERENCES conversations(id) ON DELETE CASCADE"
