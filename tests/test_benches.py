"""Benches do not rot: every script in bench/ runs at its `--tiny` size, exits 0 and prints its ratios.

Scripts are found by globbing bench/*.py (but `_*.py`, the helpers benches share), so a new bench is picked
up without editing this file, and one without a `--tiny` flag fails here (argparse refuses the flag with
exit status 2). Each runs as its own process from this checkout, with its temporary state (demo
databases, audit logs) under pytest's tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclave.settings import PROJECT_ROOT
from tests import stores

BENCHES = sorted(p for p in (PROJECT_ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
# a ratio as the benches print them: "8.9x", "0.012x", "1,234x"
RATIO = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?x\b")
README = (PROJECT_ROOT / "README.md").read_text()


def test_there_are_benches() -> None:
    assert len(BENCHES) >= 4, BENCHES


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_each_bench_runs_at_its_tiny_size(script: Path, tmp_path: Path) -> None:
    if script.name == "service_faults.py":
        pytest.skip("run at its tiny size, with its faults, by tests/test_service_faults.py")
    if script.name == "service_load.py":  # skipped where there is no PostgreSQL or redis-server (failed in CI)
        stores.server()
        stores.redis_binary()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TMPDIR": str(tmp_path),
           "ENCLAVE_HOME": str(tmp_path / "home")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path, env=env)
    seconds = time.perf_counter() - started
    if script.name == "service_load.py" and done.returncode == 2 and "needs wrk" in done.stderr:
        pytest.skip(done.stderr.strip())  # no wrk on PATH, and apt-get could not install it
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    ratios = [line for line in done.stdout.splitlines() if RATIO.search(line)]
    assert ratios, done.stdout
    assert "Traceback" not in done.stderr
    limit = 60 if script.name == "service_load.py" else 120  # both modes of the service, each route 2 s
    assert seconds < limit, f"{script.name} --tiny took {seconds:.0f}s"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("enclave-bench-")]
    assert leftovers == [], leftovers  # a bench removes the state it made


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_each_bench_is_documented(script: Path) -> None:
    """The README says how to run it, and the script's own usage line names its tiny mode."""
    assert f"bench/{script.name}" in README
    assert "--tiny" in script.read_text().split('"""')[1]


def test_the_ratio_pattern_matches_what_benches_print() -> None:
    assert RATIO.search("check                      16.36     55.48          8.9x")
    assert RATIO.search("(Splink 1,140x the time)")
    assert not RATIO.search("0x1f 12.5 max 3")
