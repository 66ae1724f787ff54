"""Backup and restore of the state store, between both backends: the restored store is the same store.

A store with records of every kind, a charge ledger, consents and checkpoints is backed up and restored
into an empty store of each kind; the restored log verifies against the original signing key, the
governed tables are its projection, new rows continue after the restored ids, and a backup that was
edited is caught by verification after it is restored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys

import pytest

from enclave.audit.backup import backup, restore
from enclave.audit.signing import Signer, public_pem
from enclave.audit.state import differences
from enclave.audit.store import AuditStore, StoreError
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import grant, live_totals, rebuild_from_log
from enclave.consent import registry
from enclave.disclosure.cache import ReleaseCache
from enclave.pipeline import Enclave
from enclave.settings import PROJECT_ROOT
from tests import stores
from tests.audit.test_log import build_reference, export

ENCLAVE_CLI = (sys.executable, "-m", "enclave.cli")


def consent(store: AuditStore, subject: str) -> int:
    """A consent statement and its record, as `enclave.onboarding.record_consent` writes them."""
    with store.transaction() as tx:
        record = tx.append("consent.given", "steward", "allow", [], dataset="demo", contributor="clinic",
                           subject=subject, purpose="research", given="2020-01-01", expires=None, source="test")
        return registry.record(tx, "demo", registry.Statement(subject, "research", "give", dt.date(2020, 1, 1)),
                               int(record["seq"]))


def backed_up(store: AuditStore) -> list[str]:
    buffer = io.StringIO()
    backup(store, buffer)
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize("target", stores.BACKENDS)
def test_a_restored_store_is_the_same_store(tmp_path, backend_kind, target):
    source = build_reference(tmp_path / "source", backend_kind)
    first, second = consent(source, "p1"), consent(source, "p2")
    lines = backed_up(source)
    restored = AuditStore(stores.backend(target, tmp_path / "target"), source.signer, source.checkpoint_every)
    counts = restore(restored, lines)
    assert counts["events"] == len(source.records()) == 32
    assert counts["consents"] == 2
    assert counts["charges"] == 13
    assert restored.records() == source.records()
    assert restored.checkpoints() == source.checkpoints()
    assert verify_lines(export(restored), source.signer.public).ok
    assert differences(restored) == []
    with restored.transaction() as tx:
        assert live_totals(tx) == rebuild_from_log(restored.records()) == rebuild_from_log(source.records())
    assert consent(restored, "p3") == second + 1 == first + 2  # new ids continue after the restored ones
    assert differences(restored) == []


def test_a_store_that_is_not_empty_refuses_a_restore(tmp_path, backend_kind):
    source = build_reference(tmp_path / "source")
    lines = backed_up(source)
    target = AuditStore(stores.backend(backend_kind, tmp_path / "target"), source.signer)
    with target.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 1.0, 1e-6)
    with pytest.raises(StoreError, match="not empty"):
        restore(target, lines)
    assert [r["event"] for r in target.records()] == ["grant.created"]  # nothing half restored


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda lines: lines[:1] + lines[2:], "records, its header says"),  # a record dropped
    (lambda lines: ['{"kind": "something else"}', *lines[1:]], "not a backup"),
    (lambda lines: [*lines, '{"table": "nosuch", "row": {"a": 1}}'], "not a row of a known table"),
    (lambda lines: [*lines, '{"table": "grants", "row": {"x; DROP TABLE events": 1}}'], "cannot exist"),
])
def test_a_malformed_backup_is_refused_and_nothing_is_restored(tmp_path, edit, problem):
    source = build_reference(tmp_path / "source")
    target = AuditStore(stores.backend("sqlite", tmp_path / "target"), source.signer)
    with pytest.raises(StoreError, match=problem):
        restore(target, edit(backed_up(source)))
    assert target.records() == []


def test_an_edited_backup_restores_but_does_not_verify(tmp_path, backend_kind):
    source = build_reference(tmp_path / "source")
    lines = backed_up(source)
    at = next(i for i, line in enumerate(lines) if '"table": "events"' in line and '"seq": 5' in line)
    entry = json.loads(lines[at])
    record = json.loads(entry["row"]["record"])
    record["decision"] = "deny" if record["decision"] == "allow" else "allow"
    entry["row"]["record"] = json.dumps(record, sort_keys=True)
    lines[at] = json.dumps(entry)
    target = AuditStore(stores.backend(backend_kind, tmp_path / "target"), source.signer)
    restore(target, lines)
    report = verify_lines(export(target), source.signer.public)
    assert not report.ok
    assert "record 5 does not match its hash" in report.summary()


def test_the_command_line_backs_up_an_embedded_store_and_restores_it_into_postgresql(tmp_path, redis_url):
    """How an embedded enclave moves to a deployment: `enclave backup`, then `enclave restore` with the
    same secrets (the signing key) and ENCLAVE_DATABASE_URL set; `enclave audit verify` passes after, and
    the enclave's answers cached in Redis are forgotten (the restored store is the record)."""
    home = tmp_path / "home"
    signer = Signer.load_or_create(home / "secrets" / "audit-ed25519.pem")
    source = AuditStore(stores.backend("sqlite", home / "audit"), signer)
    with source.transaction() as tx:
        for n in range(5):
            grant(tx, "steward", f"r{n}", "demo", 1.0, 1e-6)
    (home / "audit" / "public-key.pem").write_bytes(public_pem(signer.public))
    base = {**os.environ, "ENCLAVE_HOME": str(home), "ENCLAVE_AUDIT_DIR": str(home / "audit")}
    base.pop("ENCLAVE_DATABASE_URL", None)

    def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENCLAVE_CLI, *args], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                              timeout=120, check=False)

    made = cli("backup", "--out", str(tmp_path / "state.jsonl"), env=base)
    assert made.returncode == 0, made.stderr
    assert "backed up 5 records" in made.stderr
    url, admin = stores.fresh_postgres()
    deployed = {**base, "ENCLAVE_DATABASE_URL": url, "ENCLAVE_ADMIN_DATABASE_URL": admin,
                "ENCLAVE_REDIS_URL": redis_url}
    cache = ReleaseCache.connect(redis_url, Enclave.namespace_of(source))
    cache.put("stale-request-key", "{}")
    other = ReleaseCache.connect(redis_url, "enclave:someone-else")
    other.put("their-key", "{}")
    migrated = cli("migrate", env=deployed)
    assert migrated.returncode == 0, migrated.stderr
    restored = cli("restore", str(tmp_path / "state.jsonl"), env=deployed)
    assert restored.returncode == 0, restored.stderr
    assert "restored 5 records" in restored.stderr
    assert "state: ok" in restored.stderr
    assert "forgot 1 cached answers" in restored.stderr
    assert cache.get("stale-request-key") is None
    assert other.get("their-key") == "{}"  # another enclave's answers on the same Redis are left alone
    verified = cli("audit", "verify", env=deployed)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = cli("restore", str(tmp_path / "state.jsonl"), env=deployed)
    assert again.returncode == 2
    assert "not empty" in again.stderr
    assert "Traceback" not in again.stderr
