"""Rate limits per API key: in memory for one process, shared through a real Redis across workers
(`redis_url`: tests/conftest.py)."""

from __future__ import annotations

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
