"""Structured logs (structlog): one line per HTTP request and one per lifecycle event, on standard error.

`ENCLAVE_LOG_FORMAT=json` (production) writes one JSON object a line; `console` (the default, for the demo)
writes the same fields as `key=value` text. Every line has `timestamp`, `level`, `event` and `pid`; request
lines add `request_id`, `method`, `route` (the route template, never the raw URL or query string), `status`
and `duration_ms`.

What is never logged: SQL, template parameters, query results, API keys, header values or anything else a
researcher sends, with one exception, a request id in `X-Request-ID` that is a safe token (see
`request_id`). Exceptions are logged by type only: a traceback can carry an engine message that echoes a
data value. The enclave's own code logs nothing else (the pipeline and the commands write nothing but
their output; tests/test_output_hygiene.py holds them to it), and uvicorn's own records go through the
same renderer.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

FORMATS = ("console", "json")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_HANDLER_NAME = "enclave-structlog"


def request_id(sent: str | None) -> str:
    """The client's `X-Request-ID` when it is a safe token (1 to 64 letters, digits and `._:-`, starting
    with a letter or digit), else a fresh random one: nothing else a client sends reaches a log line."""
    if sent is not None and _SAFE_REQUEST_ID.fullmatch(sent):
        return sent
    return secrets.token_hex(16)


class _Stderr:
    """Standard error as it is when a line is written (tests and servers may swap `sys.stderr`)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _add_pid(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["pid"] = os.getpid()
    return event


def _exception_type_only(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace exception information (a traceback, a message) by the exception's type name."""
    info = event.pop("exc_info", None)
    event.pop("exception", None)
    if info:
        error = info[1] if isinstance(info, tuple) else (info if isinstance(info, BaseException) else
                                                         sys.exc_info()[1])
        if error is not None:
            event["error_type"] = type(error).__name__
    return event


def _stdlib_record(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A stdlib record (uvicorn's server messages: start-up failures, worker deaths) keeps its logger name
    and at most 200 characters of its message; the access log, which quotes request lines, is off."""
    record = event.get("_record")
    if record is not None:
        event["logger"] = record.name
        event["event"] = str(event.get("event", ""))[:200]
    return event


def configure(log_format: str = "console") -> None:
    """Configure structlog, and uvicorn's loggers through the same renderer; idempotent, per process."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    renderer: Any = (structlog.processors.JSONRenderer() if log_format == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                         structlog.processors.TimeStamper(fmt="iso", utc=True), _add_pid, _exception_type_only]
    structlog.configure(processors=[*shared, renderer], logger_factory=structlog.PrintLoggerFactory(_Stderr()),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                        cache_logger_on_first_use=False)
    handler = next((h for h in logging.getLogger("uvicorn").handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(_Stderr())  # type: ignore[arg-type]
        handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _stdlib_record],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers = [handler] if name == "uvicorn" else []
        named.propagate = name != "uvicorn"
    logging.getLogger("uvicorn.access").disabled = True  # the raw request line: our request lines replace it


def logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("enclave")
