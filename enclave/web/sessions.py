"""Server-side sessions of the web pages: a random id in an HttpOnly cookie, everything else in a store.

A session names the API key it was opened with (its id, never its secret) and a CSRF token; each request
looks the key up again, so a revoked key or a changed role takes effect on the next page. Sessions expire
after `session_idle_minutes` without a request, and after `session_hours` whatever happens. The store
keeps sessions under the SHA-256 of their id, so what it holds cannot be replayed as a cookie.

One process (the embedded default) keeps them in memory; with `ENCLAVE_REDIS_URL` they live in Redis,
so every API worker knows every session. Redis holds nothing that cannot be lost: if it is flushed,
people sign in again.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from hashlib import sha256
from typing import Protocol

import redis

COOKIE = "enclave_session"


@dataclass(frozen=True)
class Session:
    key_id: str
    principal: str
    csrf: str
    opened: float
    seen: float


def _digest(session_id: str) -> str:
    return sha256(session_id.encode()).hexdigest()


class SessionsUnavailable(Exception):
    """The session store cannot be reached (Redis restarting): pages answer 503, and nobody is let in."""


class _Backend(Protocol):
    def put(self, digest: str, session: Session, ttl: int) -> None: ...
    def get(self, digest: str) -> Session | None: ...
    def delete(self, digest: str) -> None: ...


class _Memory:
    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._lock = threading.Lock()

    def put(self, digest: str, session: Session, ttl: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._sessions = {d: v for d, v in self._sessions.items() if v[1] > now}  # drop the expired
            self._sessions[digest] = (session, now + ttl)

    def get(self, digest: str) -> Session | None:
        with self._lock:
            found = self._sessions.get(digest)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def delete(self, digest: str) -> None:
        with self._lock:
            self._sessions.pop(digest, None)


class _Redis:
    def __init__(self, url: str, namespace: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._prefix = f"enclave:{namespace}:session:"

    def put(self, digest: str, session: Session, ttl: int) -> None:
        with _reached():
            self._redis.set(self._prefix + digest, json.dumps(asdict(session)), ex=ttl)

    def get(self, digest: str) -> Session | None:
        with _reached():
            found = self._redis.get(self._prefix + digest)
        return Session(**json.loads(found)) if found else None

    def delete(self, digest: str) -> None:
        with _reached():
            self._redis.delete(self._prefix + digest)


@contextmanager
def _reached() -> Iterator[None]:
    try:
        yield
    except redis.RedisError:
        raise SessionsUnavailable from None


class Sessions:
    """Open, find (touching its idle time) and close sessions."""

    def __init__(self, idle_seconds: int, max_seconds: int, redis_url: str | None = None,
                 namespace: str = "") -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._backend: _Backend = _Redis(redis_url, namespace) if redis_url else _Memory()

    def open(self, key_id: str, principal: str) -> tuple[str, Session]:
        """A new session (a new id at every sign-in, so an id planted before it is worth nothing)."""
        session_id, now = secrets.token_urlsafe(32), time.time()
        session = Session(key_id, principal, secrets.token_urlsafe(32), now, now)
        self._backend.put(_digest(session_id), session, self.idle_seconds)
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The live session of this id, its idle clock restarted; None if unknown or expired."""
        digest = _digest(session_id)
        session = self._backend.get(digest)
        now = time.time()
        if session is None or now - session.seen > self.idle_seconds or now - session.opened > self.max_seconds:
            return None
        touched = Session(session.key_id, session.principal, session.csrf, session.opened, now)
        self._backend.put(digest, touched, self.idle_seconds)
        return touched

    def close(self, session_id: str) -> None:
        self._backend.delete(_digest(session_id))
