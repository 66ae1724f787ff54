"""Answering a charged query at its deadline, holding no thread while it waits (invariant 10).

The pipeline runs in a worker thread and returns at once with the time its answer may be shown (the
deadline set from the query's worst case before it ran). The wait for that time is an `asyncio.sleep`
on the event loop, so a worker thread is busy only while the engine really works, and many queries can
be waiting for their deadlines at once. A failure after the charge waits for the same deadline: a
released answer, an overrun and a failure all come at the same time, whatever the data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from enclave.disclosure.release import Release
from enclave.pipeline import QueryError


async def _until(answer_at: float) -> None:
    delay = answer_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def answered(run: Callable[[], Release]) -> Release:
    """Run `run` (a pipeline call made with hold=False) in a worker thread; answer at its deadline."""
    try:
        release = await run_in_threadpool(run)
    except QueryError as error:
        await _until(error.answer_at)
        raise
    await _until(release.answer_at)
    return release
