"""Released answers in Redis, shared by every API and query worker: a read-through cache of the store's
`releases` table, keyed by the request key (enclave.disclosure.replay).

A released answer is final for its key (researcher, dataset, data version, canonical SQL, ε), so a
cached payload never goes stale; it is written only after its release committed, so the cache never
holds an answer the store does not. A replay still appends its `query.replayed` record (with the
payload's SHA-256) before it answers: the cache saves the read of the payload, never the record.
Redis holds nothing that cannot be lost: a miss, a flush or an unreachable Redis costs one read of the
store. After an error the cache is skipped for a few seconds, so a lost Redis does not slow every
request by a connection timeout.
"""

from __future__ import annotations

import time

import redis

TTL_SECONDS = 7 * 24 * 3600
BACKOFF_SECONDS = 5.0


class ReleaseCache:
    def __init__(self, client: redis.Redis | None, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:release:"
        self._skip_until = 0.0

    @classmethod
    def connect(cls, url: str | None, namespace: str) -> ReleaseCache:
        """The cache on the Redis at `url`; without one, a cache that never holds anything."""
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) if url else None
        return cls(client, namespace)

    def _usable(self) -> redis.Redis | None:
        return self._client if self._client is not None and time.monotonic() >= self._skip_until else None

    def _failed(self) -> None:
        self._skip_until = time.monotonic() + BACKOFF_SECONDS

    def get(self, key: str) -> str | None:
        client = self._usable()
        if client is None:
            return None
        try:
            value = client.get(self._prefix + key)
        except redis.RedisError:
            self._failed()
            return None
        return value.decode() if isinstance(value, bytes) else value

    def clear(self) -> int:
        """Forget every cached answer of this enclave (after a restore: the store may no longer hold them);
        returns how many there were. Raises if Redis cannot be reached: a restore must not leave them."""
        if self._client is None:
            return 0
        keys = list(self._client.scan_iter(match=self._prefix + "*", count=1000))
        return int(self._client.delete(*keys)) if keys else 0

    def put(self, key: str, payload: str) -> None:
        client = self._usable()
        if client is None:
            return
        try:
            client.set(self._prefix + key, payload, ex=TTL_SECONDS)
        except redis.RedisError:
            self._failed()
