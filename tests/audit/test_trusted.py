"""Truncation: an export cut back to an earlier checkpoint is a shorter signed log, and verifies on its own
(the documented limit of offline verification). Against a checkpoint the auditor kept earlier
(`enclave audit checkpoint --out head.json`), `verify --trusted` must refuse it, and refuse a trusted
checkpoint that another key signed or whose signature is bad."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.audit.signing import Signer
from enclave.audit.sqlite import SqliteBackend
from enclave.audit.store import AuditStore
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import grant
from enclave.settings import PROJECT_ROOT

# this checkout's CLI (the installed `enclave` script may belong to another checkout)
ENCLAVE_CLI = (sys.executable, "-m", "enclave.cli")


def build(directory: Path, records: int, signer: Signer, name: str = "log") -> AuditStore:
    """`records` grant records, a checkpoint every 8."""
    store = AuditStore(SqliteBackend(directory / f"{name}.sqlite3"), signer, checkpoint_every=8)
    with store.transaction() as tx:
        for n in range(records):
            grant(tx, "steward", f"r{n}", "demo", 1.0, 1e-6, purpose=name)
    return store


def export(store: AuditStore, start: int = 1) -> list[str]:
    buffer = io.StringIO()
    store.export(buffer, start)
    return buffer.getvalue().splitlines()


def cut_after_checkpoint(lines: list[str], size: int) -> list[str]:
    """The export up to and including its checkpoint at `size`: what an attacker who truncated the log shows."""
    end = next(i for i, line in enumerate(lines)
               if json.loads(line)["kind"] == "checkpoint" and json.loads(line)["checkpoint"]["size"] == size)
    return lines[:end + 1]


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "key.pem")


def test_a_log_cut_back_to_an_earlier_checkpoint_verifies_alone_but_not_against_the_trusted_head(tmp_path, signer):
    store = build(tmp_path, 20, signer)
    trusted = store.checkpoint_head()
    assert trusted is not None
    assert trusted["checkpoint"]["size"] == 20
    cut = cut_after_checkpoint(export(store), 16)
    alone = verify_lines(cut, signer.public)
    assert alone.ok
    assert alone.records == 16
    report = verify_lines(cut, signer.public, trusted)
    assert not report.ok
    assert report.summary() == ("FAILED: the log is shorter than the trusted checkpoint: 16 records, the "
                                "checkpoint signed 20 (truncated)")


def test_the_full_log_and_its_later_growth_are_consistent_with_the_trusted_checkpoint(tmp_path, signer):
    store = build(tmp_path, 12, signer)
    trusted = store.checkpoint_head()
    with store.transaction() as tx:
        grant(tx, "steward", "later", "demo", 1.0, 1e-6)
    report = verify_lines(export(store), signer.public, trusted)
    assert report.ok, report
    assert report.summary() == ("ok: 13 records, 3 signed checkpoints verified; consistent with the trusted "
                                "checkpoint at 12")
    ranged = verify_lines(export(store, start=10), signer.public, trusted)  # the prefix's leaves stand in
    assert ranged.ok, ranged
    assert ranged.trusted == 12


def test_a_rewritten_history_signed_by_the_same_key_is_refused(tmp_path, signer):
    trusted = build(tmp_path, 12, signer, "real").checkpoint_head()
    forged = build(tmp_path, 12, signer, "forged")
    assert verify_lines(export(forged), signer.public).ok
    report = verify_lines(export(forged), signer.public, trusted)
    assert report.problem == "records 1..12 are not the ones the trusted checkpoint signed (rewritten)"


def test_a_trusted_checkpoint_of_another_key_or_with_a_bad_signature_is_refused(tmp_path, signer):
    store = build(tmp_path, 10, signer)
    lines = export(store)
    other = build(tmp_path, 10, Signer.load_or_create(tmp_path / "other.pem"), "other").checkpoint_head()
    assert verify_lines(lines, signer.public, other).problem == "the trusted checkpoint is signed by another key"
    trusted = store.checkpoint_head()
    trusted["signature"] = ("1" if trusted["signature"][0] == "0" else "0") + trusted["signature"][1:]
    assert verify_lines(lines, signer.public, trusted).problem == "the trusted checkpoint has an invalid signature"
    trusted = store.checkpoint_head()
    trusted["checkpoint"]["size"] = 3  # a smaller claim is not a signed one
    assert verify_lines(lines, signer.public, trusted).problem == "the trusted checkpoint has an invalid signature"
    assert verify_lines(lines, signer.public, {"nothing": 1}).problem == "the trusted checkpoint is malformed"


def enclave_cli(home: Path):
    """This checkout's `enclave` command with ENCLAVE_HOME set to `home`."""
    env = {**os.environ, "ENCLAVE_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENCLAVE_CLI, *args], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                              timeout=120, check=False)

    return cli


def test_cli_checkpoint_then_verify_trusted_catches_truncation(tmp_path):
    home = tmp_path / "home"
    cli = enclave_cli(home)
    assert cli("grants", "create", "--researcher", "a", "--dataset", "demo", "--epsilon", "1",
               "--delta", "1e-6", "--purpose", "p").returncode == 0
    assert cli("audit", "export", "--out", str(tmp_path / "early.jsonl")).returncode == 0
    assert cli("grants", "create", "--researcher", "b", "--dataset", "demo", "--epsilon", "1",
               "--delta", "1e-6", "--purpose", "p").returncode == 0
    made = cli("audit", "checkpoint", "--out", str(tmp_path / "head.json"))
    assert made.returncode == 0, made.stderr
    assert json.loads((tmp_path / "head.json").read_text())["checkpoint"]["size"] == 2
    pem = home / "audit" / "public-key.pem"
    early = cli("audit", "verify", str(tmp_path / "early.jsonl"), "--public-key", str(pem))
    assert early.returncode == 0
    assert early.stdout.startswith("ok: 1 records")
    refused = cli("audit", "verify", str(tmp_path / "early.jsonl"), "--public-key", str(pem),
                  "--trusted", str(tmp_path / "head.json"))
    assert refused.returncode == 1
    assert refused.stdout.strip() == ("FAILED: the log is shorter than the trusted checkpoint: 1 records, the "
                                      "checkpoint signed 2 (truncated)")
    live = cli("audit", "verify", "--trusted", str(tmp_path / "head.json"))
    assert live.returncode == 0, live.stdout + live.stderr
    assert "consistent with the trusted checkpoint at 2" in live.stdout
