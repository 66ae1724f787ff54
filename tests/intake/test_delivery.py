"""Deliveries: a good one is loaded, linked and recorded (never its contents); a bad one is refused with a
precise error (file, row, column, never the value) and changes nothing: not the identity store, not
the data versions, not the analysis databases."""

from __future__ import annotations

import dataclasses
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.catalog import versions
from enclave.intake.delivery import DeliveryFile, DeliveryRefused
from enclave.onboarding import ingest
from tests.intake.conftest import DATASET, consented_home, identity_state, open_enclave

CONTRIBUTOR = "school_district"


def files_of(deliveries, contributor: str = CONTRIBUTOR) -> dict[str, DeliveryFile]:
    return {f.kind: f for f in deliveries[0][contributor]}


def edited_roster(roster: DeliveryFile, edit) -> DeliveryFile:
    """The roster CSV with `edit(lines)` applied to its lines (line 1 is the header)."""
    lines = roster.content.decode().splitlines()
    return dataclasses.replace(roster, content=("\r\n".join(edit(lines)) + "\r\n").encode())


def set_cell(lines: list[str], line: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    return [*lines[: line - 1], ",".join(cells), *lines[line:]]


def test_a_good_delivery_is_loaded_linked_and_recorded_without_its_contents(empty, deliveries):
    files = files_of(deliveries)
    done = ingest(empty, "steward", DATASET, CONTRIBUTOR, list(files.values()))
    roster = files["roster"].content.decode().splitlines()
    assert done.receipt is not None
    assert done.linked is not None
    assert {f.kind: f.rows for f in done.receipt.files} == {
        "roster": len(roster) - 1,
        **{kind: pq.read_table(pa.BufferReader(files[kind].content)).num_rows
           for kind in ("enrollments", "assessments")}}
    assert done.version.label.startswith("v1-")
    events = empty.audit.records()
    delivered = [r for r in events if r["event"] == "data.delivered"]
    assert len(delivered) == 1
    assert delivered[0]["files"] == [{"kind": f.kind, "name": f.name, "sha256": f.digest, "rows": r.rows}
                                     for f, r in zip(files.values(), done.receipt.files, strict=True)]
    assert delivered[0]["linkage"]["persons"] == done.linked.persons
    assert delivered[0]["data_version"] == done.version.label
    versions = [r for r in events if r["event"] == "data.version"]
    assert [v["data_version"] for v in versions] == [done.version.label]
    assert versions[0]["rows"]["enrollments"] == {f.kind: f.rows for f in done.receipt.files}["enrollments"]
    log = json.dumps(events)
    for line in roster[1:50]:  # no local ID, name or birth date of the delivery is in the log
        local_id, last, first, born = line.split(",")[:4]
        assert local_id not in log
        assert f'"{last}"' not in log
        assert f'"{first}"' not in log
        assert born not in log


def _missing_column(files):
    return {"roster": edited_roster(files["roster"], lambda ls: [",".join(
        c for c in line.split(",")[:3] + line.split(",")[4:]) for line in ls])}


def _unknown_column(files):
    return {"roster": edited_roster(files["roster"], lambda ls: [ls[0] + ",ssn", *(line + ",123" for line in ls[1:])])}


def _bad_date(files):
    return {"roster": edited_roster(files["roster"], lambda ls: set_cell(ls, 6, "birth_date", "2012-13-45"))}


def _day_first_date(files):
    return {"roster": edited_roster(files["roster"], lambda ls: set_cell(ls, 9, "birth_date", "21/03/2012"))}


def _old_birth_date(files):
    return {"roster": edited_roster(files["roster"], lambda ls: set_cell(ls, 4, "birth_date", "1990-01-01"))}


def _duplicate_local_id(files):
    def edit(lines):
        return set_cell(lines, 8, "local_id", lines[2].split(",")[0])
    return {"roster": edited_roster(files["roster"], edit)}


def _gender_not_allowed(files):
    return {"roster": edited_roster(files["roster"], lambda ls: set_cell(ls, 5, "gender", "Q"))}


def _missing_name(files):
    return {"roster": edited_roster(files["roster"], lambda ls: set_cell(ls, 7, "first_name", ""))}


def _encoding_error(files):
    content = files["roster"].content.split(b"\n")
    content[10] = content[10].replace(b",", b",\xff", 1)  # line 11
    return {"roster": dataclasses.replace(files["roster"], content=b"\n".join(content))}


def _truncated_csv(files):
    content = files["roster"].content
    cut = content.rstrip(b"\r\n").rfind(b",")  # mid-way through the last row
    return {"roster": dataclasses.replace(files["roster"], content=content[:cut])}


def _unclosed_quote(files):
    return {"roster": edited_roster(files["roster"], lambda ls: [*ls[:-1], ls[-1].replace(",", ',"', 1)])}


def _truncated_parquet(files):
    records = files["enrollments"]
    return {"enrollments": dataclasses.replace(records, content=records.content[: len(records.content) // 2])}


def _bad_integer(files):
    table = pq.read_table(pa.BufferReader(files["enrollments"].content)).to_pylist()
    table[4]["grade"] = None
    rows = [{**r, "grade": "ten" if i == 4 else str(r["grade"])} for i, r in enumerate(table)]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return {"enrollments": dataclasses.replace(files["enrollments"], content=buffer.getvalue())}


def _unknown_local_id(files):
    table = pq.read_table(pa.BufferReader(files["enrollments"].content)).to_pylist()
    table[2]["local_id"] = "S0000000"
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(table), buffer)
    return {"enrollments": dataclasses.replace(files["enrollments"], content=buffer.getvalue())}


def _checksum(files):
    return {"roster": dataclasses.replace(files["roster"], sha256="0" * 64)}


def _empty(files):
    return {"roster": dataclasses.replace(files["roster"], content=files["roster"].content.splitlines(True)[0])}


# name -> (the broken files, expected first problem: code, file kind, row, column)
MALFORMED = {
    "wrong columns: one missing": (_missing_column, ("missing_column", "roster", 1, "birth_date")),
    "wrong columns: one unknown": (_unknown_column, ("unknown_column", "roster", 1, "ssn")),
    "bad date": (_bad_date, ("bad_value", "roster", 6, "birth_date")),
    "date not YYYY-MM-DD": (_day_first_date, ("bad_value", "roster", 9, "birth_date")),
    "date out of range": (_old_birth_date, ("out_of_range", "roster", 4, "birth_date")),
    "duplicate local IDs": (_duplicate_local_id, ("duplicate_local_id", "roster", 8, "local_id")),
    "value not allowed": (_gender_not_allowed, ("value_not_allowed", "roster", 5, "gender")),
    "required value missing": (_missing_name, ("missing_value", "roster", 7, "first_name")),
    "encoding error": (_encoding_error, ("encoding_error", "roster", 11, None)),
    "truncated CSV": (_truncated_csv, ("malformed_row", "roster", "last", None)),
    "truncated CSV inside a quote": (_unclosed_quote, ("malformed_row", "roster", "last", None)),
    "truncated Parquet": (_truncated_parquet, ("unreadable_file", "enrollments", None, None)),
    "not an integer": (_bad_integer, ("bad_value", "enrollments", 5, "grade")),
    "record for nobody on the roster": (_unknown_local_id, ("unknown_local_id", "enrollments", 3, "local_id")),
    "checksum mismatch": (_checksum, ("checksum_mismatch", "roster", None, None)),
    "no rows": (_empty, ("empty_file", "roster", None, None)),
}


@pytest.fixture(scope="module")
def primed(tmp_path_factory, deliveries):
    """An enclave that has the contributor's roster already: each refusal below must leave it as it is
    (which is what lets the cases share it)."""
    enclave = open_enclave(consented_home(tmp_path_factory.mktemp("primed")))
    ingest(enclave, "steward", DATASET, CONTRIBUTOR, [files_of(deliveries)["roster"]])
    yield enclave
    enclave.close()


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_delivery_is_refused_precisely_and_changes_nothing(case, primed, deliveries):
    files = files_of(deliveries)
    before = identity_state(primed)
    records_before = len(primed.audit.records())
    breaker, (code, kind, row, column) = MALFORMED[case]
    broken = {**files, **breaker(files)}
    with pytest.raises(DeliveryRefused) as refused:
        ingest(primed, "steward", DATASET, CONTRIBUTOR, list(broken.values()))
    first = refused.value.problems[0]
    if row == "last":
        row = len(files["roster"].content.decode().splitlines())
    assert (first.code, first.file, first.row, first.column) == (code, broken[kind].name, row, column), first
    assert identity_state(primed) == before
    records = primed.audit.records()[records_before:]
    assert [r["event"] for r in records] == ["data.refused"]
    assert records[0]["decision"] == "deny"
    assert records[0]["reasons"][0].startswith(f"{code}: ")
    assert records[0]["files"] == [{"kind": f.kind, "name": f.name, "sha256": f.digest} for f in broken.values()]


def test_every_problem_is_listed_with_its_row(empty, deliveries):
    roster = files_of(deliveries)["roster"]

    def edit(lines):
        for line in (3, 12, 40):
            lines = set_cell(lines, line, "birth_date", "soon")
        return lines
    with pytest.raises(DeliveryRefused) as refused:
        ingest(empty, "steward", DATASET, CONTRIBUTOR, [edited_roster(roster, edit)])
    assert [(p.code, p.row, p.column) for p in refused.value.problems] == [("bad_value", r, "birth_date")
                                                                          for r in (3, 12, 40)]
    assert "soon" not in json.dumps([p.message for p in refused.value.problems])  # never the value


def test_records_without_a_roster_and_files_of_another_contributor_are_refused(empty, deliveries):
    files = files_of(deliveries)
    with pytest.raises(DeliveryRefused) as refused:
        ingest(empty, "steward", DATASET, CONTRIBUTOR, [files["enrollments"]])
    assert refused.value.problems[0].code == "no_roster"
    clinic = files_of(deliveries, "clinic")
    with pytest.raises(DeliveryRefused) as refused:
        ingest(empty, "steward", DATASET, CONTRIBUTOR, [files["roster"], clinic["clinic_visits"]])
    assert refused.value.problems[0].code == "unknown_kind"
    with pytest.raises(DeliveryRefused) as refused:
        ingest(empty, "steward", DATASET, "hospital", [files["roster"]])
    assert refused.value.problems[0].code == "unknown_contributor"


def test_a_new_roster_replaces_the_old_and_must_still_cover_the_stored_records(empty, deliveries):
    files = files_of(deliveries)
    ingest(empty, "steward", DATASET, CONTRIBUTOR, list(files.values()))
    with_records = identity_state(empty)
    shorter = edited_roster(files["roster"], lambda ls: ls[:-40])  # 40 children gone, their records stay
    with pytest.raises(DeliveryRefused) as refused:
        ingest(empty, "steward", DATASET, CONTRIBUTOR, [shorter])
    assert refused.value.problems[0].code == "unknown_local_id"
    assert identity_state(empty) == with_records
    done = ingest(empty, "steward", DATASET, CONTRIBUTOR, [files["roster"]])  # the same roster again: fine
    assert done.version.label.startswith("v2-")


def test_a_delivery_that_cannot_be_recorded_is_not_loaded_either(primed, deliveries, monkeypatch):
    """The audit log records the new version before the identity store commits: when it cannot, the
    load, the linkage and the built analysis database are all undone."""
    before = identity_state(primed)

    def unavailable(*args, **kwargs):
        raise OSError("the audit log is unavailable")
    monkeypatch.setattr(versions, "record", unavailable)
    with pytest.raises(OSError):
        ingest(primed, "steward", DATASET, CONTRIBUTOR, list(files_of(deliveries).values()))
    assert identity_state(primed) == before
