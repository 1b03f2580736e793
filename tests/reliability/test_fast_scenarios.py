"""The fast versions of the reliability scenarios (real processes, PostgreSQL, moto S3, the fake Messages API).

To fit the default run's time budget the scenarios run concurrently, once per module, each on its own database
with its own processes (the one that restarts PostgreSQL gets a PostgreSQL server of its own); each test then checks
one scenario's report. The full versions run one after the other with `python -m tests.reliability.full_suite`
(`python3 dev.py reliability`). Set RELIABILITY_SEED to replay a run's random fault moments (failures print it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.reliability.harness import Environment, ScenarioReport
from tests.reliability.scenarios import SCENARIOS, Scale, Scenario, ScenarioSkipped, seed_from_environment
from tests.support.moto_s3 import MotoS3Process
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.slow  # six fault scenarios on real processes, about 35 s

LONGEST = ("generation_killed", "postgres_restarted", "generation_killed_defaults")

Outcome = ScenarioReport | ScenarioSkipped | BaseException


@pytest.fixture(scope="module")
def moto_process() -> Iterator[MotoS3Process]:
    """moto's S3 in its own process, shared by the scenarios (every job writes its own keys)."""
    with MotoS3Process() as server:
        yield server


@pytest.fixture(scope="module")
async def outcomes(
    postgres: PostgresServer, moto_process: MotoS3Process, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[int, dict[str, Outcome]]]:
    """Runs every fast scenario concurrently; (seed, scenario name → report, skip or error)."""
    seed = seed_from_environment()
    # Two clusters start their processes at a time (starting all at once only makes every start slow), in the order
    # below: the scenarios that wait longest (claims of a killed generation process expire after 30 s) go first.
    start_gate = asyncio.Semaphore(2)
    ordered = sorted(SCENARIOS, key=lambda s: s.name not in LONGEST)
    # The scenario that restarts PostgreSQL gets a server of its own, started meanwhile.
    own_postgres = asyncio.create_task(PostgresServer.start()) if postgres.embedded is not None else None
    databases: dict[str, tuple[PostgresServer, str]] = {}

    async def environment(scenario: Scenario) -> Environment:
        server = postgres
        if scenario.restarts_postgres and own_postgres is not None:
            server = await own_postgres
        dsn = await server.create_database()
        databases[scenario.name] = (server, dsn)
        return Environment(
            postgres=server,
            database_url=dsn,
            s3_host="127.0.0.1",
            s3_port=moto_process.port,
            workdir=tmp_path_factory.mktemp(scenario.name),
            start_gate=start_gate,
        )

    async def run(scenario: Scenario, env: Environment | asyncio.Task[Environment]) -> Outcome:
        try:
            ready = env if isinstance(env, Environment) else await env
            return await scenario.run(ready, Scale.FAST, random.Random(seed))
        except ScenarioSkipped as skipped:
            return skipped
        except Exception as error:
            return error

    try:
        # Databases first, so the scenarios reach the start gate in order.
        envs: list[Environment | asyncio.Task[Environment]] = [
            asyncio.create_task(environment(s)) if s.restarts_postgres else await environment(s) for s in ordered
        ]
        results = await asyncio.gather(*(run(s, e) for s, e in zip(ordered, envs, strict=True)))
        yield seed, {s.name: r for s, r in zip(ordered, results, strict=True)}
    finally:
        for server, dsn in databases.values():
            await server.drop_database(dsn)
        if own_postgres is not None:
            await (await own_postgres).close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in SCENARIOS])
async def test_fast_scenario(scenario: Scenario, outcomes: tuple[int, dict[str, Outcome]]) -> None:
    seed, by_name = outcomes
    outcome = by_name[scenario.name]
    if isinstance(outcome, ScenarioSkipped):
        pytest.skip(str(outcome))
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome.ok, f"{outcome.explain()}\n  (RELIABILITY_SEED={seed})"
