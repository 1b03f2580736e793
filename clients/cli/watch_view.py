"""Live job progress: a rich bar (completed/failed/total, throughput, ETA, cost) with failures printed above it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from clients.catalog_index import Catalog
from clients.cli.output import Output, job_state_name
from clients.client import ConvgenClient
from clients.errors import ConvgenRpcError
from clients.watch import TERMINAL_JOB_STATES
from convgen.v1 import batch_pb2, common_pb2

COST_REFRESH_SECONDS = 1.0
# Finished-item samples the throughput is measured over.
RATE_WINDOW = 50


def job_succeeded(job: batch_pb2.BatchJob) -> bool:
    """True when the job completed without failed items (exit code 0)."""
    return job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED and job.failed_items == 0


@dataclass
class _Tally:
    """Counters and rates of a watched job; rates come from event times, so replayed events count right."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    state: int = batch_pb2.BATCH_JOB_STATE_UNSPECIFIED
    cost_usd: float = 0.0
    finishes: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.cancelled

    def update(self, event: batch_pb2.BatchJobEvent) -> None:
        counters = event.counters
        finished_before = self.completed + self.failed
        self.total = counters.total_items
        self.completed, self.failed, self.cancelled = (
            counters.completed_items,
            counters.failed_items,
            counters.cancelled_items,
        )
        self.state = event.job_state
        if event.HasField("snapshot"):
            # A snapshot is stamped when the watch starts: later than the events a replay then sends.
            return
        if self.completed + self.failed != finished_before or not self.finishes:
            self.finishes.append((event.time.ToNanoseconds() / 1e9, self.completed + self.failed))

    def rate(self) -> float:
        """Items finished per second over the latest finishes."""
        if len(self.finishes) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.finishes[0], self.finishes[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def stats(self) -> str:
        rate = self.rate()
        remaining = self.total - self.done
        eta = f"{remaining / rate:.0f}s" if rate > 0 and remaining > 0 else "-"
        return (
            f"[green]{self.completed} completed[/] [red]{self.failed} failed[/] / {self.total} · "
            f"{rate:.1f} items/s · ETA {eta} · ${self.cost_usd:.4f} · {job_state_name(self.state)}"
        )

    def plain(self) -> str:
        return (
            f"progress: {self.done}/{self.total} done · {self.completed} completed · {self.failed} failed · "
            f"{self.rate():.1f} items/s · {job_state_name(self.state)}"
        )


class JobWatchView:
    """Renders one job's watch stream for people; failures and retries scroll above the live bar."""

    def __init__(self, client: ConvgenClient, out: Output, job: batch_pb2.BatchJob) -> None:
        self._client = client
        self._out = out
        self._job = job
        self._tally = _Tally(total=job.total_items, cost_usd=job.cost_usd, state=job.state)
        self._labels: dict[str, str] | None = None
        self._cost_task: asyncio.Task[None] | None = None
        self._cost_at = 0.0
        self._printed_done = -1

    async def run(self, *, after_sequence: int | None = None) -> batch_pb2.BatchJob:
        """Follows the job to its terminal event; returns the job as it ended."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self._out.console,
            refresh_per_second=8,
        )
        name = escape(self._job.name or self._job.id)
        with progress:
            task = progress.add_task(f"[bold]{name}[/]", total=max(self._tally.total, 1), stats=self._tally.stats())
            try:
                final = await follow(
                    self._client, self._job.id, after_sequence, lambda e: self._on_event(progress, task, e)
                )
            finally:
                if self._cost_task is not None:
                    self._cost_task.cancel()
            self._tally.cost_usd = final.cost_usd
            progress.update(task, completed=self._tally.done, stats=self._tally.stats())
        self._summary(final)
        return final

    async def _on_event(self, progress: Progress, task: TaskID, event: batch_pb2.BatchJobEvent) -> None:
        self._tally.update(event)
        which = event.WhichOneof("event")
        if which == "snapshot":
            self._tally.cost_usd = event.snapshot.cost_usd
        elif which == "item":
            await self._on_item(progress, event.item)
        elif which == "job" and event.job.previous_state != batch_pb2.BATCH_JOB_STATE_UNSPECIFIED:
            change = event.job
            line = f"job {job_state_name(change.previous_state)} → {job_state_name(change.state)}"
            if change.reason:
                line = change.reason if change.reason.startswith("job ") else f"{line}: {change.reason}"
            progress.console.print(escape(line), style="bold")
        progress.update(task, total=max(self._tally.total, 1), completed=self._tally.done, stats=self._tally.stats())
        plain_due = self._tally.done > 0 and self._tally.done != self._printed_done and self._should_print_plain()
        if not self._out.is_terminal and plain_due:
            self._printed_done = self._tally.done
            progress.console.print(escape(self._tally.plain()))

    def _should_print_plain(self) -> bool:
        step = max(1, self._tally.total // 20)
        return self._tally.done % step == 0 or self._tally.done == self._tally.total

    async def _on_item(self, progress: Progress, item: batch_pb2.ItemTransition) -> None:
        kind = item.kind
        if kind == batch_pb2.ITEM_TRANSITION_KIND_FAILED:
            label = await self._label(item)
            progress.console.print(escape(f"✗ item #{item.position} {label} failed: {item.error_message}"), style="red")
        elif kind == batch_pb2.ITEM_TRANSITION_KIND_RETRYING:
            label = await self._label(item)
            delay = item.retry_delay.ToTimedelta().total_seconds()
            progress.console.print(
                escape(f"↻ item #{item.position} {label} retrying in {delay:.1f}s: {item.error_message}"),
                style="yellow",
            )
        elif kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED:
            self._maybe_refresh_cost(progress)

    def _maybe_refresh_cost(self, progress: Progress) -> None:
        now = time.monotonic()
        if (self._cost_task is None or self._cost_task.done()) and now - self._cost_at >= COST_REFRESH_SECONDS:
            self._cost_at = now
            self._cost_task = asyncio.create_task(self._refresh_cost())

    async def _refresh_cost(self) -> None:
        try:
            job = await self._client.get_batch_job(self._job.id)
        except ConvgenRpcError:
            return
        self._tally.cost_usd = job.cost_usd

    async def _label(self, item: batch_pb2.ItemTransition) -> str:
        """(persona/arc/topic) of an item; fetched once, on the first failure."""
        if self._labels is None:
            self._labels = {}
            try:
                catalog = await self._client.catalog()
                async for batch_item in self._client.iter_batch_items(self._job.id, page_size=1000):
                    self._labels[batch_item.id] = _params_label(catalog, batch_item.parameters)
            except ConvgenRpcError:
                pass
        label = self._labels.get(item.item_id)
        return f"({label})" if label else ""

    def _summary(self, job: batch_pb2.BatchJob) -> None:
        style = "bold green" if job_succeeded(job) else "bold red"
        self._out.text(
            f"job {job.id} {job_state_name(job.state)}: {job.completed_items} completed, {job.failed_items} failed, "
            f"{job.cancelled_items} cancelled of {job.total_items} · tokens {job.usage.input_tokens} in / "
            f"{job.usage.output_tokens} out · ${job.cost_usd:.4f}",
            style=style,
        )


def _params_label(catalog: Catalog, p: common_pb2.GenerationParameters) -> str:
    persona = catalog.label("persona", p.persona_id)
    arc = catalog.label("emotional arc", p.emotional_arc_id)
    topic = catalog.label("training topic", p.training_topic_id)
    return f"{persona}/{arc}/{topic}"


async def follow(
    client: ConvgenClient,
    job_id: str,
    after_sequence: int | None,
    on_event: Callable[[batch_pb2.BatchJobEvent], Awaitable[None]],
) -> batch_pb2.BatchJob:
    """Passes every event to on_event until the job is terminal; returns the job then.

    A replay can end at an earlier terminal event of a job that was retried since: watching goes on from there.
    """
    while True:
        async with client.watch_batch_job(job_id, after_sequence=after_sequence) as events:
            async for event in events:
                await on_event(event)
            after_sequence = events.last_sequence
        job = await client.get_batch_job(job_id)
        if job.state in TERMINAL_JOB_STATES:
            return job


async def watch_job(
    client: ConvgenClient, out: Output, job_id: str, *, after_sequence: int | None = None
) -> batch_pb2.BatchJob:
    """Follows a job to its end: a live view for people, JSON lines of events with --json; returns the final job."""
    if out.json_mode:

        async def emit(event: batch_pb2.BatchJobEvent) -> None:
            out.json(event)

        return await follow(client, job_id, after_sequence, emit)
    job = await client.get_batch_job(job_id)
    return await JobWatchView(client, out, job).run(after_sequence=after_sequence)
