"""The full reliability suite: every scenario at full size, then a table of what happened.

    python -m tests.reliability.full_suite                 # all six scenarios, 200 items each
    python -m tests.reliability.full_suite --scenario batch_killed --seed 1234
    python -m tests.reliability.full_suite --scale fast    # the small versions (what the default test run does)

Exits non-zero when any invariant fails in any scenario. Service logs of a failed run are kept and their place is
printed. `python3 dev.py reliability` runs this module.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.harness import COLUMNS, Environment, ScenarioReport, markdown_table, table_rows
from tests.reliability.scenarios import SCENARIOS, Scale, ScenarioSkipped, seed_from_environment
from tests.support.moto_s3 import MotoS3Process
from tests.support.postgres import PostgresServer


def text_table(reports: Sequence[ScenarioReport]) -> str:
    """The reports as an aligned plain-text table."""
    header = [*COLUMNS, "model calls", "wall time", "invariants"]
    rows = [header, *table_rows(reports)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


async def run_suite(names: Sequence[str], scale: Scale, seed: int, keep: bool) -> tuple[list[ScenarioReport], Path]:
    """Runs the named scenarios one after the other, each on a fresh database; returns the reports and the work dir."""
    selected = [s for s in SCENARIOS if not names or s.name in names]
    workroot = Path(tempfile.mkdtemp(prefix="convgen-reliability-"))
    reports: list[ScenarioReport] = []
    postgres = await PostgresServer.start()
    try:
        with MotoS3Process() as moto:
            for scenario in selected:
                dsn = await postgres.create_database()
                env = Environment(
                    postgres=postgres,
                    database_url=dsn,
                    s3_host="127.0.0.1",
                    s3_port=moto.port,
                    workdir=workroot / scenario.name,
                )
                print(f"running {scenario.name}: {scenario.summary} ...", flush=True)
                started = time.monotonic()
                try:
                    report = await scenario.run(env, scale, random.Random(seed))
                except ScenarioSkipped as skipped:
                    print(f"  skipped: {skipped}", flush=True)
                    continue
                except Exception as error:
                    traceback.print_exc()
                    report = ScenarioReport(
                        scenario=scenario.name,
                        faults="(scenario crashed)",
                        items=0,
                        wall_seconds=time.monotonic() - started,
                        violations=[f"the scenario crashed: {type(error).__name__}: {error}"],
                        workdir=env.workdir,
                    )
                finally:
                    await postgres.drop_database(dsn)
                verdict = "ok" if report.ok else f"{len(report.violations)} violation(s)"
                print(f"  {verdict} in {report.wall_seconds:.1f} s", flush=True)
                reports.append(report)
    finally:
        await postgres.close()
        if not keep and all(r.ok for r in reports):
            shutil.rmtree(workroot, ignore_errors=True)
    return reports, workroot


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: runs the suite, prints the table, returns 1 when an invariant failed."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.full_suite", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        choices=[s.name for s in SCENARIOS],
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--scale", choices=[s.value for s in Scale], default=Scale.FULL.value)
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fault moments (default: random)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the service logs even when everything passed")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else seed_from_environment()
    print(f"reliability suite, scale {args.scale}, seed {seed}", flush=True)
    started = time.monotonic()
    reports, workroot = asyncio.run(run_suite(args.scenario, Scale(args.scale), seed, args.keep))
    print()
    print(text_table(reports))
    if args.markdown:
        print()
        print(markdown_table(reports))
    for report in reports:
        for note in report.notes:
            print(f"note: {report.scenario}: {note}")
    failed = [r for r in reports if not r.ok]
    for report in failed:
        print()
        print(report.explain())
    print()
    print(f"{len(reports)} scenario(s) in {time.monotonic() - started:.0f} s, seed {seed}: ", end="")
    if failed:
        print(f"{len(failed)} FAILED; service logs kept under {workroot}")
        return 1
    print("every invariant held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
