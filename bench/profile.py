"""Profiles the overhead run: one overhead configuration with py-spy sampling each service process.

    python -m bench.profile [--config offline_file|offline_s3|sdk_file] [--items 2000] [--out DIR]

Needs py-spy (``pip install py-spy``; it is not a project dependency). Starts the cluster exactly as the overhead
benchmark does, runs the warm-up, then records every service process with ``py-spy record --nonblocking`` while the
measured job runs, and prints the functions with the most samples (self, and inclusive) per process. The raw
collapsed stacks stay in --out (default: a temp dir) for flame graphs (e.g. speedscope.app reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench.cluster import ClusterPool
from bench.jobs import wait_job, warm_up
from bench.overhead import CONFIGS, JOB_CONCURRENCY, WARM_UP_ITEMS
from bench.report import note
from bench.runner import run_until_done, with_cluster_pool
from convgen.v1 import batch_pb2


def _frame_name(frame: str) -> str:
    """'function (path/to/module.py:123)' → 'function (to/module.py)': one name per function, lines merged."""
    function, _, location = frame.partition(" (")
    if not location:
        return frame
    path = location.rstrip(")").rsplit(":", 1)[0]
    return f"{function} ({'/'.join(path.split('/')[-2:])})"


def summarise(raw: Path, top: int) -> str:
    """Top functions by self samples and by inclusive samples, from py-spy's collapsed-stack output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples"]
    lines.append("  self:")
    lines += [f"    {n * 100 / total:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n * 100 / total:5.1f} %  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def profile(py_spy: str, config: str, items: int, out: Path, top: int) -> None:
    """Runs the configuration under py-spy and prints the summaries."""
    await with_cluster_pool(lambda pool: _profile(pool, py_spy, config, items, out=out, top=top), reuse=False)


async def _profile(pool: ClusterPool, py_spy: str, config: str, items: int, *, out: Path, top: int) -> None:
    async with pool.cluster(CONFIGS[config]) as cluster:
        stub = cluster.stub
        await warm_up(stub, pool.catalog, WARM_UP_ITEMS, JOB_CONCURRENCY)
        recorders: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
        for name, pid in cluster.pids().items():
            if name not in ("generation", "batch"):
                continue
            raw = out / f"{name}.txt"
            recorder = await asyncio.create_subprocess_exec(
                *[py_spy, "record", "--pid", str(pid), "--nonblocking", "--format", "raw", "-o", str(raw)],
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            recorders[name] = (recorder, raw)
        try:
            await asyncio.sleep(1.0)
            job = await stub.CreateBatchJob(
                batch_pb2.CreateBatchJobRequest(
                    name=f"profile {config}", combination=pool.catalog.combination(items), concurrency=JOB_CONCURRENCY
                )
            )
            done = await wait_job(stub, job.id, within=max(300.0, items / 5), log_uploaded=True)
            note(f"profiled job: {done.completed_items} completed, {done.failed_items} failed")
        finally:
            for recorder, _ in recorders.values():
                recorder.send_signal(signal.SIGINT)
            for recorder, _ in recorders.values():
                try:
                    await asyncio.wait_for(recorder.wait(), 30)
                except TimeoutError:
                    recorder.kill()
                    await recorder.wait()
        for name, (_, raw) in recorders.items():
            print(f"{name} service ({raw}):")
            print(summarise(raw, top) if raw.exists() else "  (py-spy wrote nothing)")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="offline_file")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="convgen-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    run_until_done(profile(py_spy, args.config, args.items, out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
