"""The benchmarks' PostgreSQL: the test kit's server with production settings and a larger catalog in its template."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from bench.report import note
from tests.support.demo_catalog import CatalogIds
from tests.support.postgres import PostgresServer, dsn_for_database

# PostgreSQL as convgen runs it in production (the embedded server's own default), NOT the tests' fsync=off tuning:
# the benchmarks measure a durable system.
BENCH_SERVER_SETTINGS = {"max_connections": "300"}

# The bench catalog: the demo catalog plus extra personas and topics so that big jobs can be a plain combination.
BENCH_PERSONAS = 5
BENCH_TOPICS = 4000


async def extend_catalog(conn: asyncpg.Connection[Any]) -> None:
    """Adds personas and topics (copies of demo rows with new ids and keys) up to BENCH_PERSONAS / BENCH_TOPICS."""
    personas = await conn.fetch("SELECT * FROM personas ORDER BY persona_key")
    for n in range(BENCH_PERSONAS - len(personas)):
        source = personas[n % len(personas)]
        await conn.execute(
            """
            INSERT INTO personas (id, persona_key, name, archetype, age, occupation, income_range,
                                  communication_style, emotional_baseline)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            uuid.uuid4(),
            f"bench_persona_{n:02d}",
            f"{source['name']} (bench {n})",
            source["archetype"],
            source["age"],
            source["occupation"],
            source["income_range"],
            source["communication_style"],
            source["emotional_baseline"],
        )
    topics = await conn.fetch("SELECT topic_key, name, category FROM training_topics ORDER BY topic_key")
    extra = BENCH_TOPICS - len(topics)
    if extra > 0:
        rows = [
            (
                uuid.uuid4(),
                f"bench_topic_{n:05d}",
                f"{topics[n % len(topics)]['name']} (bench variant {n})",
                topics[n % len(topics)]["category"],
            )
            for n in range(extra)
        ]
        await conn.copy_records_to_table(
            "training_topics", records=rows, columns=["id", "topic_key", "name", "category"]
        )


async def start_bench_postgres() -> tuple[PostgresServer, CatalogIds]:
    """Starts (or connects to) the server, builds the bench template; returns the server and the template's ids."""
    server = await PostgresServer.start(
        server_settings=BENCH_SERVER_SETTINGS, prefix="convgen_bench", extend_template=extend_catalog
    )
    where = "the PostgreSQL server of DATABASE_URL" if server.embedded is None else f"embedded in {server.tmpdir}"
    note(f"PostgreSQL: {where}")
    try:
        catalog = await CatalogIds.of_database(dsn_for_database(server.admin_dsn, server.template))
    except BaseException:
        await server.close()
        raise
    return server, catalog
