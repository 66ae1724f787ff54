"""Answering a charged query at its deadline (invariant 10).

The pipeline runs in a worker thread. It records a charged query's outcome only at its answer time (the
deadline set from the query's worst case before it ran; `Hooks.hold`), so that an identical request
waiting on its claim, or a researcher listing their queries, cannot see the release when the engine
finished; the thread is held until then. The `asyncio.sleep` here is the backstop: whatever the
pipeline returns is not sent before the answer time it carries. A released answer, an overrun and a
failure after the charge all come at the same time, whatever the data.
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
