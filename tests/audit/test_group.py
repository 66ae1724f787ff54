"""Group commit (enclave.audit.group): many threads' writes, one commit, each as if it were alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from enclave.audit.signing import load_public_key, public_pem
from enclave.audit.store import Transaction
from enclave.audit.verify import verify_lines
from tests.audit.test_log import new_store


class Refused(Exception):
    pass


def test_concurrent_writes_commit_together_and_a_failing_one_is_undone_alone(tmp_path: Path, backend_kind: str):
    store = new_store(tmp_path, kind=backend_kind)
    results: dict[int, object] = {}
    start = threading.Barrier(24)

    def write(number: int) -> None:
        def work(tx: Transaction) -> int:
            record = tx.append("query.refused", f"r{number}", "deny", ["x"], dataset="demo")
            if number % 5 == 0:
                raise Refused(number)  # after appending: the append must be undone with it
            return int(record["seq"])

        start.wait()
        try:
            results[number] = store.grouped(work)
        except Refused as error:
            results[number] = error

    threads = [threading.Thread(target=write, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {n for n, r in results.items() if isinstance(r, Refused)}
    assert failed == {0, 5, 10, 15, 20}
    seqs = sorted(r for r in results.values() if isinstance(r, int))
    assert seqs == list(range(1, 20))  # no gap where a write was undone
    records = store.records()
    assert sorted(r["actor"] for r in records) == sorted(f"r{n}" for n in range(24) if n not in failed)
    assert {int(r["seq"]): r["actor"] for r in records} == {
        results[n]: f"r{n}" for n in results if n not in failed}  # each got its own record's number
    lines = list(store.export_lines())
    public = tmp_path / "public.pem"
    public.write_bytes(public_pem(store.signer.public))
    assert verify_lines(lines, load_public_key(public)).ok


def test_a_commit_that_fails_fails_every_write_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = new_store(tmp_path)

    def broken(tx: Transaction) -> None:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(Transaction, "flush", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        store.grouped(lambda tx: tx.append("query.refused", "r", "deny", ["x"], dataset="demo"))
    monkeypatch.undo()
    assert store.records() == []
    assert store.grouped(lambda tx: tx.append("query.refused", "r", "deny", ["x"], dataset="demo"))["seq"] == 1
