"""The governed state as a projection of the audit log (invariant 11), and its comparison with the live tables.

Every table that decides access or budget is written in the same transaction as the record that
explains it, so folding the records in order (`project`, a pure function of the records) gives exactly
the rows each table must hold. `compare` names every difference: a row the log explains that is
missing, a row the log does not explain, or a column whose value the log contradicts. An edit of the
SQLite file behind the application (a deleted charge, a raised cap, a new steward) is therefore
reported by `enclave audit verify` and refuses start-up (`ensure_consistent`).

Two tables are compared only in part, by design:
- `template_runs`: a slot taken for a run in progress (query id '', seq 0) is not yet the log's; it can
  only lower how often a researcher may run a template, and a crash mid-run leaves one behind.
- `releases` (the replay cache): payloads are not in the log, so a missing row cannot be rebuilt; a
  missing answer is asked and paid for again, which leaks nothing. Each row marked `released` must be
  one the log records: same researcher, record, and SHA-256 of its payload.
API key digests are compared, never printed ("digest differs").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from enclave.audit.records import canonical, sha256_text
from enclave.audit.store import AuditStore, Connection, StoreError

Row = dict[str, object]
State = dict[str, dict[tuple, Row]]

# table -> (key columns, compared columns); the SQL that reads the live table is built from these.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "principals": (("name",), ("roles", "seq")),
    "api_keys": (("key_id",), ("principal", "digest", "revoked", "seq")),
    "grants": (("researcher", "dataset"),
               ("epsilon_cap", "delta_cap", "purpose", "starts", "expires", "adhoc", "revoked", "seq")),
    "templates": (("id",), ("body", "proposer", "status", "approvals", "seq")),
    "template_runs": (("seq",), ("template_id", "researcher", "query_id")),
    "charges": (("query_id",), ("researcher", "dataset", "epsilon", "delta", "seq")),
    "data_versions": (("dataset", "version"), ("build", "database", "reason", "consent_seq", "seq")),
    "consents": (("id",), ("dataset", "subject", "purpose", "action", "given", "expires", "seq")),
    "releases": (("query_id",), ("researcher", "payload_sha256", "seq")),
}
SECRET_COLUMNS = frozenset({("api_keys", "digest")})
PARTIAL_TABLES = frozenset({"releases"})  # only the live rows are checked (see the module docstring)


@dataclass(frozen=True)
class Difference:
    """One way the live table and the log disagree; `line` says it without printing a secret."""

    table: str
    key: tuple
    column: str | None = None
    expected: object = None
    found: object = None
    seq: int | None = None

    def line(self) -> str:
        where = f"{self.table} {'/'.join(str(k) for k in self.key)}"
        if self.column is None:
            if self.found is None:
                return f"{where}: in the log (record {self.seq}) but missing from the table"
            return f"{where}: in the table but not in the log"
        if (self.table, self.column) in SECRET_COLUMNS:
            return f"{where}: {self.column} differs from the log"
        return f"{where}: {self.column} is {self.found!r} in the table, {self.expected!r} in the log"


class StateMismatch(StoreError):
    """The live tables are not what the log says: the enclave will not run on them."""

    def __init__(self, differences: list[Difference]) -> None:
        self.differences = differences
        count = f"{len(differences)} place{'s' if len(differences) != 1 else ''}"
        super().__init__("\n".join([
            f"The audit store's live state differs from its log in {count}; the enclave will not start on it:",
            *(f"  {d.line()}" for d in differences),
            "Restore the audit store from a backup, or investigate who changed it "
            "(enclave audit verify names every difference)."]))


# -- the fold: one function per event type that changes governed state --------------------------------------


def _grant(state: State, r: dict) -> None:
    state["grants"][(r["researcher"], r["dataset"])] = {
        "epsilon_cap": r["epsilon_cap_units"], "delta_cap": r["delta_cap_units"], "purpose": r["purpose"],
        "starts": r["starts"], "expires": r["expires"], "adhoc": int(r["adhoc"]), "revoked": 0, "seq": r["seq"]}


def _set(table: str, key: Callable[[dict], tuple],
         **columns: Callable[[dict], object]) -> Callable[[State, dict], None]:
    """A fold step that updates columns of an existing row (a record about an unknown row changes nothing)."""
    def step(state: State, r: dict) -> None:
        row = state[table].get(key(r))
        if row is not None:
            row.update({name: value(r) for name, value in columns.items()})
    return step


def _principal(state: State, r: dict) -> None:
    state["principals"][(r["principal"],)] = {"roles": ",".join(r["roles"]), "seq": r["seq"]}


def _key(state: State, r: dict) -> None:
    state["api_keys"][(r["key_id"],)] = {"principal": r["principal"], "digest": r["digest"], "revoked": 0,
                                         "seq": r["seq"]}


def _template(state: State, r: dict) -> None:
    state["templates"][(r["template_id"],)] = {"body": template_body(r["template"]), "proposer": r["actor"],
                                               "status": "proposed", "approvals": "[]", "seq": r["seq"]}


def _run(state: State, r: dict) -> None:
    state["template_runs"][(r["seq"],)] = {"template_id": r["template_id"], "researcher": r["actor"],
                                           "query_id": r["query_id"]}


def _charge(state: State, r: dict) -> None:
    state["charges"][(r["query_id"],)] = {"researcher": r["actor"], "dataset": r["dataset"],
                                          "epsilon": r["charge"]["epsilon_units"],
                                          "delta": r["charge"]["delta_units"], "seq": r["seq"]}


def _version(state: State, r: dict) -> None:
    state["data_versions"][(r["dataset"], r["version"])] = {
        "build": r["build"], "database": r["database"], "reason": r["reason"], "consent_seq": r["consent_seq"],
        "seq": r["seq"]}


def _consents(state: State, r: dict) -> None:
    """Statements get ids 1, 2, 3, ... in the order they were recorded (`enclave.audit.migrations`)."""
    if r["event"] == "consent.imported":
        entries = r["entries"]
    else:
        entries = [[r["subject"], r["purpose"], "give" if r["event"] == "consent.given" else "revoke",
                    r["given"], r["expires"]]]
    rows = state["consents"]
    for subject, purpose, action, given, expires in entries:
        rows[(len(rows) + 1,)] = {"dataset": r["dataset"], "subject": subject, "purpose": purpose,
                                  "action": action, "given": given, "expires": expires, "seq": r["seq"]}


def _released(state: State, r: dict) -> None:
    state["releases"][(r["query_id"],)] = {"researcher": r["actor"], "payload_sha256": r["payload_sha256"],
                                           "seq": r["seq"]}


_review = _set("templates", lambda r: (r["template_id"],), status=lambda r: r["status"],
               approvals=lambda r: approvals_text(r["approvals"]), seq=lambda r: r["seq"])

FOLD: dict[str, Callable[[State, dict], None]] = {
    "grant.created": _grant,
    "grant.revoked": _set("grants", lambda r: (r["researcher"], r["dataset"]), revoked=lambda r: 1),
    "principal.roles": _principal,
    "key.issued": _key,
    "key.revoked": _set("api_keys", lambda r: (r["key_id"],), revoked=lambda r: 1),
    "template.proposed": _template,
    "template.approved": _review,
    "template.rejected": _review,
    "template.revoked": _review,
    "template.run": _run,
    "query.charged": _charge,
    "query.released": _released,
    "data.version": _version,
    "consent.given": _consents,
    "consent.revoked": _consents,
    "consent.imported": _consents,
}


def template_body(template: dict) -> str:
    """How a template's spec is stored: the canonical JSON of what its `template.proposed` record holds."""
    return canonical(template).decode()


