"""docs/client.md is true to the real API: its Python walkthrough runs against the service, its curl
commands are answered without an error, and every route its R code asks for exists with that method."""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import redirect_stdout
from io import StringIO

import pytest

from enclave.settings import PROJECT_ROOT
from tests.api.conftest import Service
from tests.api.test_template_flow import TEMPLATE

DOC = (PROJECT_ROOT / "docs" / "client.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def approved(service: Service) -> int:
    """The template the walkthrough runs, approved as a reviewer would: the doc's curl names it as 1."""
    proposed = service.client("alice").post("/v1/templates", json=TEMPLATE).json()
    service.client("reviewer").post(f"/v1/templates/{proposed['id']}/approve", json={"reason": "bounded, public keys"})
    return proposed["id"]


def _expected(block: str) -> list[str]:
    """The output a block shows in its comments after `print(error)` (where "..." stands for any text)."""
    lines = block.split("print(error)\n", 1)[1].splitlines() if "print(error)\n" in block else []
    return [line.strip()[2:] for line in lines if line.strip().startswith("# ")]


def test_the_python_walkthrough_runs_as_written(service: Service, approved: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert approved == 1
    monkeypatch.setenv("ENCLAVE_URL", service.base_url)
    monkeypatch.setenv("ENCLAVE_TOKEN", service.keys["alice"])
    namespace: dict[str, object] = {}
    python = blocks("python")
    assert len(python) >= 8
    for block in python:
        out = StringIO()
        with redirect_stdout(out):
            exec(compile(block, "docs/client.md", "exec"), namespace)  # our own documentation
        expected, printed_lines = _expected(block), out.getvalue().splitlines()
        assert len(printed_lines) >= len(expected), printed_lines
        for shown, printed in zip(expected, printed_lines, strict=False):
            pattern = ".*".join(re.escape(part) for part in shown.split("..."))
            assert re.fullmatch(pattern, printed), (shown, printed)
    assert str(namespace["report"]).startswith("accepted")
    assert sum(bool(_expected(block)) for block in python) == 1  # the rejection's text, carets and all
    assert namespace["by_grade"].epsilon == 0.25  # type: ignore[attr-defined]


def _commands(block: str) -> tuple[str, list[str]]:
    joined = block.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip()]
    return lines[0], lines[1:]


def test_the_curl_commands_are_answered(service: Service, approved: int) -> None:
    (block,) = blocks("sh")[1:]
    setup, commands = _commands(block)
    assert setup.startswith("AUTH=")
    env = {**os.environ, "ENCLAVE_URL": service.base_url, "ENCLAVE_TOKEN": service.keys["alice"]}
    for command in commands:
        assert command.startswith("curl -s ")
        done = subprocess.run(["bash", "-c", f"{setup}\n{command}"], capture_output=True, text=True, env=env,
                              check=True, timeout=60)
        answer = json.loads(done.stdout)
        assert not (isinstance(answer, dict) and answer.get("ok") is False), (command, answer)


def test_every_route_the_r_code_asks_for_exists(service: Service) -> None:
    (block,) = blocks("r")
    paths = service.app.openapi()["paths"]
    asked = re.findall(r'enclave\("([^"]+)"\)( \|>\n\s*req_body_json)?', block)
    assert len(asked) >= 5
    for path, body in asked:
        route = f"/v1/{path}"
        assert route in paths, route
        assert ("post" if body else "get") in paths[route], route

