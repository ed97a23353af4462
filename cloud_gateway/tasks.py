"""Work a request handler must not leave half-done when it is cancelled (its device left)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from cloud_gateway.logs import LOGGER_NAME

T = TypeVar("T")
log = logging.getLogger(LOGGER_NAME)


async def finish_then_cancel(
    task: asyncio.Future[T], on_cancel: Callable[[], object] | None = None
) -> T:
    """`task`'s result; if the caller is cancelled meanwhile, `on_cancel()` (once), then wait
    for `task` to end all the same and pass the cancellation on (its result is dropped, an
    error logged: nobody is left to raise it to). Only a `task` itself cancelled (the loop
    ending) stops the wait."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            if not cancelled and on_cancel is not None:
                on_cancel()
            cancelled = True
    if cancelled:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("the work of a cancelled request failed", exc_info=error)
        raise asyncio.CancelledError
    return task.result()