def approvals_text(approvals: Iterable[str]) -> str:
    return json.dumps(list(approvals))


def project(records: Iterable[dict]) -> State:
    """The rows every governed table must hold after these records (in order, from record 1)."""
    state: State = {table: {} for table in TABLES}
    for record in records:
        step = FOLD.get(str(record["event"]))
        if step is not None:
            step(state, record)
    return state


def live_state(connection: Connection) -> State:
    """The governed tables as they are, in the shape `project` returns."""
    state: State = {}
    for table, (keys, columns) in TABLES.items():
        if table == "releases":
            rows = connection.execute("SELECT query_id, researcher, payload, seq FROM releases "
                                      "WHERE status = 'released'").fetchall()
            state[table] = {(q,): {"researcher": who, "payload_sha256": sha256_text(p) if p is not None else None,
                                   "seq": seq} for q, who, p, seq in rows}
            continue
        where = " WHERE NOT (query_id = '' AND seq = 0)" if table == "template_runs" else ""
        rows = connection.execute(f"SELECT {', '.join(keys + columns)} FROM {table}{where}").fetchall()  # noqa: S608
        state[table] = {tuple(row[:len(keys)]): dict(zip(columns, row[len(keys):], strict=True)) for row in rows}
    return state


def compare(expected: State, found: State) -> list[Difference]:
    """Every difference, table by table in TABLES order, keys sorted."""
    differences: list[Difference] = []
    for table, (_, columns) in TABLES.items():
        want, have = expected.get(table, {}), found.get(table, {})
        keys = have.keys() if table in PARTIAL_TABLES else want.keys() | have.keys()
        for key in sorted(keys):
            if key not in have:
                differences.append(Difference(table, key, seq=_seq(table, key, want[key])))
            elif key not in want:
                differences.append(Difference(table, key, found="row"))
            else:
                differences.extend(Difference(table, key, column, want[key][column], have[key][column])
                                   for column in columns if want[key][column] != have[key][column])
    return differences


def _seq(table: str, key: tuple, row: Row) -> object:
    return key[0] if table == "template_runs" else row.get("seq")


def differences(store: AuditStore) -> list[Difference]:
    """Fold the whole log and compare it with the live tables, in one read snapshot (so a concurrent writer,
    which changes both together, is never half seen)."""
    with store.reading() as connection:
        records = (json.loads(text) for (text,) in connection.execute("SELECT record FROM events ORDER BY seq"))
        expected = project(records)
        found = live_state(connection)
    return compare(expected, found)


def ensure_consistent(store: AuditStore) -> None:
    """Raise StateMismatch, naming every difference, unless the live state is the log's projection."""
    found = differences(store)
    if found:
        raise StateMismatch(found)
