"""The log renderer: JSON or text, a pid on every line, exceptions by type only, uvicorn's records too."""

from __future__ import annotations

import json
import logging

import pytest

from enclave.ops import logs

SECRET = "value_in_an_exception_3b7c"


def test_exceptions_are_logged_by_type_without_message_or_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    uvicorn_error = logging.getLogger("uvicorn.error")
    level = uvicorn_error.level
    uvicorn_error.setLevel(logging.INFO)
    try:
        try:
            raise ValueError(SECRET)
        except ValueError:
            logs.logger().exception("ours")
            uvicorn_error.exception("Exception in ASGI application")
        logging.getLogger("uvicorn.access").warning("GET /%s HTTP/1.1", SECRET)  # the access log is off
    finally:
        uvicorn_error.setLevel(level)
        logs.configure("console")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "Traceback" not in err
    ours, server = (json.loads(line) for line in err.splitlines())
    assert ours["event"] == "ours"
    assert ours["error_type"] == "ValueError"
    assert server["logger"] == "uvicorn.error"
    assert server["error_type"] == "ValueError"
    assert {"timestamp", "level", "pid"} <= set(ours) & set(server)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="console, json"):
        logs.configure("xml")


@pytest.mark.parametrize("sent", ["abc", "A-1.b_2:c", "9" * 64])
def test_a_safe_request_id_is_kept(sent: str) -> None:
    assert logs.request_id(sent) == sent


@pytest.mark.parametrize("sent", [None, "", "a b", "9" * 65, "-a", "a\nb", "é", "a/b", "a;b=c"])
def test_anything_else_gets_a_fresh_id(sent: str | None) -> None:
    fresh = logs.request_id(sent)
    assert fresh != sent
    assert len(fresh) == 32
