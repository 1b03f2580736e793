"""Runs the whole benchmark suite and writes docs/performance.md.

    python -m bench.run_all [--quick] [--only NAME ...] [--output PATH]
    python3 dev.py bench [--quick]

Benchmarks run one after the other on one PostgreSQL (embedded in a temp dir, or DATABASE_URL), each on a fresh
database and its own processes. Each prints one JSON line on stdout (progress goes to stderr); a benchmark that
fails prints a line with an "error" key and its table rows say "not measured". The markdown file gets the table, the
machine, the date and the command; a hand-written "## Before/after" section already in the file is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import concurrency, cost, dataset_export, output_pacing, overhead, progress_latency, rate_limit, scale
from bench.cluster import ClusterPool
from bench.report import Row, note, result_line
from bench.runner import run_until_done, with_cluster_pool
from tests.support.checkout import ROOT

BENCHMARKS: list[tuple[str, ModuleType]] = [
    (overhead.NAME, overhead),
    (concurrency.NAME, concurrency),
    (rate_limit.NAME, rate_limit),
    (output_pacing.NAME, output_pacing),
    (progress_latency.NAME, progress_latency),
    (scale.NAME, scale),
    (cost.NAME, cost),
    (dataset_export.NAME, dataset_export),
]
DEFAULT_OUTPUT = ROOT / "docs" / "performance.md"
BEFORE_AFTER_HEADING = "## Before/after"
BEFORE_AFTER_PLACEHOLDER = f"""{BEFORE_AFTER_HEADING}

_Hand-written; `bench.run_all` keeps this section (from its heading to the end of the file) when it rewrites the
file. Record optimisation results here: the figure, before, after, and the change that made the difference._
"""


async def run_suite(names: Sequence[str], quick: bool, emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Runs the named benchmarks in suite order; returns their JSON objects."""

    async def run_each(pool: ClusterPool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for name, module in BENCHMARKS:
            if name not in names:
                continue
            note(f"=== {name}{' (quick)' if quick else ''} ===")
            started = time.monotonic()
            try:
                result: dict[str, Any] = await module.run(pool, quick)
            except Exception as error:
                note(f"{name} failed: {error!r}")
                result = result_line(name, quick, {"error": f"{type(error).__name__}: {error}"})
            result["wall_s"] = round(time.monotonic() - started, 1)
            emit(result)
            results.append(result)
        return results

    # Quick mode reuses clusters between benchmarks (start-up would dominate it); the full suite starts fresh ones.
    found: list[dict[str, Any]] = await with_cluster_pool(run_each, reuse=quick)
    return found


def table_rows(results: Sequence[dict[str, Any]]) -> list[Row]:
    """The table rows of every result (a failed benchmark gets one 'not measured' row)."""
    modules = dict(BENCHMARKS)
    rows: list[Row] = []
    for result in results:
        name = result["benchmark"]
        if "error" in result:
            rows.append(Row(name, "(the whole benchmark)", "not measured", "—", "not measured", result["error"]))
            continue
        try:
            rows.extend(modules[name].rows(result))
        except (KeyError, TypeError) as error:
            rows.append(Row(name, "(table)", "not measured", notes=f"result incomplete: {error!r}"))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


PRODUCT_DIRS = ("convgen", "generation_service", "batch_service", "clients")


def code_fingerprint() -> str:
    """A digest of the product code on disk (every .py, .sql and template file), to notice changes during a run."""
    digest = hashlib.sha256()
    for directory in PRODUCT_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".sql", ".md", ".json"}:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *PRODUCT_DIRS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision}{' + uncommitted changes in product code' if dirty else ''}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


