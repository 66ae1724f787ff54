"""The deployed layout survives its faults: during a load on 2 API workers and 1 query worker (one
PostgreSQL, one Redis), one API worker and one query worker are killed with SIGKILL and Redis is
restarted. Afterwards no query was charged twice or released twice, spent ε is within the cap, every
answer a client got has its audit record, the log verifies, the ledger rebuilt from the log equals the
live one, every governed table is the log's projection, the killed workers were replaced, and no
request was answered with a 5xx. `bench/service_faults.py --faults` does the work and the checks; this
test asserts what it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from enclave.settings import PROJECT_ROOT
from tests import stores

BENCH = PROJECT_ROOT / "bench" / "service_faults.py"


@pytest.mark.slow
def test_killed_workers_and_a_restarted_redis_break_no_invariant(tmp_path):
    stores.server()  # skipped where there is neither a PostgreSQL nor a way to start one (failed in CI)
    stores.redis_binary()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCH), "--tiny", "--faults", "--json"], capture_output=True,
                          text=True, timeout=300, check=False, cwd=tmp_path, env=env)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    summary = json.loads(done.stdout)
    assert summary["problems"] == []
    assert [fault.split(" ")[0] for fault in summary["faults"]] == ["api", "query", "redis"]
    assert all("killed (-9)" in fault for fault in summary["faults"][:2]), summary["faults"]
    store = summary["store"]
    assert 0 < store["spent_epsilon"] <= store["cap"]
    assert 0 < store["released"] <= store["charged"]  # a worker killed after a charge leaves it spent, unreleased
    assert summary["answers"] > 0
    outcomes = {route: row["outcomes"] for route, row in summary["routes"].items()}
    assert outcomes["POST /v1/queries (async)"].get("202", 0) > 0
    assert not [o for route in outcomes.values() for o in route if o.startswith("5")]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("enclave-bench-")] == []
