"""The engine's execution slots, shared by every process on one enclave home (invariant 10).

A query executes only while it holds a slot, and holds it until its answer time (its deadline), not
until the engine finishes: so the next query in the queue starts at a time set by deadlines alone, and
neither its wait nor its run time can depend on the data of the queries before it, and the engine is
never asked for more than the cost model's deadlines assumed (which an overrun would show). Slots are
`flock` locks on files under `<home>/run/`, so every process and thread of one home shares them; the
kernel drops a dead process's locks, so a crash never leaks a slot.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path


class Slots:
    def __init__(self, directory: Path, count: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._paths = [directory / f"execution-slot-{i}.lock" for i in range(count)]

    def _try(self) -> int | None:
        for path in self._paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    def hold(self, seconds: float) -> float:
        """Wait for a free slot (in turn), then keep it for `seconds`, holding no thread meanwhile: a timer
        gives it back. Returns the time.monotonic() at which the slot was taken."""
        fd = self._try()
        while fd is None:
            time.sleep(0.002)
            fd = self._try()
        taken = time.monotonic()
        timer = threading.Timer(seconds, os.close, args=(fd,))  # closing the file drops its lock
        timer.daemon = True
        timer.start()
        return taken
