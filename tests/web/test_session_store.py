"""The session store on its own: ids, expiry (idle and absolute), closing, in memory and in a real Redis."""

from __future__ import annotations

from hashlib import sha256

import pytest
import redis

from enclave.web import sessions as sessions_module
from enclave.web.sessions import Sessions, SessionsUnavailable


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Sessions:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Sessions(idle_seconds=60, max_seconds=600, redis_url=url, namespace="test")


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000_000.0
        monkeypatch.setattr(sessions_module.time, "time", lambda: self.now)


def test_a_session_is_found_by_its_id_and_holds_no_secret(store: Sessions) -> None:
    session_id, session = store.open("abcd", "alice")
    found = store.find(session_id)
    assert found is not None
    assert (found.key_id, found.principal, found.csrf) == ("abcd", "alice", session.csrf)
    assert store.find(session_id + "x") is None
    assert len(session_id) >= 43
    assert session.csrf != session_id


def test_each_sign_in_gets_a_new_id_and_token(store: Sessions) -> None:
    first, a = store.open("abcd", "alice")
    second, b = store.open("abcd", "alice")
    assert first != second
    assert a.csrf != b.csrf


def test_idle_and_absolute_expiry(store: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    session_id, _ = store.open("abcd", "alice")
    for _ in range(12):  # active every 50 s: alive until the absolute limit (600 s)
        clock.now += 50
        assert store.find(session_id) is not None
    clock.now += 50
    assert store.find(session_id) is None  # 650 s after sign-in
    idle_id, _ = store.open("abcd", "alice")
    clock.now += 61
    assert store.find(idle_id) is None


def test_closing_ends_it(store: Sessions) -> None:
    session_id, _ = store.open("abcd", "alice")
    store.close(session_id)
    assert store.find(session_id) is None


def test_redis_holds_digests_with_the_idle_ttl(redis_url: str) -> None:
    store = Sessions(idle_seconds=60, max_seconds=600, redis_url=redis_url, namespace="ttl")
    session_id, _ = store.open("abcd", "alice")
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.keys("enclave:ttl:session:*")]
    assert keys == [f"enclave:ttl:session:{sha256(session_id.encode()).hexdigest()}"]
    assert session_id.encode() not in client.get(keys[0])
    assert 0 < client.ttl(keys[0]) <= 60
    client.close()


def test_an_unreachable_redis_lets_nobody_in() -> None:
    store = Sessions(idle_seconds=60, max_seconds=600, redis_url="redis://127.0.0.1:9/0", namespace="gone")
    with pytest.raises(SessionsUnavailable):
        store.open("abcd", "alice")
    with pytest.raises(SessionsUnavailable):
        store.find("anything")
