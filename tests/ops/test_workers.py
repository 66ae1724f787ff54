"""`enclave serve --workers 2` as a real process on a loopback port: two worker processes answer, /metrics
adds up both, a worker killed with SIGKILL is replaced and its live gauge removed, and SIGTERM stops it all
within a bounded time, removing the private metrics directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from enclave.cli import main
from enclave.settings import PROJECT_ROOT

TOKEN = "workers-test-token-0123456789"
HEALTHZ = ("enclave_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _until(condition: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_workers_answer_on_one_port_and_share_their_metrics(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(ENCLAVE_HOME=str(tmp_path / "home"), ENCLAVE_DEMO_CHILDREN="2000", ENCLAVE_LOG_FORMAT="json",
               ENCLAVE_METRICS_TOKEN=TOKEN, TMPDIR=str(scratch), PYTHONPATH=str(PROJECT_ROOT))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    err = tmp_path / "serve.err"
    with err.open("w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "enclave.cli", "serve", "--workers", "2", "--port",
                                   str(port)], stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path)
    scrape = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    try:
        def up() -> bool:
            assert server.poll() is None, err.read_text()
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until(up, 60, "the service did not start")
        (private,) = scratch.glob("enclave-metrics-*")  # made before the workers started

        def answered_by() -> set[object]:
            return {line["pid"] for line in _lines(err) if line["event"] == "http.request"}

        def hit(i: int) -> int:
            return httpx.get(f"{base}/healthz", headers={"X-Request-ID": f"w-{i}"}, timeout=10).status_code

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            deadline = time.monotonic() + 30
            while len(answered_by()) < 2:
                assert time.monotonic() < deadline, "one worker answered everything"
                assert set(pool.map(hit, range(sent, sent + 16))) == {200}
                sent += 16
        pids = answered_by()
        assert len(pids) == 2
        assert server.pid not in pids

        def healthz_lines() -> int:
            return sum(1 for line in _lines(err) if line["event"] == "http.request" and line["route"] == "/healthz")

        # every answered /healthz is counted once, whichever worker answered it: the sum of both workers
        def aggregated() -> bool:
            time.sleep(0.2)
            return _sample(scrape.get("/metrics").text, *HEALTHZ) == healthz_lines()

        _until(aggregated, 10, "/metrics does not add up both workers' requests")
        assert _sample(scrape.get("/metrics").text, "enclave_api_workers", {}) == 2
        counted = _sample(scrape.get("/metrics").text, *HEALTHZ)

        victim = int(sorted(pids)[0])  # type: ignore[call-overload]
        os.kill(victim, signal.SIGKILL)
        _until(lambda: any(line["event"] == "worker.reaped" and line["worker_pid"] == victim for line in _lines(err)),
               30, "the dead worker's files were not marked")
        assert not list(private.glob(f"*_{victim}.db")) or all(
            not p.name.startswith("gauge_live") for p in private.glob(f"*_{victim}.db"))
        _until(lambda: sum(1 for line in _lines(err) if line["event"] == "worker.started") >= 3, 60,
               "the killed worker was not replaced")
        _until(lambda: up() and _sample(scrape.get("/metrics").text, "enclave_api_workers", {}) == 2, 30,
               "the live-worker gauge does not count live workers only")
        assert (_sample(scrape.get("/metrics").text, *HEALTHZ) or 0) >= counted  # the dead one's counts stay
    finally:
        scrape.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail("the service did not stop within 30 s of SIGTERM")
    assert server.returncode == 0, err.read_text()
    assert list(scratch.iterdir()) == []  # the private metrics directory is gone
    lines = _lines(err)  # every line is JSON
    assert [line["event"] for line in lines][-1] == "serve.stopped"
    assert {line["pid"] for line in lines if line["event"] == "worker.stopping"} >= pids - {victim}


def test_workers_must_be_one_or_more(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", "0"])
    assert exited.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err
