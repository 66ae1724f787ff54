"""Invariant 11: the live state that decides access and budget is a projection of the audit log.

A busy store is built once through the real APIs (principals and keys, grants and a revocation, ad-hoc
queries with a release, a replay and a refusal, a template proposed, approved, run and another
rejected, consent given, revoked and imported, data versions); each test then works on a copy of its
home and edits the SQLite file the way an attacker with the file would, behind the application (and
behind the append-only triggers where there are any: an attacker drops them first). `verify` and the
start-up check must name every edit: table, key, column, the log's value and the table's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.access.keys import ensure_principal, issue_key, revoke_key
from enclave.audit.records import sha256_text
from enclave.audit.state import StateMismatch, compare, differences, live_state, project
from enclave.budget.ledger import grant, revoke_grant
from enclave.catalog.demo import DemoData
from enclave.onboarding import ConsentChange, record_consent
from enclave.pipeline import Enclave, QueryError
from enclave.settings import PROJECT_ROOT, Settings
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec
from tests.conftest import TEST_CHILDREN

# this checkout's CLI (the installed `enclave` script may belong to another checkout)
ENCLAVE_CLI = (sys.executable, "-m", "enclave.cli")
SQL = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
SPEC = {
    "title": "Chronic absence by school for a grade",
    "purpose": "How chronic absence varies by school for one grade.",
    "dataset": "demo",
    "sql": "SELECT school, AVG(CASE WHEN days_absent >= 18 THEN 1 ELSE 0 END) AS chronic FROM enrollments "
           "WHERE grade = $grade GROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12}],
    "epsilon": 0.5,
    "run_limit": 3,
}
GIVEN = dt.date(2020, 1, 1)


def settings(home: Path) -> Settings:
    return Settings(home=home, demo_children=TEST_CHILDREN)


def populate(enclave: Enclave) -> None:
    """Every kind of state change, each through the code path the service uses."""
    pepper = enclave.settings.pepper
    with enclave.audit.transaction() as tx:
        ensure_principal(tx, "steward", "alice", {"researcher"})
        ensure_principal(tx, "steward", "rita", {"reviewer"})
        ensure_principal(tx, "steward", "rita", {"reviewer", "auditor"})
        issue_key(tx, pepper, "steward", "alice")
        revoke_key(tx, "steward", issue_key(tx, pepper, "steward", "rita").split("_")[1])
        issue_key(tx, pepper, "steward", "rita")
        grant(tx, "steward", "alice", "demo", 5.0, 1e-6, purpose="study")
        grant(tx, "steward", "bob", "demo", 1.0, 1e-6, purpose="study", expires=dt.date(2099, 1, 1))
        grant(tx, "steward", "carol", "demo", 1.0, 1e-6)
        revoke_grant(tx, "steward", "carol", "demo", "study ended")
    enclave.query("alice", "demo", SQL, 0.2)
    assert enclave.query("alice", "demo", SQL, 0.2).replayed
    enclave.query("bob", "demo", SQL, 0.1)
    with pytest.raises(QueryError):
        enclave.query("carol", "demo", SQL, 0.1)
    template = workflow.propose(enclave, "alice", TemplateSpec.model_validate(SPEC))
    workflow.review(enclave, "rita", template.id, "approve", "aggregate only")
    workflow.run(enclave, "alice", template.id, {"grade": 3})
    workflow.run(enclave, "alice", template.id, {"grade": 4})
    other = workflow.propose(enclave, "alice", TemplateSpec.model_validate({**SPEC, "title": "Another"}))
    workflow.review(enclave, "rita", other.id, "reject", "too fine")
    local_ids = [i for (i,) in enclave.identity("demo").con.execute(
        "SELECT local_id FROM roster WHERE contributor = 'school_district' ORDER BY local_id LIMIT 5").fetchall()]
    record_consent(enclave, "steward", "demo", [ConsentChange("school_district", local_ids[0], "study", "give", GIVEN)])
    record_consent(enclave, "steward", "demo", [ConsentChange("school_district", local_ids[0], "study", "revoke")])
    record_consent(enclave, "steward", "demo", [ConsentChange("school_district", i, "study", "give", GIVEN,
                                                              dt.date(2030, 1, 1)) for i in local_ids[1:]],
                   source="consent.csv")


@pytest.fixture(scope="module")
def busy_home(tmp_path_factory: pytest.TempPathFactory, demo_data: DemoData) -> Path:
    home = tmp_path_factory.mktemp("busy")
    (home / "data").mkdir()
    (home / "data" / demo_data.directory.name).symlink_to(demo_data.directory)
    enclave = Enclave(settings(home))
    try:
        populate(enclave)
    finally:
        enclave.close()
    return home


@pytest.fixture
def home(busy_home: Path, tmp_path: Path) -> Path:
    """A copy of the busy home (log, WAL, secrets; the demo data stays a shared symlink) to tamper with."""
    copy = tmp_path / "home"
    shutil.copytree(busy_home, copy, symlinks=True)
    return copy


def store_path(home: Path) -> Path:
    return home / "audit" / "log.sqlite3"


def tamper(home: Path, *statements: str, params: tuple = ()) -> None:
    """Edit the store's file directly, as someone holding it would (not through the application)."""
    with contextlib.closing(sqlite3.connect(store_path(home), isolation_level=None)) as connection:
        for statement in statements:
            connection.execute(statement, params if "?" in statement else ())


