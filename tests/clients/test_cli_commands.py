"""convgen commands through the entry point: migrate, catalog load, batch selection and steering, generate, flags."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from itertools import chain
from typing import Any

import asyncpg
import pytest

from convgen.catalog.loader import packaged_catalog_path, read_catalog_file
from convgen.db.migrations import load_migrations
from tests.clients.helpers import CLIENT_TOKEN, Result, set_arc_templates_active
from tests.support.certificates import Pem
from tests.support.postgres import PostgresServer
from tests.support.services import Services, running_services, test_settings

CATALOG, _ = read_catalog_file(packaged_catalog_path())
PERSONA_IDS = {p.persona_key: str(p.id) for p in CATALOG.personas}
ARCS = {a.arc_key: a for a in CATALOG.emotional_arcs}
TOPIC_IDS = {t.topic_key: str(t.id) for t in CATALOG.training_topics}


@pytest.fixture(scope="module")
async def services(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """Both services on a fresh database, shared by the module (the `cli` fixture runs commands against them)."""
    dsn = await postgres.create_database()
    try:
        async with running_services(test_settings(dsn, tmp_path_factory.mktemp("cli-data"))) as running:
            yield running
    finally:
        await postgres.drop_database(dsn)


# --- migrate and catalog load ---------------------------------------------------------------------------------------


@pytest.fixture
def pytest_logging() -> Iterator[None]:
    """migrate and catalog load set up the process's logging (as a service would); restores pytest's afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    named = [logger for logger in root.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    saved_levels = [(logger, logger.level) for logger in named]
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for logger, level in saved_levels:
        logger.setLevel(level)


async def row_counts(dsn: str) -> dict[str, int]:
    """Rows of every table in the public schema."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        return {table: await conn.fetchval(f'SELECT count(*) FROM "{table}"') for table in tables}
    finally:
        await conn.close()


@pytest.mark.usefixtures("pytest_logging")
async def test_migrate_and_catalog_load_on_an_empty_database_are_idempotent(
    cli: Any, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`migrate` creates the tables and `catalog load` the catalog on an empty database; reruns change nothing."""
    monkeypatch.setenv("DATABASE_URL", empty_database)
    assert await row_counts(empty_database) == {}

    migrated = await cli("migrate")
    assert migrated.code == 0, migrated.err
    assert "database schema is up to date" in migrated.out
    after_migrate = await row_counts(empty_database)
    assert {"personas", "emotional_arcs", "training_topics", "prompt_templates"} <= after_migrate.keys()
    assert {"conversations", "batch_jobs", "batch_items", "batch_job_events"} <= after_migrate.keys()
    assert after_migrate["schema_migrations"] == len(load_migrations())
    assert after_migrate["personas"] == after_migrate["prompt_templates"] == 0

    loaded = await cli("catalog", "load")
    assert loaded.code == 0, loaded.err
    after_load = await row_counts(empty_database)
    counts = (after_load["personas"], after_load["emotional_arcs"], after_load["training_topics"])
    assert counts == (len(CATALOG.personas), len(CATALOG.emotional_arcs), len(CATALOG.training_topics)) == (3, 8, 20)
    assert after_load["prompt_templates"] > 0
    assert (
        f"{counts[0]} personas, {counts[1]} emotional arcs, {counts[2]} training topics, "
        f"{after_load['prompt_templates']} prompt templates"
    ) in loaded.out

    for argv in (["migrate"], ["catalog", "load"]):
        again = await cli(*argv)
        assert again.code == 0, again.err
    assert await row_counts(empty_database) == after_load


# --- batch create with keys, steering, --json ---------------------------------------------------------------------


async def test_batch_create_with_keys_then_pause_resume_retry_with_json(cli: Any, services: Services) -> None:
    """Keys select the right items, each with its arc's tier; pause, resume, retry-failed, get and log print JSON."""
    topics = ["estate_planning_basics", "spending_priorities"]
    arcs = ["fear_to_confidence", "crisis_to_referral"]
    selection = ["--persona", "pragmatic_optimist", "--arc", arcs[0], "--arc", arcs[1], "--topic", topics[0]]
    created = await cli("--json", "batch", "create", *selection, "--topic", topics[1], "--no-start")
    assert created.code == 0, created.err
    job = created.json()
    assert (job["total_items"], job["state"]) == (4, "BATCH_JOB_STATE_QUEUED")

    items = (await cli("--json", "batch", "items", job["id"])).json()["items"]
    assert sorted(
        (i["parameters"]["persona_id"], i["parameters"]["emotional_arc_id"], i["parameters"]["training_topic_id"])
        for i in items
    ) == sorted(
        (PERSONA_IDS["pragmatic_optimist"], str(ARCS[arc].id), TOPIC_IDS[topic]) for arc in arcs for topic in topics
    )
    tiers = {i["parameters"]["emotional_arc_id"]: i["parameters"]["tier"] for i in items}
    assert tiers == {
        str(ARCS["fear_to_confidence"].id): "TIER_TEMPLATE",
        str(ARCS["crisis_to_referral"].id): "TIER_EDGE_CASE",
    }

    paused = await cli("--json", "batch", "pause", job["id"])
    assert paused.code == 0, paused.err
    assert paused.json()["state"] == "BATCH_JOB_STATE_PAUSED"

    # The edge-case arc's items fail while its templates are off, so retry-failed has something to re-queue.
    dsn = services.settings.database_url
    assert dsn is not None
    await set_arc_templates_active(dsn, "crisis_to_referral", False)
    try:
        resumed = await cli("--json", "batch", "resume", job["id"])
        assert resumed.code == 0, resumed.err
        assert resumed.json()["state"] == "BATCH_JOB_STATE_RUNNING"
        assert (await cli("batch", "watch", job["id"])).code == 1
    finally:
        await set_arc_templates_active(dsn, "crisis_to_referral", True)
    first_run = (await cli("--json", "batch", "get", job["id"])).json()
    assert (first_run["state"], first_run["completed_items"], first_run["failed_items"]) == (
        "BATCH_JOB_STATE_COMPLETED",
        2,
        2,
    )

    retried = await cli("--json", "batch", "retry-failed", job["id"])
    assert retried.code == 0, retried.err
    assert retried.json()["requeued_items"] == 2
    assert retried.json()["job"]["id"] == job["id"]
    assert (await cli("batch", "watch", job["id"])).code == 0
    done = await cli("--json", "batch", "get", job["id"])
    assert done.code == 0, done.err
    assert (done.json()["completed_items"], done.json()["failed_items"]) == (4, 0)

    log = await cli("--json", "batch", "log", job["id"])
    assert log.code == 0, log.err
    assert log.json()["blob"]["uri"].endswith(f"{job['id']}/log.txt")
    assert "4 items: 4 completed, 0 failed" in log.json()["text"]


async def test_batch_create_estimate_creates_nothing_and_update_changes_the_budget(cli: Any) -> None:
    """--estimate prints the estimate (realtime and provider batches) and creates no job; update sets a budget."""
    selection = ["--persona", "pragmatic_optimist", "--arc", "fear_to_confidence", "--topic", "estate_planning_basics"]
    before = (await cli("--json", "batch", "list", "--limit", "0")).json().get("batch_jobs", [])

    estimated = await cli("batch", "create", *selection, "--topic", "spending_priorities", "--estimate")
    assert estimated.code == 0, estimated.err
    for shown in ("Estimate (nothing was created)", "2 (concurrency 8)", "cost, realtime", "cost, provider batches"):
        assert shown in estimated.out
    assert "fear_to_confidence_template: " in estimated.out
    as_json = await cli("--json", "batch", "create", *selection, "--estimate", "--concurrency", "3")
    assert as_json.json()["items"] == 1
    assert as_json.json()["model"] == "offline-synthetic"
    assert (await cli("--json", "batch", "list", "--limit", "0")).json().get("batch_jobs", []) == before

    created = await cli("--json", "batch", "create", *selection, "--max-cost", "1.5", "--no-start")
    assert created.code == 0, created.err
    assert created.json()["max_cost_usd"] == 1.5
    updated = await cli("--json", "batch", "update", created.json()["id"], "--max-cost", "2.25", "--concurrency", "3")
    assert updated.code == 0, updated.err
    assert (updated.json()["max_cost_usd"], updated.json()["concurrency"]) == (2.25, 3)
    shown = await cli("batch", "get", created.json()["id"])
    assert "$2.2500 (0.0000 reserved)" in shown.out
    log = await cli("batch", "log", created.json()["id"])
    assert "job updated: concurrency 8 → 3; max_cost_usd $1.500000 → $2.250000" in log.out
    refused = await cli("batch", "update", created.json()["id"])
    assert refused.code != 0
    assert "update_mask.paths: is empty" in refused.err


# --- generate with --tier and with ids --------------------------------------------------------------------------------


async def test_generate_with_a_tier_other_than_the_arcs(cli: Any) -> None:
    """--tier scenario on a template-tier arc picks the arc's scenario template; the text output shows it stored."""
    keys = ["--persona", "anxious_planner", "--arc", "couple_conflict_to_alignment", "--topic", "spending_priorities"]
    generated = await cli("generate", *keys, "--tier", "scenario", "--json", "--request-id", "cli-tier-1")
    assert generated.code == 0, generated.err
    stored = generated.json()
    assert stored["parameters"]["tier"] == "TIER_SCENARIO"
    assert stored["template_name"] == "couple_conflict_to_alignment_scenario"
    assert stored["pk"] != stored["business_key"]

    shown = await cli("generate", *keys, "--tier", "scenario", "--request-id", "cli-tier-1")
    assert shown.code == 0, shown.err
    for expected in (stored["pk"], stored["business_key"], "scenario", "couple_conflict_to_alignment_scenario"):
        assert expected in shown.out


async def test_generate_with_ids_and_the_edge_case_tier(cli: Any) -> None:
    """Catalog UUIDs work like keys: --tier edge_case with an edge arc's id stores and prints that conversation."""
    arc = ARCS["crisis_to_referral"]
    ids = [
        "--persona",
        PERSONA_IDS["overwhelmed_avoider"],
        "--arc",
        str(arc.id),
        "--topic",
        TOPIC_IDS["estate_planning_basics"],
    ]
    generated = await cli("--json", "generate", *ids, "--tier", "edge_case", "--request-id", "cli-ids-1")
    assert generated.code == 0, generated.err
    stored = generated.json()
    assert (stored["persona_key"], stored["arc_key"], stored["topic_key"]) == (
        "overwhelmed_avoider",
        "crisis_to_referral",
        "estate_planning_basics",
    )
    assert stored["parameters"]["tier"] == "TIER_EDGE_CASE"
    assert stored["pk"] != stored["business_key"]
    assert uuid.UUID(stored["pk"])
    assert uuid.UUID(stored["business_key"])

    shown = await cli("generate", *ids, "--tier", "edge_case", "--request-id", "cli-ids-1")
    assert shown.code == 0, shown.err
    for expected in (stored["pk"], stored["business_key"], "crisis_to_referral", "edge_case"):
        assert expected in shown.out


# --- --token and --tls-* flags ----------------------------------------------------------------------------------------


def secured_flags(services: Services, pki: tuple[Pem, Pem, Pem]) -> dict[str, list[str]]:
    """Per flag, the options that reach mutual-TLS services with AUTH_TOKENS (given after the subcommand, they replace
    the `cli` fixture's targets)."""
    ca, _server, client = pki
    generation, batch = services.targets
    return {
        "targets": ["--generation-target", generation, "--batch-target", batch],
        "--tls-ca": ["--tls-ca", str(ca.cert)],
        "--tls-cert": ["--tls-cert", str(client.cert)],
        "--tls-key": ["--tls-key", str(client.key)],
        "--token": ["--token", CLIENT_TOKEN],
    }


COMMANDS = [("catalog", "list", "topics"), ("batch", "list")]


@pytest.mark.parametrize("command", COMMANDS, ids="_".join)
async def test_token_and_tls_flags_reach_the_services(
    cli: Any, mtls_services: Services, pki: tuple[Pem, Pem, Pem], command: tuple[str, ...]
) -> None:
    """With --tls-ca, --tls-cert, --tls-key and --token, commands succeed against mutual-TLS services with auth."""
    flags = secured_flags(mtls_services, pki)
    result: Result = await cli("--json", *command, *chain.from_iterable(flags.values()))
    assert result.code == 0, result.err
    if command[0] == "catalog":
        assert len(result.json()["topics"]) == 20
    else:
        assert "batch_jobs" in result.json()


@pytest.mark.parametrize(
    ("left_out", "error"),
    [
        ("--token", "error: UNAUTHENTICATED: missing bearer token in the authorization metadata"),
        ("--tls-ca", "error: UNAVAILABLE: "),
        ("--tls-cert", "error: INVALID_ARGUMENT: tls_cert_file: a client certificate needs its key"),
        (("--tls-cert", "--tls-key"), "error: UNAVAILABLE: "),
        (("--tls-ca", "--tls-cert", "--tls-key"), "error: UNAVAILABLE: "),
    ],
    ids=["no-token", "no-ca", "cert-without-key", "no-client-certificate", "plaintext"],
)
@pytest.mark.parametrize("command", COMMANDS, ids="_".join)
async def test_without_the_flags_commands_fail_with_a_code_and_message(
    cli: Any,
    mtls_services: Services,
    pki: tuple[Pem, Pem, Pem],
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
    left_out: str | tuple[str, ...],
    error: str,
) -> None:
    """Leaving a flag out gives exit 1 and 'error: CODE: message' on stderr (the `cli` fixture rules out tracebacks)."""
    monkeypatch.delenv("AUTH_TOKENS", raising=False)  # the CLI's fallback token
    flags = secured_flags(mtls_services, pki)
    for flag in (left_out,) if isinstance(left_out, str) else left_out:
        del flags[flag]
    result: Result = await cli(*command, *chain.from_iterable(flags.values()))
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(error), result.err
    assert all(line.startswith(("error: ", "  - ")) for line in result.err.splitlines()), result.err
