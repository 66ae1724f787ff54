"""`enclave serve` (the API and the web pages under uvicorn) and `enclave worker` (asynchronous queries)."""

from __future__ import annotations

import argparse
import sys

from enclave.audit.store import StoreError
from enclave.settings import Settings


def serve(args: argparse.Namespace) -> int:
    from enclave.ops import workers

    try:
        return workers.serve(args.host, args.port, args.workers)
    except StoreError as error:
        print(error, file=sys.stderr)
        return 2


def worker(args: argparse.Namespace) -> int:
    from enclave.jobs.worker import run_workers

    try:
        return run_workers(Settings(), max(1, args.concurrency))
    except StoreError as error:
        print(error, file=sys.stderr)
        return 2