METHOD = """\
## How it is measured

- **Processes.** Every benchmark runs the real services as separate OS processes (`convgen serve generation`,
  `convgen serve batch`, started on port 0 by the test kit's `tests/support/cluster.py`), the fake Messages API
  (`tests/support/messages_api.py`) as a process wherever the SDK is used, and moto's S3 server as a process for the
  S3 configuration. PostgreSQL (the kit's `tests/support/postgres.py`) is an embedded server in a temp dir with
  convgen's production settings (`max_connections=300`, fsync and synchronous commit **on**, unlike the test
  suite), or `DATABASE_URL` when set.
  Each benchmark gets a fresh database cloned from a template holding the demo catalog plus extra personas and
  topics (5 personas, 4,000 topics), so that every job is a plain persona × arc × topic combination.
- **Settings.** Defaults, except `BATCH_MAX_ITEMS=100000` (a limit only, for the scale job). Jobs use concurrency
  64; `BATCH_WORKER_CONCURRENCY` and `MODEL_MAX_CONCURRENCY` are 64 (their defaults, set explicitly). Logs are JSON
  at INFO, written to files. The full suite starts fresh processes and a fresh database per benchmark (overhead: per
  configuration); the quick mode reuses a compatible cluster of an earlier benchmark, because process start-up
  (`import anthropic` alone takes seconds) would otherwise be most of its time.
- **Warm-up.** Each cluster first runs a small warm-up job (connections, lazy imports, the SDK pacer's one-request
  probe), not measured.
- **Throughput.** Items/s = completed items ÷ (the job's `finished_at` − `created_at`), server timestamps: end to
  end, CreateBatchJob included (the progress benchmark uses `started_at`, its jobs being started by ResumeBatchJob).
  The bench waits by polling GetBatchJob every 50 ms, so the measured jobs have no watcher unless one is intended.
- **CPU.** User + system CPU time of each process (and of PostgreSQL's postmaster with all its backends) read
  with psutil before CreateBatchJob and after the job is terminal and its log uploaded, divided by the items.
- **Progress latency.** Receive time at the watcher − the event row's `created_at` (`clock_timestamp()` at INSERT,
  before COMMIT), same machine clock: an upper bound of commit → receive. A lower bound (receive − arrival of the
  same NOTIFY at the bench's own LISTEN connection, which PostgreSQL sends only after the commit) is in the notes.
  Watchers run in separate client processes (50 per process, one channel each) on the same two cores. Three loads:
  paced (concurrency 64 at 0.5 s ± 20 %, the concurrency benchmark's job), moderate (concurrency 8, same latency)
  and saturated (model latency 0, for the throughput cost).
- **Cost** (issue 12). The reference workload (5 personas × 5 arcs × 40 topics = 1,000 items, concurrency 32) runs
  through convgen with its defaults, then through the naive script (the same rendered prompts, no `cache_control`, no
  effort setting), against one fake API that caches by prefix like the real one and bills thinking tokens per effort
  level (assumed levels, in `bench/cost.py`); both are priced with convgen's price table. The validate_only estimate
  of the job is taken first, after five earlier conversations (one per template) give it output sizes.
- **Output-token pacing** (issue 12). The fake allows 600 requests and 600,000 output tokens a minute and charges each
  request its max_tokens until it ends, as the API does; 3,000-token conversations make the token limit bind first.
  Achieved ÷ allowed = the job's output tokens ÷ (the fake's bucket + its rate × the job's elapsed time).
- **Latency of single calls** (CreateBatchJob, ListBatchItems, the snapshot) is timed at the client around the
  whole RPC, response decoding included.
- **Noise.** Timings taken while other work runs on the machine are pessimistic; the load averages at the start and
  end of the run are printed above the table.
"""


def render(
    results: Sequence[dict[str, Any]],
    *,
    quick: bool,
    command: str,
    started: datetime.datetime,
    load_before: tuple[float, float, float],
    code: str,
    code_changed: bool,
    previous: str | None,
) -> str:
    """The whole docs/performance.md text."""
    load_after = os.getloadavg()
    total_wall = sum(r.get("wall_s", 0.0) for r in results)
    lines = [
        "# Performance",
        "",
        "Generated by `bench/run_all.py` (issue 6). Do not edit above the Before/after section by hand: re-run the"
        " suite.",
        "",
        f"- **Command:** `{command}`",
        f"- **Mode:** {'QUICK (smoke sizes: the figures are not comparable with the targets)' if quick else 'full'}",
        f"- **Date:** {started.strftime('%Y-%m-%d %H:%M UTC')} (suite wall time {total_wall:.0f} s)",
        f"- **Machine:** {os.cpu_count()} cores ({_cpu_model()}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- **Load average** (1/5/15 min) at start {load_before[0]:.2f} / {load_before[1]:.2f} / "
        f"{load_before[2]:.2f}, at end {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}",
        f"- **Code under test:** {code}",
        *(
            [
                "",
                "> **WARNING: the product code on disk changed while this run was going on; its figures may mix code"
                " versions. Re-run it on a stable checkout.**",
            ]
            if code_changed
            else []
        ),
        "",
        "| Benchmark | Figure | Measured | Target | Met? | Notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in table_rows(results):
        cells = [row.benchmark, row.figure, row.measured, row.target, row.met, row.notes]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", METHOD, "## The JSON lines of this run", "", "```json"]
    lines += [json.dumps(r, ensure_ascii=False) for r in results]
    lines += ["```", ""]
    tail = previous if previous is not None else BEFORE_AFTER_PLACEHOLDER
    return "\n".join(lines) + "\n" + tail.rstrip("\n") + "\n"


def preserved_section(path: Path) -> str | None:
    """The hand-written Before/after section of an existing file (heading to end), if any."""
    if not path.exists():
        return None
    text = path.read_text()
    index = text.find(f"\n{BEFORE_AFTER_HEADING}")
    if index < 0:
        return text if text.startswith(BEFORE_AFTER_HEADING) else None
    return text[index + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    names = [name for name, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (well under 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=names, default=None, help="run only these benchmarks")
    parser.add_argument(
        "--code-label",
        default=None,
        help="describes the code under test in the report (default: the checkout's git revision)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default {DEFAULT_OUTPUT.relative_to(ROOT)}; with --only: none)",
    )
    args = parser.parse_args(argv)
    selected = args.only or names
    output: Path | None = args.output
    if output is None and args.only is None:
        output = DEFAULT_OUTPUT
    command = shlex.join([Path(sys.executable).name, "-m", "bench.run_all", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    fingerprint = code_fingerprint()
    code = f"{args.code_label or _git_revision()} (product code digest {fingerprint})"

    def emit(result: dict[str, Any]) -> None:
        print(json.dumps(result, ensure_ascii=False), flush=True)

    try:
        results = run_until_done(run_suite(selected, args.quick, emit))
    except (KeyboardInterrupt, asyncio.CancelledError):
        note("interrupted: no report written")
        return 130
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        text = render(
            results,
            quick=args.quick,
            command=command,
            started=started,
            load_before=load_before,
            code=code,
            code_changed=code_fingerprint() != fingerprint,
            previous=preserved_section(output),
        )
        output.write_text(text)
        note(f"wrote {output}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
