"""K WatchBatchJob watchers in one process, each on its own channel (own HTTP/2 connection), as separate clients are.

``python -m bench.watch_client --target HOST:PORT --job ID --watchers K --ready-file F --out F``: opens the K
streams, writes the ready file once every stream has its snapshot, records the receive time of every message,
and when every stream has ended writes a JSON file with the receive time, sequence and event time of each
ITEM COMPLETED event per watcher. Messages are kept raw while the job runs and parsed only afterwards, so that the
watchers' own CPU load on the shared machine is as small as gRPC allows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import grpc

from convgen.v1 import batch_pb2

METHOD = "/convgen.v1.BatchService/WatchBatchJob"


async def _watch(target: str, job_id: str, received: list[tuple[float, bytes]], snapshots: list[int]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        method: Any = channel.unary_stream(
            METHOD,
            request_serializer=batch_pb2.WatchBatchJobRequest.SerializeToString,
            response_deserializer=None,  # raw bytes: parsed after the run, not while it is measured
        )
        call = cast(
            "grpc.aio.UnaryStreamCall[batch_pb2.WatchBatchJobRequest, bytes]",
            method(batch_pb2.WatchBatchJobRequest(job_id=job_id)),
        )
        first = True
        async for raw in call:
            received.append((time.time(), raw))
            if first:
                first = False
                snapshots.append(1)


async def run(target: str, job_id: str, *, watchers: int, ready_file: Path, out: Path, within: float) -> None:
    """Runs the watchers until their streams end; writes the ready file and the result file."""
    streams: list[list[tuple[float, bytes]]] = [[] for _ in range(watchers)]
    snapshots: list[int] = []
    tasks = [asyncio.create_task(_watch(target, job_id, streams[n], snapshots)) for n in range(watchers)]
    cpu_start = time.process_time()
    deadline = time.monotonic() + within
    while len(snapshots) < watchers:
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a watcher failed before its snapshot: {failed[0].exception()!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(snapshots)} of {watchers} watchers got their snapshot")
        await asyncio.sleep(0.01)
    tmp = ready_file.with_name(f".{ready_file.name}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(ready_file)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, deadline - time.monotonic()))
    cpu = time.process_time() - cpu_start

    completed: list[list[Any]] = []
    messages = 0
    for stream in streams:
        samples = []
        for received_at, raw in stream:
            messages += 1
            event = batch_pb2.BatchJobEvent.FromString(raw)
            if event.WhichOneof("event") == "item" and event.item.kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED:
                samples.append([event.sequence, received_at, event.time.seconds + event.time.nanos / 1e9])
        completed.append(samples)
    text = json.dumps({"watchers": watchers, "messages": messages, "cpu_s": cpu, "completed": completed})
    await asyncio.to_thread(out.write_text, text)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.watch_client")
    parser.add_argument("--target", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--watchers", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--within", type=float, default=600.0)
    args = parser.parse_args(argv)
    asyncio.run(
        run(args.target, args.job, watchers=args.watchers, ready_file=args.ready_file, out=args.out, within=args.within)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
