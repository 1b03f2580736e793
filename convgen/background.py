"""Background loops that never die: a failing round is logged and the next one runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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
