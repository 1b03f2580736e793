"""Background loops that never die: a failing round is logged and the next one runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from convgen.errors import ConvgenError

logger = logging.getLogger(__name__)


async def repeat_forever(name: str, wait: Callable[[], Awaitable[None]], step: Callable[[], Awaitable[None]]) -> None:
    """Alternates wait() and step() until cancelled; errors in a step are logged, not fatal.

    A background loop that died (a heartbeat, a lease reaper, a dispatcher) would silently leave work stuck, which
    is worse than any error it could raise: expected failures (the database or S3 being down) are warnings, and
    anything else is logged with its traceback.
    """
    while True:
        await wait()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except ConvgenError as error:
            logger.warning("%s: %s", name, error.message)
        except Exception:
            logger.exception("%s failed; it keeps running", name)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Waits until event is set or seconds pass; True when it was set."""
    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives just as the event is set, and a
    # loop built on it then outlives the task that cancelled it (a server stop, a job feed that never ends).
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancels a task and waits until it has ended; a cancellation of the caller itself still propagates."""
    # Not `with suppress(CancelledError): await task`, which would also swallow the caller's own cancellation.
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        logger.warning("%s ended with an error while stopping: %r", task.get_name(), task.exception())
