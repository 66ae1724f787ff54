"""Nothing of a researcher's SQL or of the data reaches a log or a stream but the audit log; `--json` is JSON.

The marker below stands for anything a researcher writes (a column name, a literal that might be a data
value). Each test sends it through a real entry point (the pipeline, the `enclave` command in a process
of its own, the service under uvicorn in a process of its own) and reads everything that could have been
written: logging records, the process's standard output and error, the server's output.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enclave.catalog.demo import DemoData
from enclave.cli import main
from enclave.pipeline import Enclave, QueryError
from enclave.settings import PROJECT_ROOT
from tests.conftest import TEST_CHILDREN

MARKER = "secret_marker_7f3a"
# this checkout's command (an installed `enclave` script may belong to another checkout)
ENCLAVE = [sys.executable, "-m", "enclave.cli"]
# odd inputs the check refuses, some of which make sqlglot talk: unsupported statements, table functions, casts
ODD_SQL = (
    f"EXPLAIN ANALYZE SELECT {MARKER} FROM t",
    f"EXPLAIN SELECT count(*) FROM children WHERE home_zip = '{MARKER}'",
    f"SHOW {MARKER}",
    f"SET {MARKER} = 1",
    f"PRAGMA {MARKER}",
    f"COPY (SELECT '{MARKER}') TO '/tmp/{MARKER}.csv'",
    f"SELECT {MARKER} FROM t; DROP TABLE {MARKER}",
    f"SELECT count(*) FROM read_csv('/tmp/{MARKER}')",
    f"SELECT CAST(gender AS {MARKER}) AS g, COUNT(*) AS n FROM children GROUP BY 1",
    f"SELECT '{MARKER}",
    f"SELECT {MARKER}(gender) AS g, COUNT(*) AS n FROM children GROUP BY 1",
)
# accepted and run: the marker as a literal that could have been a data value
WITH_LITERAL = f"SELECT gender, COUNT(*) AS n FROM children WHERE home_zip <> '{MARKER}' GROUP BY gender"
UNBOUNDED = "SELECT days_enrolled * 1000 + days_absent AS k, COUNT(*) AS n FROM enrollments GROUP BY 1"
ACCEPTED = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
RESTRICTED = "SELECT person_id, COUNT(*) AS n FROM children GROUP BY person_id"


def home_with_demo(root: Path, demo_data: DemoData) -> Path:
    """An enclave home whose data/ links to the shared demo database (read-only), as tests/conftest does."""
    (root / "data").mkdir(parents=True)
    (root / "data" / demo_data.directory.name).symlink_to(demo_data.directory)
    return root


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "ENCLAVE_HOME": str(home), "ENCLAVE_DEMO_CHILDREN": str(TEST_CHILDREN),
            "PYTHONPATH": str(PROJECT_ROOT)}


def test_the_pipeline_logs_nothing_of_the_sql_or_the_data(fresh_enclave: Enclave, caplog: pytest.LogCaptureFixture,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """Check, prepare, plan and run every odd input: no logging record at all, nothing on stdout or stderr,
    while the audit log holds every one of them (it is the one place the SQL belongs)."""
    fresh_enclave.ensure_demo_grant()
    with caplog.at_level(logging.DEBUG):  # the root logger, and so every logger that propagates
        for sql in ODD_SQL:
            fresh_enclave.check("demo", sql)
            with pytest.raises(QueryError):
                fresh_enclave.query("demo-researcher", "demo", sql, 0.1)
        released = fresh_enclave.query("demo-researcher", "demo", WITH_LITERAL, 0.1)
    out, err = capfd.readouterr()
    assert released.rows
    assert [(r.name, r.getMessage()) for r in caplog.records] == []
    assert (out, err) == ("", "")
    audited = json.dumps(fresh_enclave.audit.records())
    assert all(json.dumps(sql)[1:-1] in audited for sql in (*ODD_SQL, WITH_LITERAL))


def test_the_sqlglot_logger_is_silenced_at_import() -> None:
    """The setting itself, so that a new sqlglot message (any level) cannot reach a handler."""
    import enclave  # noqa: F401 - the package's import is what sets it

    sqlglot_logger = logging.getLogger("sqlglot")
    assert sqlglot_logger.level > logging.CRITICAL
    assert sqlglot_logger.propagate is False
    assert not logging.getLogger("sqlglot.parser").isEnabledFor(logging.CRITICAL)


@pytest.mark.parametrize("sql", ODD_SQL[:3])
def test_the_command_writes_nothing_of_the_sql_to_stderr(tmp_path: Path, demo_data: DemoData, sql: str) -> None:
    """`enclave check` and `enclave query` in a process of their own: the refusal on stdout, stderr empty."""
    env = env_for(home_with_demo(tmp_path, demo_data))
    for command in (["check", sql], ["query", sql], ["check", "--json", sql], ["query", "--json", sql]):
        done = subprocess.run([*ENCLAVE, *command], capture_output=True, text=True, timeout=120,
                              check=False, env=env, cwd=tmp_path)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert done.stderr == "", command
        assert done.stdout.startswith(("refused:", "{")), command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_service_writes_nothing_of_the_sql_to_its_output(tmp_path: Path, demo_data: DemoData) -> None:
    """`enclave serve` in its own process (JSON logs), fed every odd input on the check, query and template
    routes and malformed bodies carrying the marker as values, and the marker in headers too: its stdout
    and stderr never contain the marker or the API key, no validation error echoes a value back, and its
    log is one JSON line per request with the request's id, method, route template and status."""
    home = home_with_demo(tmp_path / "home", demo_data)
    env = {**env_for(home), "ENCLAVE_LOG_FORMAT": "json"}

    def cli(*args: str) -> str:
        return subprocess.run([*ENCLAVE, *args], capture_output=True, text=True, timeout=120, check=True,
                              env=env, cwd=tmp_path).stdout

    key = cli("keys", "create", "--name", "rita", "--role", "researcher").strip()
    cli("grants", "create", "--researcher", "rita", "--purpose", "study", "--epsilon", "50")
    port = _free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        server = subprocess.Popen([*ENCLAVE, "serve", "--port", str(port)], stdout=stdout, stderr=stderr,
                                  env=env, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, err.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        marked = {"User-Agent": MARKER, "X-Note": MARKER, "X-Request-ID": f"{MARKER} is no token"}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}", **marked}, timeout=60) as client:
            released = client.post("/v1/queries", json={"dataset": "demo", "sql": WITH_LITERAL, "epsilon": 0.1},
                                   headers={"X-Request-ID": "hygiene-request-1"})
            assert released.status_code == 200, released.text
            assert released.headers["x-request-id"] == "hygiene-request-1"
            assert client.get(f"/v1/queries/{MARKER}", params={MARKER: MARKER}).status_code == 404
            for sql in (*ODD_SQL, WITH_LITERAL):
                for path in ("/v1/queries/check", "/v1/queries"):
                    assert client.post(path, json={"dataset": "demo", "sql": sql, "epsilon": 0.1}).status_code in (
                        200, 400)
                template = {"title": "odd", "purpose": "odd input", "dataset": "demo", "sql": sql, "epsilon": 0.1,
                            "run_limit": 1}
                assert client.post("/v1/templates", json=template).status_code in (201, 400, 422)
            for body in ({"dataset": "demo", "sql": ACCEPTED, "epsilon": MARKER},
                         {"dataset": "demo", "sql": ACCEPTED, "epsilon": [MARKER]},
                         {"dataset": "demo", "sql": {"text": MARKER}},
                         {"dataset": "demo", "sql": MARKER * 2000},
                         {"dataset": MARKER * 10, "sql": ACCEPTED},
                         {"dataset": "demo", "sql": ACCEPTED, "purpose": MARKER * 100}):
                for path in ("/v1/queries/check", "/v1/queries"):
                    response = client.post(path, json=body)
                    assert response.status_code == 422, response.text
                    assert MARKER not in response.text
            raw = client.post("/v1/queries", content=f'{{"dataset": "demo", "sql": "{MARKER}"',
                              headers={"Content-Type": "application/json"})
            assert raw.status_code == 422
            assert MARKER not in raw.text
    finally:
        server.terminate()
        server.wait(timeout=30)
    for text in (out.read_text(), err.read_text()):
        assert MARKER not in text
        assert key not in text
        assert key.split("_")[1] not in text  # nor the key's id
    lines = [json.loads(line) for line in err.read_text().splitlines()]  # every line is JSON
    requests = [line for line in lines if line["event"] == "http.request"]
    assert {"request_id": "hygiene-request-1", "method": "POST", "route": "/v1/queries", "status": 200} in [
        {k: line[k] for k in ("request_id", "method", "route", "status")} for line in requests]
    assert {line["route"] for line in requests} >= {"/healthz", "/v1/queries", "/v1/queries/check",
                                                   "/v1/templates", "/v1/queries/{query_id}"}
    assert all(set(line) == {"event", "level", "timestamp", "pid", "request_id", "method", "route", "status",
                             "duration_ms"} for line in requests)


