"""Rate limits per API key: in memory for one process, shared through a real Redis across workers
(`redis_url`: tests/conftest.py)."""

from __future__ import annotations

import socket

from enclave.api.deps import RateLimiter
from enclave.settings import Settings


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


def test_without_its_redis_a_worker_limits_on_its_own_and_never_fails(tmp_path):
    """Redis holds nothing that cannot be lost: while it is away (restarted, unreachable) each worker keeps
    limiting in its own memory, and a request is never answered with an error because of it."""
    with socket.socket() as sock:  # a real port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = RateLimiter(Settings(home=tmp_path, rate_limit="3/minute", redis_url=f"redis://127.0.0.1:{port}"))
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
