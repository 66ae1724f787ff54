"""Inclusion proofs and the streamed log, on both stores.

A proof (`AuditStore.prove`, `GET /v1/audit/proof/{seq}`, `enclave audit prove`) is one record, its RFC 9162
audit path and the signed checkpoint the path leads to; `verify_proof` (`enclave audit verify-proof`) must
accept every untouched proof with the public key alone and refuse, with a message naming what is wrong, a
changed record, path, size, index or signature, and another key. The export and its verification stream the
log a page at a time: the same lines whatever the page size, and O(log n) kept by the verifier.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from enclave.audit.merkle import leaf_hash, root_of_hashes
from enclave.audit.records import canonical, record_hash
from enclave.audit.signing import Signer
from enclave.audit.store import AuditStore
from enclave.audit.verify import ProofReport, verify_lines, verify_proof
from enclave.budget.ledger import grant
from tests.audit.test_log import RECORDS, build_reference, export, new_store
from tests.audit.test_trusted import enclave_cli


@pytest.fixture
def store(tmp_path: Path, backend_kind: str) -> AuditStore:
    """The reference log of tests/audit/test_log.py: 30 records, checkpoints at 8, 16 and 24 (not the head)."""
    return build_reference(tmp_path, backend_kind)


def _flip(hex_text: str) -> str:
    return ("1" if hex_text[0] == "0" else "0") + hex_text[1:]


def test_a_record_no_checkpoint_covers_yet_is_proved_after_signing_the_head(store):
    assert [c["checkpoint"]["size"] for c in store.checkpoints()] == [8, 16, 24]
    proof = store.prove(27)
    assert proof is not None
    assert [c["checkpoint"]["size"] for c in store.checkpoints()] == [8, 16, 24, 30]
    assert (proof["seq"], proof["leaf_index"], proof["tree_size"]) == (27, 26, 30)
    assert proof["checkpoint"] == store.checkpoints()[-1]
    assert verify_proof(proof, store.signer.public) == ProofReport(True, seq=27, size=30)


def test_every_record_proves_in_the_latest_checkpoint_and_verifies_offline(store):
    store.checkpoint_head()
    texts = [canonical({k: v for k, v in r.items() if k != "hash"}) for r in store.records()]
    for seq in range(1, RECORDS + 1):
        proof = store.prove(seq)
        assert proof is not None
        assert proof["record"].encode() == texts[seq - 1]
        assert proof["hash"] == record_hash(json.loads(proof["record"]))
        assert proof["tree_size"] == 30
        assert proof["checkpoint"]["checkpoint"]["root"] == root_of_hashes([leaf_hash(t) for t in texts]).hex()
        report = verify_proof(json.loads(json.dumps(proof)), store.signer.public)  # as a file holds it
        assert report.ok, (seq, report)
        assert report.summary() == (f"ok: record {seq} is in the log the checkpoint at 30 signed "
                                    "(an RFC 9162 audit path)")
    assert [c["checkpoint"]["size"] for c in store.checkpoints()] == [8, 16, 24, 30]  # proving signs nothing more


def test_an_unknown_record_has_no_proof(store):
    assert store.prove(RECORDS + 1) is None
    assert store.prove(0) is None
    assert [c["checkpoint"]["size"] for c in store.checkpoints()] == [8, 16, 24]


def _edited(proof: dict, field: str) -> dict:
    record = json.loads(proof["record"])
    record[field] = "mallory"
    return {**proof, "record": canonical(record).decode()}


def _rehashed(proof: dict) -> dict:
    """An edited record whose stated hash was recomputed too: only the audit path can catch it."""
    edited = _edited(proof, "actor")
    return {**edited, "hash": record_hash(json.loads(edited["record"]))}


TAMPERINGS = {
    "record": (lambda p: _edited(p, "actor"), "record 12 does not match its hash (edited)"),
    "record-and-hash": (_rehashed, "the audit path does not lead from record 12 to the root the checkpoint at 24 "
                                   "signed (the record or the path was changed)"),
    "record-not-canonical": (lambda p: {**p, "record": json.dumps(json.loads(p["record"]), indent=1)},
                             "record 12 is not in its canonical form (edited)"),
    "path-hash": (lambda p: {**p, "path": [_flip(p["path"][0]), *p["path"][1:]]},
                  "the audit path does not lead from record 12 to the root the checkpoint at 24 signed (the record "
                  "or the path was changed)"),
    "path-shortened": (lambda p: {**p, "path": p["path"][:-1]},
                       "the audit path does not lead from record 12 to the root the checkpoint at 24 signed (the "
                       "record or the path was changed)"),
    "path-reordered": (lambda p: {**p, "path": p["path"][::-1]},
                       "the audit path does not lead from record 12 to the root the checkpoint at 24 signed (the "
                       "record or the path was changed)"),
    "leaf-index": (lambda p: {**p, "leaf_index": 12}, "record 12 is not leaf 12 of the proof for record 12"),
    "seq": (lambda p: {**p, "seq": 13}, "record 12 is not leaf 11 of the proof for record 13"),
    "tree-size": (lambda p: {**p, "tree_size": 32}, "the proof is for a tree of 32 records, the checkpoint signed 24"),
    "signature": (lambda p: {**p, "checkpoint": {**p["checkpoint"], "signature": _flip(p["checkpoint"]["signature"])}},
                  "the checkpoint at 24 has an invalid signature"),
    "signed-root": (lambda p: {**p, "checkpoint": {**p["checkpoint"], "checkpoint": {
        **p["checkpoint"]["checkpoint"], "root": _flip(p["checkpoint"]["checkpoint"]["root"])}}},
        "the checkpoint at 24 has an invalid signature"),
    "malformed": (lambda p: {**p, "path": "00"}, "a malformed proof (not what `enclave audit prove` writes)"),
    "no-checkpoint": (lambda p: {k: v for k, v in p.items() if k != "checkpoint"},
                      "a malformed proof (not what `enclave audit prove` writes)"),
    "not-an-object": (lambda p: [p], "a malformed proof (not what `enclave audit prove` writes)"),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_a_tampered_proof_fails_naming_what_is_wrong(store, tampering):
    proof = store.prove(12)  # in the tree of the checkpoint at 24, the latest that covers it
    change, problem = TAMPERINGS[tampering]
    report = verify_proof(change(copy.deepcopy(proof)), store.signer.public)
    assert not report.ok
    assert report.summary() == f"FAILED: {problem}"


def test_a_proof_checked_with_another_key_fails(store, tmp_path):
    other = Signer.load_or_create(tmp_path / "other.pem")
    report = verify_proof(store.prove(5), other.public)
    assert report.summary() == "FAILED: the checkpoint at 24 is signed by another key"


# -- the streamed export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [1, 3, 8, 31])
def test_the_export_is_the_same_whatever_the_page(store, page):
    ranged = export(store, start=10, end=20)  # signs a checkpoint at 20, which the full export then holds
    lines = export(store)
    store.page = page
    assert export(store) == lines
    assert export(store, start=10, end=20) == ranged
    assert [line + "\n" for line in lines] == list(store.export_lines())
    assert verify_lines(store.export_lines(10), store.signer.public).ok
    assert verify_lines(lines, store.signer.public).ok


def test_records_are_read_a_page_at_a_time(store):
    everything = store.records()
    assert len(everything) == RECORDS
    assert store.records(5, limit=3) == everything[4:7]
    assert store.records(29, limit=10) == everything[28:]
    assert store.records(3, 4, limit=10) == everything[2:4]


def test_an_export_holds_what_was_signed_when_it_began(store):
    """Records appended while an export streams are left out: no tail without a checkpoint."""
    store.page = 4
    lines = store.export_lines()
    first = next(lines)
    with store.transaction() as tx:
        tx.append("query.refused", "r1", "deny", ["x"], dataset="demo")
    rest = list(lines)
    assert json.loads(first)["record"]["seq"] == 1
    assert json.loads(rest[-1]) == {"kind": "checkpoint", **store.checkpoints()[-1]}
    assert verify_lines([first, *rest], store.signer.public).records == RECORDS


def test_a_trusted_checkpoint_inside_a_range_prefix_is_refused_with_its_remedy(tmp_path):
    signer = Signer.load_or_create(tmp_path / "key.pem")
    store = AuditStore(build_reference(tmp_path).backend, signer, checkpoint_every=8)
    trusted = store.checkpoint_head()  # at 30
    with store.transaction() as tx:
        for n in range(10):
            grant(tx, "steward", f"later-{n}", "demo", 1.0, 1e-6)
    at_prefix = verify_lines(export(store, start=31), signer.public, trusted)  # prefix 1..30: its root is there
    assert at_prefix.ok, at_prefix
    assert at_prefix.trusted == 30
    inside = verify_lines(export(store, start=32), signer.public, trusted)
    assert inside.summary() == ("FAILED: the trusted checkpoint at 30 lies inside the export's prefix (records "
                                "1..31): check it against an export that starts at or before record 31")


# -- the command line ------------------------------------------------------------------------------------------


def test_cli_proves_a_record_and_verifies_the_proof_offline(tmp_path):
    home = tmp_path / "home"
    cli = enclave_cli(home)
    for name in ("a", "b", "c"):
        assert cli("grants", "create", "--researcher", name, "--dataset", "demo", "--epsilon", "1",
                   "--delta", "1e-6", "--purpose", "p").returncode == 0
    proof_file, pem = tmp_path / "proof.json", home / "audit" / "public-key.pem"
    made = cli("audit", "prove", "2", "--out", str(proof_file))
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == ("record 2: leaf 1 of the 3 records the checkpoint at 3 signed, 2 hashes of audit "
                                   f"path, written to {proof_file}")
    printed = cli("audit", "prove", "2")
    assert json.loads(printed.stdout) == json.loads(proof_file.read_text())
    checked = cli("audit", "verify-proof", str(proof_file), "--public-key", str(pem))
    assert (checked.returncode, checked.stdout.strip()) == (
        0, "ok: record 2 is in the log the checkpoint at 3 signed (an RFC 9162 audit path)")
    tampered = json.loads(proof_file.read_text())
    tampered["path"][0] = _flip(tampered["path"][0])
    proof_file.write_text(json.dumps(tampered))
    refused = cli("audit", "verify-proof", str(proof_file), "--public-key", str(pem))
    assert refused.returncode == 1
    assert refused.stdout.startswith("FAILED: the audit path does not lead from record 2")
    proof_file.write_text("{not json")
    unreadable = cli("audit", "verify-proof", str(proof_file), "--public-key", str(pem))
    assert (unreadable.returncode, unreadable.stdout.strip()) == (
        1, f"FAILED: the proof {proof_file} cannot be read as JSON")
    missing = cli("audit", "prove", "99")
    assert (missing.returncode, missing.stderr.strip(), missing.stdout) == (1, "no audit record 99 in the log", "")
    assert "Traceback" not in unreadable.stderr + missing.stderr


def test_a_long_log_proves_from_the_subtrees_it_kept_and_without_them(tmp_path, backend_kind):
    """Appends keep the complete subtrees of 256 leaves and more; a proof reads those and a few hundred
    records, and a log that lost them (one from before they were kept) proves the same from its records."""
    store = new_store(tmp_path, kind=backend_kind)
    for _ in range(3):
        with store.transaction() as tx:
            for _ in range(300):
                tx.append("query.refused", "r1", "deny", ["x"], dataset="demo")
    store.checkpoint_head()
    with store.reading() as connection:
        kept = connection.execute("SELECT height, position FROM merkle_nodes ORDER BY height, position").fetchall()
    assert [tuple(k) for k in kept] == [(8, 0), (8, 1), (8, 2), (9, 0)]
    proofs = {seq: store.prove(seq) for seq in (1, 256, 257, 600, 899, 900)}
    for seq, proof in proofs.items():
        assert verify_proof(json.loads(json.dumps(proof)), store.signer.public).ok, seq
    other = new_store(tmp_path / "bare", kind=backend_kind)  # the same log, with no subtrees kept
    with other.transaction() as tx:
        for record in store.records():
            tx.connection.execute("INSERT INTO events (seq, hash, record) VALUES (?, ?, ?)", (
                record["seq"], record["hash"], canonical({k: v for k, v in record.items() if k != "hash"}).decode()))
        for signed in store.checkpoints():
            tx.connection.execute("INSERT INTO checkpoints (size, record) VALUES (?, ?)",
                                  (signed["checkpoint"]["size"], json.dumps(signed, sort_keys=True)))
    assert {seq: other.prove(seq)["path"] for seq in proofs} == {seq: p["path"] for seq, p in proofs.items()}