# --- `--json`: every outcome of `enclave check` and `enclave query` is one JSON document on stdout ---

def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, json.loads(out), err


@pytest.fixture
def cli_home(tmp_path: Path, demo_data: DemoData, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = home_with_demo(tmp_path, demo_data)
    for name, value in env_for(home).items():
        if name.startswith("ENCLAVE_"):
            monkeypatch.setenv(name, value)
    return home


# (argv, exit status, code): a check refusal is the check's answer ({"accepted": false, "violations"});
# every other refusal is the API's envelope {"ok": false, "error": {"code", "message", "violations"}}
JSON_REFUSALS = {
    "check/check_refused": (["check", "--json", RESTRICTED], 1, "restricted_column"),
    "check/unbounded_group_keys": (["check", "--json", UNBOUNDED], 1, "unbounded_group_keys"),
    "check/epsilon_too_large": (["check", "--json", "--epsilon", "1000", ACCEPTED], 1, "epsilon_out_of_range"),
    "check/epsilon_nan": (["check", "--json", "--epsilon", "nan", ACCEPTED], 1, "epsilon_out_of_range"),
    "check/epsilon_inf": (["check", "--json", "--epsilon", "inf", ACCEPTED], 1, "epsilon_out_of_range"),
    "check/epsilon_-inf": (["check", "--json", "--epsilon=-inf", ACCEPTED], 1, "epsilon_out_of_range"),
    "check/unknown_dataset": (["check", "--json", "--dataset", "nope", ACCEPTED], 2, "not_found"),
    "query/check_failed": (["query", "--json", RESTRICTED], 1, "check_failed"),
    "query/unbounded_group_keys": (["query", "--format", "json", UNBOUNDED], 1, "unbounded_group_keys"),
    "query/epsilon_nan": (["query", "--json", "--epsilon", "nan", ACCEPTED], 1, "epsilon_out_of_range"),
    "query/epsilon_inf": (["query", "--json", "--epsilon", "Infinity", ACCEPTED], 1, "epsilon_out_of_range"),
    "query/budget_exceeded": (["query", "--json", "--epsilon", "2", ACCEPTED.replace("n FROM", "m FROM")], 1,
                              "budget_exceeded"),
    "query/unknown_dataset": (["query", "--json", "--dataset", "nope", ACCEPTED], 2, "not_found"),
}


@pytest.mark.parametrize(("argv", "status", "code"), JSON_REFUSALS.values(), ids=JSON_REFUSALS.keys())
def test_every_json_refusal_is_json_on_stdout(cli_home: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, argv: list[str], status: int,
                                              code: str) -> None:
    if code == "budget_exceeded":
        monkeypatch.setenv("ENCLAVE_DEMO_EPSILON_CAP", "1")
    got, payload, err = _run(capsys, *argv)
    assert (got, err) == (status, "")
    if code == "restricted_column":
        assert payload["accepted"] is False
        assert code in {v["code"] for v in payload["violations"]}
        return
    assert payload["ok"] is False
    assert set(payload["error"]) == {"code", "message", "violations"}
    assert payload["error"]["code"] == code
    if code == "check_failed":
        assert "restricted_column" in {v["code"] for v in payload["error"]["violations"]}
    if "nan" in argv or "inf" in argv or "Infinity" in argv or "--epsilon=-inf" in argv:
        assert payload["error"]["message"] == "ε must be a finite number above 0 and at most 2 per query."
    if code == "not_found":
        assert payload["error"]["message"] == "No dataset named 'nope'; datasets: demo."


def test_an_accepted_check_is_json_with_its_plan(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, payload, err = _run(capsys, "check", "--json", "--epsilon", "0.5", ACCEPTED)
    assert (status, err) == (0, "")
    assert payload["accepted"] is True
    assert math.isclose(payload["plan"]["epsilon"], 0.5)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_epsilon_is_named_in_the_text_output(cli_home: Path, capsys: pytest.CaptureFixture[str],
                                                         value: str) -> None:
    for command in ("check", "query"):
        assert main([command, f"--epsilon={value}", ACCEPTED]) == 1
        out, err = capsys.readouterr()
        assert (out, err) == ("refused: epsilon_out_of_range: ε must be a finite number above 0 and at most 2 "
                              "per query.\n", "")


def test_the_readme_documents_the_exit_statuses() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "exit status 0 when accepted or released, 1 when refused, 2 for an unknown dataset" in readme