def one(home: Path, sql: str) -> tuple:
    with contextlib.closing(sqlite3.connect(store_path(home))) as connection:
        return connection.execute(sql).fetchone()


def lines_of(home: Path) -> list[str]:
    enclave_free = Enclave.open_audit(settings(home))[0]
    return [d.line() for d in differences(enclave_free)]


# -- the untouched store: an exact projection ------------------------------------------------------------


def test_a_busy_store_is_rebuilt_exactly_from_its_log(home):
    store, _ = Enclave.open_audit(settings(home))
    expected = project(store.records())
    with store.reading() as connection:
        found = live_state(connection)
    assert compare(expected, found) == []
    # not vacuous: every governed table has rows, and each is the log's
    counts = {table: len(rows) for table, rows in expected.items()}
    assert counts == {"principals": 2, "api_keys": 3, "grants": 3, "templates": 2, "template_runs": 2,
                      "charges": 4, "data_versions": 4, "consents": 6, "releases": 4}
    assert found == expected
    assert expected["grants"][("carol", "demo")]["revoked"] == 1
    assert expected["principals"][("rita",)]["roles"] == "auditor,reviewer"
    assert [r["action"] for r in expected["consents"].values()] == ["give", "revoke", "give", "give", "give", "give"]
    assert [k for k, r in expected["templates"].items() if r["status"] == "rejected"] == [(2,)]


