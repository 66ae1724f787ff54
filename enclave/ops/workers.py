"""`enclave serve`: one API process, or N worker processes on one port sharing their metrics.

With one worker the app runs in this process, as it always has. With N, uvicorn's supervisor starts N
processes that each build the app from the environment (`enclave.api.app:app_from_env`), so the settings
reach them as the same `ENCLAVE_*` variables; the embedded store (SQLite, WAL, BEGIN IMMEDIATE) is safe
across processes, and the state check runs once here first, so a store the enclave refuses is one clear
error rather than N crashing workers.

Metrics of several processes: prometheus-client's multiprocess mode. When `PROMETHEUS_MULTIPROC_DIR` is
unset, a private directory is made for this run (owner-only, removed at exit) before any worker starts;
an operator's own directory is used as it is (empty it before a start, as prometheus-client requires). A
reaper thread marks the files of workers that died (a crash, `kill -9`, uvicorn's restart) with
`multiprocess.mark_process_dead`, so live gauges count live workers only; counters of dead workers stay,
as counters must.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from prometheus_client import multiprocess

from enclave.ops import logs
from enclave.ops.metrics import MULTIPROC_ENV
from enclave.settings import Settings

APP_FACTORY = "enclave.api.app:app_from_env"
_DB_FILE = re.compile(r"_(\d+)\.db$")
REAP_SECONDS = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead(directory: Path, reaped: set[int]) -> list[int]:
    """Mark every process with files in `directory` that is no longer running as dead; returns the new ones."""
    found = set()
    for path in directory.glob("*.db"):
        match = _DB_FILE.search(path.name)
        if match:
            found.add(int(match.group(1)))
    dead = sorted(pid for pid in found - reaped if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
        reaped.add(pid)
    return dead


class Reaper(threading.Thread):
    def __init__(self, directory: Path) -> None:
        super().__init__(name="metrics-reaper", daemon=True)
        self.directory = directory
        self.stopped = threading.Event()

    def run(self) -> None:
        reaped: set[int] = set()
        while not self.stopped.wait(REAP_SECONDS):
            for pid in reap_dead(self.directory, reaped):
                logs.logger().info("worker.reaped", worker_pid=pid)


def serve(host: str, port: int, workers: int) -> int:
    import uvicorn

    settings = Settings()  # refuses bad settings (a production start without a pepper) here, once
    logs.configure(settings.log_format)
    logs.logger().info("serve.starting", host=host, port=port, workers=workers, log_format=settings.log_format)
    if workers == 1:
        from enclave.api import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", log_config=None,
                    access_log=False)
        logs.logger().info("serve.stopped")
        return 0
    from enclave.pipeline import Enclave

    Enclave(settings).close()  # the start-up state check, once, before any worker: StoreError stops here
    private = None
    if not os.environ.get(MULTIPROC_ENV):
        private = Path(tempfile.mkdtemp(prefix="enclave-metrics-"))
        os.environ[MULTIPROC_ENV] = str(private)
    reaper = Reaper(Path(os.environ[MULTIPROC_ENV]))
    reaper.start()
    try:
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level="warning",
                    log_config=None, access_log=False)
    finally:
        reaper.stopped.set()
        reaper.join(timeout=5)
        if private is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(private, ignore_errors=True)
    logs.logger().info("serve.stopped")
    return 0
