"""BatchJobWatch: a WatchBatchJob stream that resumes by itself after a drop, never losing or repeating events."""

from __future__ import annotations

import asyncio
import random
import time
from types import TracebackType

import grpc

from clients.errors import ConvgenRpcError
from convgen.v1 import batch_pb2, batch_pb2_grpc

# A watch stream open this long before it failed counts as healthy: its failure starts a fresh reconnect budget.
HEALTHY_STREAM_SECONDS = 30.0
TERMINAL_JOB_STATES = frozenset(
    {batch_pb2.BATCH_JOB_STATE_COMPLETED, batch_pb2.BATCH_JOB_STATE_FAILED, batch_pb2.BATCH_JOB_STATE_CANCELLED}
)
# Codes with which a watch stream ends when the connection, the server or a proxy goes away: worth resuming.
RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})
# Resumable too when the transport made them up (a reset stream): convgen's own statuses always carry ErrorInfo.
TRANSPORT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


class BatchJobWatch:
    """An async iterator of a job's BatchJobEvents that survives dropped streams; see watch_batch_job."""

    def __init__(
        self,
        stub: batch_pb2_grpc.BatchServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        job_id: str,
        *,
        after_sequence: int | None,
        max_reconnects: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.job_id = job_id
        self._stub = stub
        self._metadata = metadata
        self._initial_after = after_sequence
        self._max_reconnects = max_reconnects
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._call: grpc.aio.UnaryStreamCall[batch_pb2.WatchBatchJobRequest, batch_pb2.BatchJobEvent] | None = None
        self._stream_snapshot_seen = False
        self._snapshot_delivered = False
        self._finished = False
        self._failures = 0
        self._opened_at = 0.0
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self.last_sequence: int | None = None
        """Sequence of the last event yielded (for the snapshot: its resume point)."""
        self.snapshot: batch_pb2.BatchJob | None = None
        """The job as of the latest snapshot received (the first stream's, then each resumed stream's)."""
        self.reconnects = 0
        """How many times the stream was reopened."""

    def __aiter__(self) -> BatchJobWatch:
        return self

    async def __aenter__(self) -> BatchJobWatch:
        return self

    async def __aexit__(
        self, _exc_type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancels the open stream, if any; the iterator then ends."""
        self._finished = True
        self._drop_call()

    def _drop_call(self) -> None:
        call, self._call = self._call, None
        if call is not None and not call.done():
            call.cancel()

    async def __anext__(self) -> batch_pb2.BatchJobEvent:
        while not self._finished:
            if self._call is None:
                await self._open()
            assert self._call is not None
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as error:
                self._call = None
                await self._failed(ConvgenRpcError.from_call(error))
                continue
            if message is grpc.aio.EOF:
                self._call = None
                if self._caught_up():
                    self._finished = True
                    break
                await self._failed(
                    ConvgenRpcError.client_side(
                        grpc.StatusCode.UNAVAILABLE,
                        f"watch of batch job {self.job_id} ended before the job's terminal event",
                        reason="WATCH_STREAM_ENDED_EARLY",
                    ),
                    resumable=True,
                )
                continue
            assert isinstance(message, batch_pb2.BatchJobEvent)
            event = self._accept(message)
            if event is not None:
                return event
        self._drop_call()
        raise StopAsyncIteration

    async def _open(self) -> None:
        if self._failures:
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1))
            await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            self.reconnects += 1
        request = batch_pb2.WatchBatchJobRequest(job_id=self.job_id)
        resume_from = self.last_sequence if self._snapshot_delivered else self._initial_after
        if resume_from is not None:
            request.after_sequence = resume_from
        self._stream_snapshot_seen = False
        self._opened_at = time.monotonic()
        self._call = self._stub.WatchBatchJob(request, metadata=self._metadata)

    async def _failed(self, error: ConvgenRpcError, *, resumable: bool | None = None) -> None:
        """Records a failed stream; raises when it is not worth resuming or the reconnect budget is spent."""
        if resumable is None:
            resumable = error.code in RESUMABLE_CODES or (error.code in TRANSPORT_CODES and not error.reason)
        if time.monotonic() - self._opened_at > HEALTHY_STREAM_SECONDS:
            self._failures = 0
        self._failures += 1
        if not resumable or self._failures > self._max_reconnects:
            self._finished = True
            if resumable:
                raise ConvgenRpcError(
                    error.code,
                    f"watch of batch job {self.job_id} gave up after {self._failures - 1} reconnects "
                    f"(last sequence {self.last_sequence}): {error.message}",
                    error.details,
                ) from None
            raise error

    def _accept(self, event: batch_pb2.BatchJobEvent) -> batch_pb2.BatchJobEvent | None:
        """The event to yield, or None for a resumed stream's snapshot and anything already yielded."""
        if event.HasField("snapshot"):
            first_of_stream = not self._stream_snapshot_seen
            self._stream_snapshot_seen = True
            self.snapshot = event.snapshot
            if not first_of_stream or self._snapshot_delivered:
                return None
            self._snapshot_delivered = True
            self.last_sequence = event.sequence
            return event
        if not self._snapshot_delivered:
            # Events come only after a snapshot; a stream that skips it is treated as a fresh one.
            self._snapshot_delivered = True
        if self.last_sequence is not None and event.sequence <= self.last_sequence:
            return None
        self.last_sequence = event.sequence
        self._failures = 0
        if event.HasField("job") and event.job.state in TERMINAL_JOB_STATES:
            self._finished = True
        return event

    def _caught_up(self) -> bool:
        """True when a stream ended cleanly because there is nothing more to come: the job is terminal."""
        snapshot = self.snapshot
        if snapshot is None or not self._stream_snapshot_seen or snapshot.state not in TERMINAL_JOB_STATES:
            return False
        return self.last_sequence is not None and snapshot.last_sequence <= self.last_sequence
