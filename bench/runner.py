"""Running benchmarks: on their own PostgreSQL and cluster pool, with SIGTERM treated like Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bench.cluster import ClusterPool
from bench.postgres import start_bench_postgres
from bench.report import note

BenchmarkRun = Callable[[ClusterPool, bool], Awaitable[dict[str, Any]]]


async def with_cluster_pool(run: Callable[[ClusterPool], Awaitable[Any]], *, reuse: bool) -> Any:
    """Runs run(pool) on a fresh bench PostgreSQL; stops every cluster and the server afterwards."""
    postgres, catalog = await start_bench_postgres()
    pool = ClusterPool(postgres, catalog, reuse=reuse)
    try:
        return await run(pool)
    finally:
        try:
            await pool.close()
        finally:
            await postgres.close()


def run_until_done(main: Awaitable[Any]) -> Any:
    """asyncio.run, with SIGTERM treated like Ctrl-C (the main task is cancelled, finally blocks stop processes)."""

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    return asyncio.run(guarded())


def standalone(name: str, run: BenchmarkRun, argv: Iterable[str] | None = None) -> int:
    """`python -m bench.NAME [--quick]`: runs one benchmark on its own PostgreSQL and prints its JSON line."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=f"convgen benchmark: {name}")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke mode)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        result = run_until_done(with_cluster_pool(lambda pool: run(pool, args.quick), reuse=False))
    except (KeyboardInterrupt, asyncio.CancelledError):
        note("interrupted")
        return 130
    print(json.dumps(result), flush=True)
    return 0
