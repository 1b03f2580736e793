"""Background loop helpers: waits and stops that never swallow a cancellation."""

from __future__ import annotations

import asyncio

from convgen.background import stop_task, wait_for_event


async def test_a_loop_waiting_for_an_event_ends_when_cancelled_as_the_event_fires() -> None:
    """Regression: on Python 3.11 asyncio.wait_for swallowed this cancellation and the loop ran on for ever."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_for_event(event, 5.0)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    if not done:
        await stop_task(task)
    assert task in done
    assert task.cancelled()


async def test_wait_for_event_says_whether_the_event_fired() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    event.set()
    assert await wait_for_event(event, 0.01) is True


async def test_stop_task_waits_for_the_task_and_lets_the_callers_cancellation_through() -> None:
    cleaned = asyncio.Event()
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()
            cleaned.set()

    inner = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(inner))
    await asyncio.sleep(0.01)
    stopper.cancel()
    await asyncio.wait([stopper], timeout=2.0)
    assert stopper.cancelled()  # the caller's cancellation was not swallowed
    release.set()
    await asyncio.wait([inner], timeout=2.0)
    assert cleaned.is_set()
    assert inner.cancelled()
