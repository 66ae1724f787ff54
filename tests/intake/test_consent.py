"""Consent governs what queries count: a revocation takes effect at the next query, is audited with the
data version it made, and each query records the consent snapshot it ran with. The restriction is the
rewrite's, so no SQL can remove it.

True counts come from `execute_unprotected` (the pipeline without the noise stage, test-only); the
released path is checked too: its audit records carry the data version and the consent snapshot.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from enclave.budget.ledger import grant, today
from enclave.intake.delivery import DeliveryFile, DeliveryRefused
from enclave.onboarding import ConsentChange, ConsentRefused, import_consents, record_consent, rekey
from enclave.pipeline import QueryError
from tests.intake.conftest import DATASET

COUNT = "SELECT COUNT(DISTINCT person_id) AS n FROM children"
LONG_AGO = dt.date(2020, 1, 1)


def school_ids(deliveries) -> list[str]:
    _, truth = deliveries
    return [local_id for contributor, local_id, _ in truth if contributor == "school_district"]


def true_count(enclave, purpose: str, sql: str = COUNT) -> int:
    prepared = enclave.prepare(DATASET, sql)
    assert prepared.rewritten is not None, prepared.result.violations
    assert prepared.version is not None, prepared.result.violations
    snapshot = enclave.consent_snapshot(DATASET, prepared.version, purpose)
    return enclave.execute_unprotected(DATASET, prepared.rewritten, snapshot, prepared.version).rows[0][0]


def give(enclave, local_ids, purpose, given=LONG_AGO, expires=None, contributor="school_district"):
    return record_consent(enclave, "steward", DATASET, [ConsentChange(contributor, i, purpose, "give", given, expires)
                                                        for i in local_ids])


def test_revoking_one_childs_consent_changes_what_later_queries_count(onboarded, deliveries):
    ids = school_ids(deliveries)
    give(onboarded, ids, "research")
    with onboarded.audit.transaction() as tx:
        grant(tx, "steward", "alice", DATASET, 100.0, 1e-5, purpose="research")
    consented = true_count(onboarded, "research")
    everyone = onboarded.execute_unprotected(DATASET, onboarded.prepare(
        DATASET, COUNT).rewritten, onboarded.consent_snapshot(DATASET, onboarded.version(DATASET), "none")).rows[0][0]
    assert everyone == 0  # no consent for that purpose: nobody
    assert 0.9 * len(set(ids)) < consented <= len(ids)
    first = onboarded.query("alice", DATASET, COUNT, 2.0)

    revoked = record_consent(onboarded, "steward", DATASET, [ConsentChange("school_district", ids[0], "research",
                                                                           "revoke")])
    assert true_count(onboarded, "research") == consented - 1
    second = onboarded.query("alice", DATASET, COUNT, 2.0)
    assert not second.replayed
    assert second.data_version == revoked.label != first.data_version
    assert abs(second.rows[0][0].value - (consented - 1)) <= 12  # released through the same snapshot, noised

    records = onboarded.audit.records()
    revocation = [r for r in records if r["event"] == "consent.revoked"][-1]
    assert revocation["purpose"] == "research"
    assert revocation["decision"] == "allow"
    assert ids[0] not in json.dumps(records)  # the log holds a keyed pseudonym, never the local ID
    assert revocation["subject"] == onboarded.identity(DATASET).subject("school_district", ids[0])
    version = records[revocation["seq"]]  # the very next record: the data version it made
    assert (version["event"], version["reason"], version["data_version"]) == (
        "data.version", "consent revoked", revoked.label)
    charged = [r for r in records if r["event"] == "query.charged"]
    assert [c["data_version"] for c in charged[-2:]] == [first.data_version, second.data_version]
    snapshots = [c["consent"] for c in charged[-2:]]
    assert [s["persons"] for s in snapshots] == [consented, consented - 1]
    assert snapshots[1]["consent_seq"] == snapshots[0]["consent_seq"] + 1
    assert {s["purpose"] for s in snapshots} == {"research"}
    assert snapshots[1]["on"] == today().isoformat()


def test_consent_holds_only_for_its_purpose_and_its_dates(onboarded, deliveries):
    ids = school_ids(deliveries)[:40]
    base = true_count(onboarded, "evaluation")
    give(onboarded, ids[:10], "evaluation")
    give(onboarded, ids[10:20], "evaluation", expires=today() - dt.timedelta(days=1))  # expired
    give(onboarded, ids[20:30], "evaluation", given=today() + dt.timedelta(days=3))  # not yet given
    give(onboarded, ids[30:40], "other purpose")
    assert true_count(onboarded, "evaluation") == base + len(set(ids[:10]))
    give(onboarded, ids[10:20], "evaluation", expires=today())  # renewed, valid through today
    assert true_count(onboarded, "evaluation") == base + len(set(ids[:20]))


def test_the_latest_statement_about_a_person_decides_through_any_contributor(onboarded, deliveries):
    _, truth = deliveries
    person_of = {(c, i): p for c, i, p in truth}
    by_person: dict[int, dict[str, str]] = {}
    for (contributor, local_id), person in person_of.items():
        by_person.setdefault(person, {})[contributor] = local_id
    linked = [ids for ids in by_person.values() if {"school_district", "clinic"} <= set(ids)][:5]
    give(onboarded, [ids["school_district"] for ids in linked], "followup")
    before = true_count(onboarded, "followup")
    record_consent(onboarded, "steward", DATASET, [ConsentChange("clinic", ids["clinic"], "followup", "revoke")
                                                   for ids in linked])  # revoked at the other contributor
    assert true_count(onboarded, "followup") == before - 5
    give(onboarded, [linked[0]["clinic"]], "followup", contributor="clinic")  # and given again
    assert true_count(onboarded, "followup") == before - 4


def test_no_sql_can_remove_the_restriction(onboarded, deliveries):
    give(onboarded, school_ids(deliveries)[:30], "narrow")
    narrow = true_count(onboarded, "narrow")
    for sql in ("SELECT COUNT(DISTINCT person_id) AS n FROM children WHERE birth_year > 0 OR TRUE",
                "SELECT COUNT(DISTINCT c.person_id) AS n FROM children c LEFT JOIN clinic_visits v "
                "ON c.person_id = v.person_id",
                "SELECT COUNT(DISTINCT e.person_id) AS n FROM enrollments e "
                "JOIN children c ON e.person_id = c.person_id"):
        assert true_count(onboarded, "narrow", sql) <= narrow, sql
    for sql in ("SELECT COUNT(*) AS n FROM __consented", "SELECT COUNT(*) AS n FROM children AS __consented",
                "SELECT COUNT(*) AS n FROM temp.__consented"):
        assert not onboarded.check(DATASET, sql).accepted, sql
    with pytest.raises(ValueError, match="requires consent"):  # and the engine is never asked without one
        onboarded.execute_unprotected(DATASET, onboarded.prepare(DATASET, COUNT).rewritten)


def test_consent_for_nobody_on_the_roster_or_with_impossible_dates_is_refused_whole(onboarded, deliveries):
    ids = school_ids(deliveries)
    before = onboarded.version(DATASET)
    with pytest.raises(ConsentRefused) as refused:
        record_consent(onboarded, "steward", DATASET, [
            ConsentChange("school_district", ids[0], "research", "give", LONG_AGO),
            ConsentChange("school_district", "S0000000", "research", "give", LONG_AGO),
            ConsentChange("school_district", ids[1], "research", "give", dt.date(2025, 1, 1), dt.date(2024, 1, 1))])
    assert [(p.code, p.row) for p in refused.value.problems] == [("unknown_local_id", 2), ("out_of_range", 3)]
    assert onboarded.version(DATASET) == before


def test_a_contributors_consent_file_is_imported_whole_or_not_at_all(onboarded, deliveries):
    ids = school_ids(deliveries)[:25]
    rows = ["local_id,purpose,action,given,expires", *(f"{i},imported,give,2024-01-01," for i in ids[:20]),
            *(f"{i},imported,revoke,," for i in ids[20:])]
    before = true_count(onboarded, "imported")
    version = import_consents(onboarded, "steward", DATASET, "school_district",
                              DeliveryFile("consent", "consent.csv", "\n".join(rows).encode()))
    assert true_count(onboarded, "imported") == before + len(set(ids[:20]) - set(ids[20:]))
    event = [r for r in onboarded.audit.records() if r["event"] == "consent.imported"][-1]
    assert (event["statements"], event["revocations"]) == (25, 5)
    assert onboarded.version(DATASET) == version
    bad = [*rows[:3], "X1,imported,maybe,2024-01-01,"]
    with pytest.raises(DeliveryRefused) as refused:
        import_consents(onboarded, "steward", DATASET, "school_district",
                        DeliveryFile("consent", "consent.csv", "\n".join(bad).encode()))
    assert [(p.code, p.row, p.column) for p in refused.value.problems] == [("value_not_allowed", 4, "action")]
    assert onboarded.version(DATASET) == version


def test_a_snapshot_is_never_taken_from_another_build_than_the_query_runs_on(onboarded):
    before = onboarded.version(DATASET)
    assert onboarded.consent_snapshot(DATASET, before, "research") is not None
    rekey(onboarded, "steward", DATASET)  # a new build, committed while a query of `before` is in flight
    with pytest.raises(QueryError) as stale:
        onboarded.consent_snapshot(DATASET, before, "elsewhere")
    assert stale.value.code == "data_changed"
    assert onboarded.consent_snapshot(DATASET, onboarded.version(DATASET), "elsewhere") is not None
