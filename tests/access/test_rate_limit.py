"""Rate limits per API key: in memory for one process, shared through a real Redis across workers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from enclave.api.deps import RateLimiter
from enclave.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide redis-server (.ci/run installs it)")
        pytest.skip("redis-server is not installed on this machine")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_each_key_has_its_own_limit_in_memory(tmp_path):
    limiter = RateLimiter(Settings(home=tmp_path, rate_limit="3/minute"))
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")


def test_workers_share_one_limit_through_redis(tmp_path, redis_url):
    settings = Settings(home=tmp_path, rate_limit="5/minute", redis_url=redis_url)
    first, second = RateLimiter(settings), RateLimiter(settings)  # two workers, one Redis
    allowed = [limiter.allow("key-1") for limiter in (first, second) * 4]
    assert allowed.count(True) == 5
    assert not first.allow("key-1")
    assert second.allow("key-2")
