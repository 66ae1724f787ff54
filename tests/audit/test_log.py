"""The audit log end to end: a real SQLite store, real Ed25519 checkpoints, a JSONL export, and the offline
verifier, which must accept the untouched export and name the first record or checkpoint of every tampering.

The reference store holds 30 records (grants, charges, refusals, releases, failures, replays) with
`checkpoint_every=8`, so the export is laid out as:

    lines  1-8   records 1-8      line  9  checkpoint at 8
    lines 10-17  records 9-16     line 18  checkpoint at 16
    lines 19-26  records 17-24    line 27  checkpoint at 24
    lines 28-33  records 25-30    line 34  checkpoint at 30 (signed by the export itself)
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from enclave.audit.merkle import leaf_hash, root_of_hashes
from enclave.audit.records import EVENT_TYPES, GENESIS, record_hash
from enclave.audit.signing import Signer, load_public_key, public_pem
from enclave.audit.store import AuditStore
from enclave.audit.verify import Report, verify_lines
from enclave.budget.ledger import (
    DELTA_UNIT,
    EPSILON_UNIT,
    BudgetError,
    grant,
    live_totals,
    rebuild_from_log,
    remaining,
    reserve,
)
from tests import stores

CHECKPOINT_EVERY = 8
RECORDS = 30
CHECKPOINTED = (8, 16, 24, 30)  # the automatic ones, then the one the export signs at the head
RESEARCHERS = ("alice", "bob")
DATASETS = ("demo", "schools")
EPSILON, DELTA = 0.1, 1e-7  # each reference charge
ENCLAVE_CLI = Path(sys.executable).with_name("enclave")


# -- building and reading logs ---------------------------------------------------------------------------


def new_store(directory: Path, name: str = "log", kind: str = "sqlite") -> AuditStore:
    return AuditStore(stores.backend(kind, directory, name), Signer.load_or_create(directory / f"{name}-key.pem"),
                      checkpoint_every=CHECKPOINT_EVERY)


def build_reference(directory: Path, kind: str = "sqlite") -> AuditStore:
    """30 records of every event type: 4 grants, then 13 transactions of a charge plus one other event."""
    store = new_store(directory, kind=kind)
    with store.transaction() as tx:
        for researcher in RESEARCHERS:
            for dataset in DATASETS:
                grant(tx, "steward", researcher, dataset, 2.0, 1e-5)
    others = ("query.refused", "query.released", "query.failed", "query.replayed")
    for round_ in range(13):
        researcher, dataset = RESEARCHERS[round_ % 2], DATASETS[(round_ // 2) % 2]
        with store.transaction() as tx:
            query_id, _, _ = reserve(tx, researcher, dataset, EPSILON, DELTA,
                                     {"sql_submitted": f"SELECT count(*) FROM t -- ε round {round_}",
                                      "round": round_})
            event = others[round_ % len(others)]
            if event == "query.refused":
                tx.append("query.refused", "r1", "deny", ["x"], dataset="demo")
            elif event == "query.released":
                tx.append(event, researcher, "allow", [], query_id=query_id, dataset=dataset, groups=3,
                          cells=6, suppressed_cells=1, payload_sha256="ab" * 32)
            elif event == "query.failed":
                tx.append(event, "zoë", "deny", ["timeout: the query ran too long"], query_id=query_id,
                          dataset=dataset, code="timeout")
            else:
                tx.append(event, researcher, "allow", [], query_id=query_id, dataset=dataset)
    return store


def export(store: AuditStore, start: int = 1, end: int | None = None) -> list[str]:
    buffer = io.StringIO()
    store.export(buffer, start, end)
    return buffer.getvalue().splitlines()


def parse(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def dump(entries: list[dict]) -> list[str]:
    return [json.dumps(entry, ensure_ascii=False) for entry in entries]


def position(entries: list[dict], seq: int) -> int:
    """Index (0-based) of the event line of record `seq`."""
    return next(i for i, e in enumerate(entries) if e["kind"] == "event" and e["record"]["seq"] == seq)


def checkpoint_position(entries: list[dict], size: int) -> int:
    return next(i for i, e in enumerate(entries) if e["kind"] == "checkpoint" and e["checkpoint"]["size"] == size)


def failed(report: Report, problem: str, line: int | None = None) -> None:
    """The report refuses the log with exactly `problem` (and at `line`, when given)."""
    assert not report.ok, report
    assert report.problem == problem, report
    if line is not None:
        assert report.line == line, report


def names_record(report: Report, seq: int) -> bool:
    return re.search(rf"\b(record|checkpoint at) {seq}\b", report.problem or "") is not None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditStore, list[str]]:
    store = build_reference(tmp_path_factory.mktemp("audit-log"))
    return store, export(store)


@pytest.fixture(scope="module")
def store(reference: tuple[AuditStore, list[str]]) -> AuditStore:
    return reference[0]


@pytest.fixture(scope="module")
def lines(reference: tuple[AuditStore, list[str]]) -> list[str]:
    return reference[1]


@pytest.fixture(scope="module")
def public(store: AuditStore):
    return store.signer.public


@pytest.fixture
def entries(lines: list[str]) -> list[dict]:
    return parse(lines)  # a fresh copy for each test to tamper with


# -- 1. the untouched log ----------------------------------------------------------------------------------


def test_untouched_export_verifies(lines, public, store):
    report = verify_lines(lines, public)
    assert report == Report(True, RECORDS, len(CHECKPOINTED))
    assert report.summary() == f"ok: {RECORDS} records, {len(CHECKPOINTED)} signed checkpoints verified"
    kinds = [json.loads(line)["kind"] for line in lines]
    assert len(lines) == RECORDS + len(CHECKPOINTED)
    assert [i + 1 for i, kind in enumerate(kinds) if kind == "checkpoint"] == [9, 18, 27, 34]
    # the export is the stored log: same records, same hashes, in order, with every event type present
    exported = [{**e["record"], "hash": e["hash"]} for e in parse(lines) if e["kind"] == "event"]
    assert exported == store.records()
    assert [r["seq"] for r in exported] == list(range(1, RECORDS + 1))
    assert exported[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(exported))
    produced = {r["event"] for r in exported}
    assert produced == {"grant.created", "query.charged", "query.refused", "query.released", "query.failed",
                        "query.replayed"}
    assert produced <= set(EVENT_TYPES)
    assert all(record_hash({k: v for k, v in r.items() if k != "hash"}) == r["hash"] for r in exported)


def test_untouched_export_verifies_with_the_key_read_back_from_pem(lines, public, tmp_path):
    (tmp_path / "public-key.pem").write_bytes(public_pem(public))
    assert verify_lines(lines, load_public_key(tmp_path / "public-key.pem")).ok


def test_live_log_verifies_and_keeps_verifying_as_it_grows(tmp_path, backend_kind):
    store = build_reference(tmp_path, backend_kind)
    public = store.signer.public
    assert verify_lines(export(store), public) == Report(True, 30, 4)  # checkpoints 8, 16, 24 and the head, 30
    assert verify_lines(export(store), public) == Report(True, 30, 4)  # exporting again signs nothing new
    with store.transaction() as tx:
        for n in range(3):  # records 31..33; 32 is checkpointed on its own
            tx.append("query.refused", "r1", "deny", ["x"], dataset="demo", n=n)
    assert verify_lines(export(store), public) == Report(True, 33, 6)  # + 32 and the new head, 33


# -- 2. editing a record -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", range(1, RECORDS + 1))
def test_editing_any_record_is_caught_at_that_record(entries, public, seq):
    index = position(entries, seq)
    entries[index]["record"]["actor"] += "x"
    report = verify_lines(dump(entries), public)
    failed(report, f"record {seq} does not match its hash (edited)", line=index + 1)
    assert names_record(report, seq)
    assert report.records == seq - 1


@pytest.mark.parametrize(("field", "value"), [
    ("time", "2020-01-01T00:00:00.000000+00:00"),
    ("event", "query.refused"),
    ("decision", "deny"),
    ("reasons", ["edited"]),
    ("dataset", "schools"),
    ("prev_hash", GENESIS),
    ("charge", {"epsilon": 0.0, "delta": 0.0, "epsilon_units": 0, "delta_units": 0}),
    ("round", None),
    ("added", "a field that was never there"),
])
def test_editing_any_field_is_caught(entries, public, field, value):
    seq = 13  # a query.charged record
    index = position(entries, seq)
    assert entries[index]["record"]["event"] == "query.charged"
    assert entries[index]["record"].get(field) != value
    entries[index]["record"][field] = value
    failed(verify_lines(dump(entries), public), f"record {seq} does not match its hash (edited)", line=index + 1)


def test_removing_a_field_or_editing_the_stated_hash_is_caught(entries, public):
    index = position(entries, 5)
    del entries[index]["record"]["reasons"]
    failed(verify_lines(dump(entries), public), "record 5 does not match its hash (edited)", line=index + 1)
    entries = parse(dump(entries))
    entries[index]["record"]["reasons"] = []
    assert verify_lines(dump(entries), public).ok  # put back as it was
    entries[index]["hash"] = "0" * 64
    failed(verify_lines(dump(entries), public), "record 5 does not match its hash (edited)", line=index + 1)


def test_editing_the_sequence_number_is_caught(entries, public):
    index = position(entries, 20)
    entries[index]["record"]["seq"] = 21
    failed(verify_lines(dump(entries), public),
           "record 21 found where record 20 belongs (a record is missing, duplicated or out of order)", line=index + 1)


# -- 3. deleting a record -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [1, 2, 7, 8, 9, 15, 16, 24, 25, 29, 30])
def test_deleting_a_record_is_caught_at_its_position(entries, public, seq):
    index = position(entries, seq)
    del entries[index]
    report = verify_lines(dump(entries), public)
    if seq in CHECKPOINTED:  # the next line is the checkpoint that covered it
        failed(report, f"checkpoint at {seq} does not follow record {seq}", line=index + 1)
    else:
        failed(report, f"record {seq + 1} found where record {seq} belongs "
                       "(a record is missing, duplicated or out of order)", line=index + 1)
    assert names_record(report, seq)


def test_duplicating_a_record_is_caught(entries, public):
    index = position(entries, 11)
    entries.insert(index + 1, entries[index])
    failed(verify_lines(dump(entries), public),
           "record 11 found where record 12 belongs (a record is missing, duplicated or out of order)", line=index + 2)


# -- 4. reordering -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", range(1, RECORDS))
def test_swapping_two_records_is_caught(entries, public, seq):
    first, second = position(entries, seq), position(entries, seq + 1)
    entries[first], entries[second] = entries[second], entries[first]
    report = verify_lines(dump(entries), public)
    failed(report, f"record {seq + 1} found where record {seq} belongs "
                   "(a record is missing, duplicated or out of order)", line=first + 1)
    assert names_record(report, seq)


def test_moving_a_checkpoint_past_the_next_record_is_caught(entries, public):
    index = checkpoint_position(entries, 8)
    entries[index], entries[index + 1] = entries[index + 1], entries[index]
    failed(verify_lines(dump(entries), public), "checkpoint at 8 does not follow record 8", line=index + 2)


# -- 5. editing a record and recomputing its hash ------------------------------------------------------------


@pytest.mark.parametrize("seq", range(1, RECORDS + 1))
def test_editing_and_rehashing_a_record_breaks_the_chain_or_the_signed_root(entries, public, seq):
    index = position(entries, seq)
    record = entries[index]["record"]
    record["actor"] = "mallory"
    entries[index]["hash"] = record_hash(record)
    report = verify_lines(dump(entries), public)
    if seq in CHECKPOINTED:  # the checkpoint comes before any later record could notice
        failed(report, f"checkpoint at {seq}: the records 1..{seq} are not the ones that were signed", line=index + 2)
        assert names_record(report, seq)
    else:
        failed(report, f"record {seq + 1} does not link to record {seq} (chain broken)", line=index + 2)
        assert names_record(report, seq + 1)


@pytest.mark.parametrize("seq", [1, 5, 8, 9, 20, 25, 30])
def test_rewriting_the_chain_from_a_record_on_is_caught_by_the_next_checkpoint(entries, public, seq):
    """An attacker without the key re-links every later record: only the signed roots can notice."""
    index = position(entries, seq)
    entries[index]["record"]["decision"] = "tampered"
    prev = None
    for entry in entries[index:]:
        if entry["kind"] != "event":
            continue
        if prev is not None:
            entry["record"]["prev_hash"] = prev
        entry["hash"] = prev = record_hash(entry["record"])
    size = next(size for size in CHECKPOINTED if size >= seq)
    failed(verify_lines(dump(entries), public),
           f"checkpoint at {size}: the records 1..{size} are not the ones that were signed",
           line=checkpoint_position(entries, size) + 1)


# -- 6. cutting off the tail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dropped", "problem"), [
    (1, "records 25..30 are not covered by a signed checkpoint"),  # the final checkpoint only
    (2, "records 25..29 are not covered by a signed checkpoint"),
    (4, "records 25..27 are not covered by a signed checkpoint"),
    (6, "records 25..25 are not covered by a signed checkpoint"),
    (8, "records 17..24 are not covered by a signed checkpoint"),
    (9, "records 17..23 are not covered by a signed checkpoint"),
    (20, "records 9..13 are not covered by a signed checkpoint"),
])
def test_truncating_the_tail_is_caught(lines, public, dropped, problem):
    report = verify_lines(lines[:-dropped], public)
    failed(report, problem, line=len(lines) - dropped)
    assert report.summary() == f"FAILED at line {len(lines) - dropped}: {problem}"


def test_a_cut_exactly_after_a_checkpoint_is_a_shorter_signed_log(lines, public):
    """Documents the limit of offline verification: records 25..30 and their checkpoint all gone leaves a
    log that was signed as it stands; the record count in the report is what the auditor compares."""
    assert verify_lines(lines[:27], public) == Report(True, 24, 3)


# -- 7. checkpoints and keys ---------------------------------------------------------------------------------


def _flip(hex_text: str) -> str:
    return ("1" if hex_text[0] == "0" else "0") + hex_text[1:]


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda cp: cp["checkpoint"].update(root=_flip(cp["checkpoint"]["root"])),
     "checkpoint at 16 has an invalid signature"),
    (lambda cp: cp["checkpoint"].update(size=15), "checkpoint at 15 has an invalid signature"),
    (lambda cp: cp["checkpoint"].update(time="2020-01-01T00:00:00.000000+00:00"),
     "checkpoint at 16 has an invalid signature"),
    (lambda cp: cp.update(signature=_flip(cp["signature"])), "checkpoint at 16 has an invalid signature"),
    (lambda cp: cp.update(signature="not hex"), "checkpoint at 16 has an invalid signature"),
    (lambda cp: cp.update(signature=""), "checkpoint at 16 has an invalid signature"),
    (lambda cp: cp["checkpoint"].update(key_id=_flip(cp["checkpoint"]["key_id"])),
     "checkpoint at 16 is signed by another key"),
], ids=["root", "size", "time", "signature", "signature-not-hex", "no-signature", "key-id"])
def test_a_modified_checkpoint_is_caught(entries, public, edit, problem):
    index = checkpoint_position(entries, 16)
    edit(entries[index])
    failed(verify_lines(dump(entries), public), problem, line=index + 1)


@pytest.mark.parametrize("size", [8, 30])
def test_removing_a_checkpoint_signature_field_is_caught(entries, public, size):
    index = checkpoint_position(entries, size)
    del entries[index]["signature"]
    failed(verify_lines(dump(entries), public), f"checkpoint at {size} has an invalid signature", line=index + 1)


def test_verifying_with_another_key_is_refused(lines, tmp_path):
    other = Signer.load_or_create(tmp_path / "other.pem").public
    failed(verify_lines(lines, other), "checkpoint at 8 is signed by another key", line=9)


def test_a_log_re_signed_with_another_key_is_refused(entries, public, tmp_path):
    """Someone with a key of their own rewrites record 3 and re-signs every checkpoint: the key id betrays it."""
    forged_store = new_store(tmp_path, "forged")  # with a key of its own
    with forged_store.transaction() as tx:
        for entry in entries:
            if entry["kind"] == "event":
                record = dict(entry["record"])
                if record["seq"] == 3:
                    record["decision"] = "deny"
                tx.append(record.pop("event"), record.pop("actor"), record.pop("decision"), record.pop("reasons"),
                          **{k: v for k, v in record.items() if k not in ("seq", "time", "prev_hash")})
    forged = export(forged_store)
    assert verify_lines(forged, forged_store.signer.public) == Report(True, RECORDS, len(CHECKPOINTED))
    failed(verify_lines(forged, public), "checkpoint at 8 is signed by another key", line=9)


# -- 8. range exports ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranged(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], object]:
    """Records 10..20 of a separate reference store (exporting a range signs a checkpoint at its end)."""
    store = build_reference(tmp_path_factory.mktemp("audit-range"))
    return export(store, start=10, end=20), store.signer.public


def test_a_range_export_verifies_on_its_own(ranged):
    lines, public = ranged
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["prefix", *["event"] * 7, "checkpoint", *["event"] * 4, "checkpoint"]
    prefix = json.loads(lines[0])
    assert prefix["size"] == 9
    assert [height for height, _ in prefix["frontier"]] == [3, 0]  # 9 = 8 + 1: O(log n), not 9 leaf hashes
    assert verify_lines(lines, public) == Report(True, 11, 2)  # checkpoints at 16 and 20


@pytest.mark.parametrize("seq", range(10, 21))
def test_tampering_inside_a_range_is_caught(ranged, seq):
    lines, public = ranged
    entries = parse(lines)
    index = position(entries, seq)
    entries[index]["record"]["actor"] = "mallory"
    failed(verify_lines(dump(entries), public), f"record {seq} does not match its hash (edited)", line=index + 1)


def test_tampering_with_a_range_prefix_is_caught(ranged):
    lines, public = ranged
    entries = parse(lines)
    entries[0]["frontier"][0][1] = _flip(entries[0]["frontier"][0][1])
    failed(verify_lines(dump(entries), public),
           "checkpoint at 16: the records 1..16 are not the ones that were signed", line=9)
    entries = parse(lines)
    entries[0]["last_hash"] = _flip(entries[0]["last_hash"])
    failed(verify_lines(dump(entries), public), "record 10 does not link to record 9 (chain broken)", line=2)
    entries = parse(lines)
    entries[0]["frontier"].pop()
    failed(verify_lines(dump(entries), public), "prefix size does not match its frontier", line=1)
    entries = parse(lines)
    entries[0]["frontier"].reverse()  # heights must decrease: 1 + 8 is not a frontier
    failed(verify_lines(dump(entries), public), "prefix size does not match its frontier", line=1)
    failed(verify_lines(lines[1:], public),
           "record 10 found where record 1 belongs (a record is missing, duplicated or out of order)", line=1)
    failed(verify_lines([lines[1], lines[0], *lines[2:]], public),
           "record 10 found where record 1 belongs (a record is missing, duplicated or out of order)", line=1)


def test_a_range_cut_before_its_end_checkpoint_is_caught(ranged):
    lines, public = ranged
    failed(verify_lines(lines[:-1], public), "records 17..20 are not covered by a signed checkpoint", line=13)


# -- 9. the store itself refuses edits ---------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE events SET record = '{}' WHERE seq = 2",
    "UPDATE events SET hash = 'x'",
    "DELETE FROM events WHERE seq = 3",
    "DELETE FROM events",
])
def test_triggers_refuse_update_and_delete(tmp_path, statement, backend_kind):
    """SQLite's triggers refuse the change; PostgreSQL refuses the enclave's role the privilege (and its
    triggers refuse the owner: tests/audit/test_postgres.py)."""
    store = build_reference(tmp_path, backend_kind)
    before = store.records()
    refused = (sqlite3.DatabaseError, psycopg.Error)
    with pytest.raises(refused, match=r"append-only|permission denied"), store.transaction() as tx:
        tx.connection.execute(statement)
    assert store.records() == before
    assert verify_lines(export(store), store.signer.public).ok


def test_editing_the_database_file_behind_the_triggers_is_caught_by_verify(tmp_path):
    store = build_reference(tmp_path)
    with contextlib.closing(sqlite3.connect(store.backend.path, isolation_level=None)) as connection:
        connection.execute("DROP TRIGGER events_append_only_update")
        (text,) = connection.execute("SELECT record FROM events WHERE seq = 3").fetchone()
        record = json.loads(text)
        record["decision"] = "deny"
        connection.execute("UPDATE events SET record = ? WHERE seq = 3", (json.dumps(record, sort_keys=True),))
    lines = export(store)
    failed(verify_lines(lines, store.signer.public), "record 3 does not match its hash (edited)", line=3)


# -- 10. malformed input is refused, not a crash ---------------------------------------------------------------


@pytest.mark.parametrize(("inserted", "problem"), [
    ("{not json", "not a log entry (malformed JSON)"),
    ("[]", "not a log entry (malformed JSON)"),
    ('"event"', "not a log entry (malformed JSON)"),
    ("42", "not a log entry (malformed JSON)"),
    ("null", "not a log entry (malformed JSON)"),
    ('{"record": {"seq": 5}}', "not a log entry (malformed JSON)"),
    ('{"kind": "note", "text": "hello"}', "unknown entry kind 'note'"),
    ('{"kind": "event"}', "an event without a record"),
    ('{"kind": "event", "record": [1, 2]}', "an event without a record"),
    ('{"kind": "prefix", "size": 0, "last_hash": "' + GENESIS + '", "frontier": []}',
     "a prefix may only open an export"),
], ids=["not-json", "list", "string", "number", "null", "no-kind", "unknown-kind", "no-record", "record-not-object",
        "late-prefix"])
def test_a_malformed_line_is_refused(lines, public, inserted, problem):
    report = verify_lines([*lines[:4], inserted, *lines[4:]], public)
    failed(report, problem, line=5)
    assert report.records == 4


@pytest.mark.parametrize("export_lines", [[], [""], ["", "   ", "\n"]], ids=["empty", "blank", "blanks"])
def test_an_empty_export_is_refused(public, export_lines):
    report = verify_lines(export_lines, public)
    failed(report, "no records")
    assert report.records == report.checkpoints == 0


def test_checkpoints_alone_are_refused(lines, public):
    only = [line for line in lines if json.loads(line)["kind"] == "checkpoint"]
    failed(verify_lines(only, public), "checkpoint at 8 does not follow record 8", line=1)


def test_blank_lines_are_ignored(lines, public):
    assert verify_lines([line for raw in lines for line in (raw, "")], public).ok


@pytest.mark.parametrize("first", [
    pytest.param('{"kind": "prefix"}', id="prefix-without-fields"),
    pytest.param('{"kind": "prefix", "size": 1, "last_hash": "00", "frontier": [[0, "zz"]]}', id="prefix-leaf-not-hex"),
    pytest.param('{"kind": "prefix", "size": 1, "last_hash": "00", "frontier": [0]}', id="prefix-frontier-not-pairs"),
    pytest.param('{"kind": "checkpoint", "checkpoint": "x", "signature": ""}', id="checkpoint-body-not-object"),
])
def test_an_entry_with_malformed_fields_is_refused_not_a_crash(lines, public, first):
    report = verify_lines([first, *lines], public)
    assert not report.ok
    assert report.line == 1


# -- 11. the privacy budget and its rebuild from the log -----------------------------------------------------


def test_ledger_totals_rebuild_from_the_log_and_caps_hold(tmp_path, backend_kind):
    store = new_store(tmp_path, "ledger", backend_kind)
    with store.transaction() as tx:
        for researcher in RESEARCHERS:
            for dataset in DATASETS:
                grant(tx, "steward", researcher, dataset, 1.0, 1e-6)
    spends = {("alice", "demo"): [0.1] * 10, ("alice", "schools"): [0.25, 0.5],
              ("bob", "demo"): [0.3, 0.3, 0.3], ("bob", "schools"): [1.0]}
    for (researcher, dataset), amounts in spends.items():
        for amount in amounts:
            with store.transaction() as tx:
                reserve(tx, researcher, dataset, amount, 1e-8, {"sql_submitted": "SELECT 1"})
    expected = {key: (sum(round(a * EPSILON_UNIT) for a in amounts), len(amounts) * round(1e-8 * DELTA_UNIT))
                for key, amounts in spends.items()}
    assert expected[("alice", "demo")] == (EPSILON_UNIT, 10 * 10**7)  # ten charges of 0.1 sum to exactly 1.0
    with store.transaction() as tx:
        assert live_totals(tx) == expected
    assert rebuild_from_log(store.records()) == expected

    def counts(tx) -> tuple[int, int]:
        return (tx.connection.execute("SELECT count(*) FROM events").fetchone()[0],
                tx.connection.execute("SELECT count(*) FROM charges").fetchone()[0])

    refusals = [
        ("alice", "demo", 1e-9, 0.0, "budget_exceeded"),  # the cap is spent to the last unit
        ("bob", "demo", 0.1 + 1e-9, 0.0, "budget_exceeded"),  # 0.1 left, asks for one unit more
        ("bob", "schools", 0.001, 0.0, "budget_exceeded"),  # ε is all spent even though δ is not
        ("alice", "schools", 0.25, 1e-6, "budget_exceeded"),  # ε fits, δ does not
        ("carol", "demo", 0.1, 0.0, "no_grant"),
        ("alice", "nosuch", 0.1, 0.0, "no_grant"),
    ]
    for researcher, dataset, epsilon, delta, code in refusals:
        with store.transaction() as tx:
            before = counts(tx)
            with pytest.raises(BudgetError) as caught:
                reserve(tx, researcher, dataset, epsilon, delta, {"sql_submitted": "SELECT 1"})
            assert caught.value.code == code, (researcher, dataset, epsilon, delta)
            assert counts(tx) == before  # no charge and no record of one
    with pytest.raises(BudgetError, match="You have no grant on dataset demo"), store.transaction() as tx:
        reserve(tx, "carol", "demo", 0.1, 0.0, {})

    with store.transaction() as tx:
        assert live_totals(tx) == expected
        left = remaining(tx, "bob", "demo")
        assert left is not None
        assert left.epsilon == pytest.approx(0.1)
        reserve(tx, "bob", "demo", 0.1, 0.0, {})  # exactly what is left is allowed
        expected[("bob", "demo")] = (EPSILON_UNIT, expected[("bob", "demo")][1])
        assert live_totals(tx) == expected
    assert rebuild_from_log(store.records()) == expected
    assert not [r for r in store.records() if r["event"] == "query.charged" and r["actor"] == "carol"]
    assert verify_lines(export(store), store.signer.public) == Report(True, 4 + 16 + 1, 3)


def test_a_refused_reservation_rolls_back_with_its_transaction(tmp_path, backend_kind):
    store = new_store(tmp_path, "rollback", backend_kind)
    with store.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 0.5, 1e-6)
    def reserve_twice() -> None:
        with store.transaction() as tx:
            reserve(tx, "alice", "demo", 0.4, 0.0, {})
            reserve(tx, "alice", "demo", 0.4, 0.0, {})  # the second overspends: the first goes with it

    with pytest.raises(BudgetError) as caught:
        reserve_twice()
    assert caught.value.code == "budget_exceeded"
    assert [r["event"] for r in store.records()] == ["grant.created"]
    assert rebuild_from_log(store.records()) == {}
    with store.transaction() as tx:
        assert live_totals(tx) == {}


# -- 12. the command line, offline ----------------------------------------------------------------------------


def _cli_verify(path: Path, pem: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENCLAVE_CLI), "audit", "verify", str(path), "--public-key", str(pem)],
                          capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def test_cli_verifies_an_export_offline(lines, public, tmp_path):
    assert ENCLAVE_CLI.exists(), ENCLAVE_CLI
    pem = tmp_path / "public-key.pem"
    pem.write_bytes(public_pem(public))
    good = tmp_path / "log.jsonl"
    good.write_text("\n".join(lines) + "\n")
    entries = parse(lines)
    entries[position(entries, 17)]["record"]["actor"] = "mallory"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join(dump(entries)) + "\n")

    ok = _cli_verify(good, pem, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok:")
    assert ok.stdout.strip() == f"ok: {RECORDS} records, {len(CHECKPOINTED)} signed checkpoints verified"

    refused = _cli_verify(bad, pem, tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout.startswith("FAILED")
    assert refused.stdout.strip() == "FAILED at line 19: record 17 does not match its hash (edited)"
    assert "Traceback" not in refused.stderr


def test_a_checkpoint_signs_the_frontiers_root_and_a_missing_frontier_is_rebuilt(tmp_path, backend_kind):
    """Appends keep the log's Merkle frontier (O(log n) a checkpoint); it signs the same root as a pass over
    every record, and a store without it (one from before migration 9) rebuilds it from the log."""
    store = build_reference(tmp_path, backend_kind)
    with store.reading() as connection:
        size, frontier = connection.execute("SELECT size, frontier FROM merkle").fetchone()
        leaves = [leaf_hash(text.encode()) for (text,) in connection.execute("SELECT record FROM events ORDER BY seq")]
    assert size == len(leaves) == 30
    assert [height for height, _ in json.loads(frontier)] == [4, 3, 2, 1]  # 30 = 16 + 8 + 4 + 2
    with store.transaction() as tx:
        tx.connection.execute("DELETE FROM merkle")
        for n in range(2):  # records 31, 32: 32 is checkpointed on its own
            tx.append("query.refused", "r1", "deny", ["x"], dataset="demo", n=n)
    signed = {c["checkpoint"]["size"]: c["checkpoint"]["root"] for c in store.checkpoints()}
    with store.reading() as connection:
        leaves = [leaf_hash(text.encode()) for (text,) in connection.execute("SELECT record FROM events ORDER BY seq")]
        assert connection.execute("SELECT size FROM merkle").fetchone()[0] == 32
    assert signed[32] == root_of_hashes(leaves).hex()
    assert verify_lines(export(store), store.signer.public) == Report(True, 32, 4)  # 8, 16, 24, 32
