"""The HTTP edge's own observation: a request id, one log line and the request metrics per request.

Outermost of the app's middleware, so every answer is seen, refusals of the body limit and unmatched
paths included. The route is the matched route's template (`/v1/queries/{query_id}`), `unmatched` when no
route matched: never the raw path or query string, which can carry what a client wrote.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.ops import logs, metrics

REQUEST_ID_HEADER = b"x-request-id"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(REQUEST_ID_HEADER)
        rid = logs.request_id(sent.decode("latin-1") if sent is not None else None)
        status = 500  # unless the app answers otherwise
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = route_template(scope)
                method = scope["method"] if scope["method"] in METHODS else "other"  # a client can send any
                metrics.REQUESTS.labels(route, method, str(status)).inc()
                metrics.REQUEST_SECONDS.labels(route, method).observe(elapsed)
                logs.logger().info("http.request", method=method, route=route, status=status,
                                   duration_ms=round(elapsed * 1000, 3))
