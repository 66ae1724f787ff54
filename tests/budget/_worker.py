"""A separate OS process for tests/budget/test_concurrency.py (run as a script, never collected).

    race HOME CHILDREN FIRST COUNT EPSILON READY GO
        Open an Enclave on HOME, start COUNT threads that each send a different query (numbers FIRST ..
        FIRST+COUNT-1) as researcher "r", touch READY once every thread waits at the start line, wait
        for the file GO, release them together, and print one JSON line per query on stdout.

    hang HOME CHILDREN SQL EPSILON
        Open an Enclave on HOME, grant "r" ε 1.0 / δ 1e-5 on "demo", replace `Sandbox.execute` with a
        60 s sleep (this test's own patch: the query is charged and then never released), and send SQL.
        The test kills this process with SIGKILL while it sleeps.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from enclave.budget.ledger import grant
from enclave.execute.sandbox import RawResult, Sandbox
from enclave.pipeline import Enclave, QueryError
from enclave.settings import Settings

RACE_SQL = "SELECT school, COUNT(*) FROM enrollments WHERE grade <> {i} GROUP BY school"


def race(home: Path, children: int, first: int, count: int, epsilon: float, ready: Path, go: Path) -> None:
    enclave = Enclave(Settings(home=home, demo_children=children))
    enclave.data_version("demo")  # open the sandbox now, so that the threads start level
    start_line = threading.Barrier(count + 1)
    results: list[dict[str, object]] = [{} for _ in range(count)]

    def run(k: int) -> None:
        i = first + k
        start_line.wait()
        started = time.time()
        try:
            release = enclave.query("r", "demo", RACE_SQL.format(i=i), epsilon)
        except QueryError as error:
            outcome: dict[str, object] = {"ok": False, "code": error.code}
        except Exception as error:  # reported, so the test fails with it
            outcome = {"ok": False, "code": f"unexpected {type(error).__name__}: {error}"}
        else:
            outcome = {"ok": True, "replayed": release.replayed, "query_id": release.query_id,
                       "epsilon_remaining": release.epsilon_remaining}
        results[k] = {"i": i, "pid": os.getpid(), "started": started, "ended": time.time(), **outcome}

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    while start_line.n_waiting < count:
        time.sleep(0.001)
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    start_line.wait()
    for thread in threads:
        thread.join()
    enclave.close()
    for result in results:
        print(json.dumps(result), flush=True)


def hang(home: Path, children: int, sql: str, epsilon: float) -> None:
    enclave = Enclave(Settings(home=home, demo_children=children))
    with enclave.audit.transaction() as tx:
        grant(tx, "steward", "r", "demo", 1.0, 1e-5)

    def sleeping_execute(self: Sandbox, sql: str, consented: object = None, deadline: object = None) -> RawResult:
        time.sleep(60)
        raise AssertionError("the test should have killed this process")

    Sandbox.execute = sleeping_execute  # type: ignore[method-assign]
    enclave.query("r", "demo", sql, epsilon)
    raise AssertionError("the query should never have returned")


def main(argv: list[str]) -> None:
    mode, home, children = argv[0], Path(argv[1]), int(argv[2])
    if mode == "race":
        race(home, children, int(argv[3]), int(argv[4]), float(argv[5]), Path(argv[6]), Path(argv[7]))
    elif mode == "hang":
        hang(home, children, argv[3], float(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