def test_the_untouched_store_starts_and_verifies(home):
    Enclave(settings(home)).close()
    done = cli(home, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "state: ok, every governed table is the projection of the log"


# -- each attack is named ----------------------------------------------------------------------------------


def test_a_deleted_charge_is_named_and_the_service_refuses_to_start(home):
    query_id, seq = one(home, "SELECT query_id, seq FROM charges WHERE researcher = 'bob'")
    tamper(home, "DELETE FROM charges WHERE researcher = 'bob'")
    expected = f"charges {query_id}: in the log (record {seq}) but missing from the table"
    assert lines_of(home) == [expected]
    with pytest.raises(StateMismatch) as refused:
        Enclave(settings(home))
    message = str(refused.value)
    assert message.splitlines()[0] == ("The audit store's live state differs from its log in 1 place; the enclave "
                                       "will not start on it:")
    assert message.splitlines()[1] == f"  {expected}"
    assert message.splitlines()[-1] == ("Restore the audit store from a backup, or investigate who changed it "
                                        "(enclave audit verify names every difference).")
    assert refused.value.differences[0].table == "charges"


def test_a_raised_grant_cap_is_named(home):
    tamper(home, "UPDATE grants SET epsilon_cap = 50000000000 WHERE researcher = 'alice'")
    assert lines_of(home) == ["grants alice/demo: epsilon_cap is 50000000000 in the table, 5000000000 in the log"]


def test_an_unrevoked_grant_is_named(home):
    tamper(home, "UPDATE grants SET revoked = 0 WHERE researcher = 'carol'")
    assert lines_of(home) == ["grants carol/demo: revoked is 0 in the table, 1 in the log"]


def test_a_researcher_made_steward_is_named(home):
    tamper(home, "UPDATE principals SET roles = 'researcher,steward' WHERE name = 'alice'")
    assert lines_of(home) == ["principals alice: roles is 'researcher,steward' in the table, 'researcher' in the log"]


def test_a_principal_added_to_the_table_is_named(home):
    tamper(home, "INSERT INTO principals VALUES ('mallory', 'steward', 999)")
    assert lines_of(home) == ["principals mallory: in the table but not in the log"]


def test_an_added_api_key_is_named_without_its_digest(home):
    digest = "ab" * 32
    tamper(home, f"INSERT INTO api_keys VALUES ('0123456789abcdef', 'alice', '{digest}', 0, 7)")
    assert lines_of(home) == ["api_keys 0123456789abcdef: in the table but not in the log"]


def test_a_changed_key_digest_is_named_as_differing_and_never_printed(home):
    key_id, digest = one(home, "SELECT key_id, digest FROM api_keys WHERE principal = 'alice'")
    tamper(home, "UPDATE api_keys SET digest = ? WHERE key_id = ?", params=("cd" * 32, key_id))
    assert lines_of(home) == [f"api_keys {key_id}: digest differs from the log"]
    done = cli(home, "audit", "verify")
    assert done.returncode == 1
    assert digest not in done.stdout + done.stderr
    assert "cd" * 32 not in done.stdout + done.stderr


def test_a_revived_key_is_named(home):
    (key_id,) = one(home, "SELECT key_id FROM api_keys WHERE revoked = 1")
    tamper(home, "UPDATE api_keys SET revoked = 0 WHERE revoked = 1")
    assert lines_of(home) == [f"api_keys {key_id}: revoked is 0 in the table, 1 in the log"]


def test_a_template_status_edit_is_named(home):
    tamper(home, "UPDATE templates SET status = 'approved' WHERE status = 'rejected'")
    assert lines_of(home) == ["templates 2: status is 'approved' in the table, 'rejected' in the log"]


def test_a_deleted_template_run_is_named(home):
    (seq,) = one(home, "SELECT seq FROM template_runs ORDER BY seq LIMIT 1")
    tamper(home, f"DELETE FROM template_runs WHERE seq = {seq}")
    assert lines_of(home) == [f"template_runs {seq}: in the log (record {seq}) but missing from the table"]


def test_a_pending_run_slot_is_not_a_difference(home):
    """A slot taken for a run in progress (query id '', seq 0) is not yet the log's: it only lowers what the
    researcher may run, and a crash leaves one behind."""
    tamper(home, "INSERT INTO template_runs (template_id, researcher, query_id, seq) VALUES (1, 'alice', '', 0)")
    assert lines_of(home) == []


def test_a_deleted_data_version_is_named(home):
    version, seq = one(home, "SELECT max(version), max(seq) FROM data_versions")
    tamper(home, f"DELETE FROM data_versions WHERE version = {version}")
    assert lines_of(home) == [f"data_versions demo/{version}: in the log (record {seq}) but missing from the table"]


def test_a_data_version_pointed_at_another_database_is_named(home):
    version, database = one(home, "SELECT max(version), database FROM data_versions")
    tamper(home, "DROP TRIGGER data_versions_append_only_update",
           f"UPDATE data_versions SET database = '/tmp/other.duckdb' WHERE version = {version}")
    assert lines_of(home) == [f"data_versions demo/{version}: database is '/tmp/other.duckdb' in the table, "
                              f"'{database}' in the log"]


def test_a_deleted_consent_revocation_is_named(home):
    consent_id, seq = one(home, "SELECT id, seq FROM consents WHERE action = 'revoke'")
    tamper(home, "DROP TRIGGER consents_append_only_delete", "DELETE FROM consents WHERE action = 'revoke'")
    assert lines_of(home) == [f"consents {consent_id}: in the log (record {seq}) but missing from the table"]


def test_an_extended_consent_is_named(home):
    tamper(home, "DROP TRIGGER consents_append_only_update",
           "UPDATE consents SET expires = '2099-01-01' WHERE id = 6")
    assert lines_of(home) == ["consents 6: expires is '2099-01-01' in the table, '2030-01-01' in the log"]


def test_an_edited_released_answer_is_named(home):
    query_id, payload = one(home, "SELECT query_id, payload FROM releases WHERE researcher = 'bob'")
    tamper(home, "UPDATE releases SET payload = ? WHERE researcher = 'bob'", params=(payload.replace("1", "2"),))
    assert lines_of(home) == [f"releases {query_id}: payload_sha256 is '{sha256_text(payload.replace('1', '2'))}' "
                              f"in the table, '{sha256_text(payload)}' in the log"]


def test_a_removed_released_answer_is_not_a_difference(home):
    """The replay cache is not the log's to rebuild (payloads are not in the log): a missing answer is
    asked and paid for again, which spends budget and leaks nothing."""
    tamper(home, "DELETE FROM releases WHERE researcher = 'bob'")
    assert lines_of(home) == []


def test_every_edit_is_named_at_once(home):
    tamper(home, "DELETE FROM charges", "UPDATE grants SET delta_cap = 1",
           "UPDATE principals SET roles = 'steward'")
    found = lines_of(home)
    assert len(found) == 4 + 3 + 2
    assert sum(line.startswith("charges ") for line in found) == 4


# -- the command line ------------------------------------------------------------------------------------


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENCLAVE_HOME": str(home), "ENCLAVE_DEMO_CHILDREN": str(TEST_CHILDREN)}
    return subprocess.run([*ENCLAVE_CLI, *args], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                          timeout=120, check=False)


def test_cli_verify_names_the_difference_and_fails(home):
    query_id, seq = one(home, "SELECT query_id, seq FROM charges WHERE researcher = 'bob'")
    tamper(home, "DELETE FROM charges WHERE researcher = 'bob'")
    done = cli(home, "audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("ok: ")  # the chain itself is intact
    assert out[1:] == ["state: 1 difference between the live tables and the log",
                       f"  charges {query_id}: in the log (record {seq}) but missing from the table"]


def test_cli_refuses_to_start_on_a_mismatch_without_a_traceback(home):
    tamper(home, "UPDATE principals SET roles = 'researcher,steward' WHERE name = 'alice'")
    done = cli(home, "grants", "create", "--researcher", "x", "--dataset", "demo", "--epsilon", "1", "--delta", "1e-6",
               "--purpose", "p")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "The audit store's live state differs from its log in 1 place; the enclave will not start on it:",
        "  principals alice: roles is 'researcher,steward' in the table, 'researcher' in the log",
        "Restore the audit store from a backup, or investigate who changed it "
        "(enclave audit verify names every difference)."]
    assert one(home, "SELECT count(*) FROM grants WHERE researcher = 'x'") == (0,)


def test_the_auditor_verify_route_reports_the_differences(home):
    """The route's own function (the HTTP edge around it is tested in tests/api)."""
    from enclave.access.keys import Principal
    from enclave.api.routes.auditor import verify_log

    enclave = Enclave(settings(home))
    try:
        tamper(home, "UPDATE grants SET epsilon_cap = 50000000000 WHERE researcher = 'alice'")
        body = verify_log(enclave, Principal("audrey", frozenset({"auditor"}), "k"))
    finally:
        enclave.close()
    assert body.ok is False
    assert body.problem is None
    assert body.differences == ["grants alice/demo: epsilon_cap is 50000000000 in the table, 5000000000 in the log"]
