"""The researcher's client against the real service (uvicorn, real HTTP, the real pipeline on the demo).

Every method of `Enclave`, the release's frames (suppressed cells are pd.NA), its protection table, its
renderings, the errors it raises (a rejection's carets at the token) and its configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from enclave.check.violations import Violation as ServerViolation
from enclave.client import (
    BudgetExhausted,
    CheckReport,
    Conflict,
    Enclave,
    EnclaveError,
    Forbidden,
    InvalidRequest,
    NotFound,
    Output,
    QueryRejected,
    QueryTimeout,
    RateLimited,
    Result,
    Template,
    Unauthenticated,
    Unavailable,
)
from enclave.client.errors import error_from
from enclave.settings import PROJECT_ROOT
from tests.api.conftest import Service
from tests.api.test_template_flow import TEMPLATE

SQL = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school ORDER BY school"
# 16 birth years (and NULL) x 3 genders (and NULL): the X and NULL groups are small, the NULL years empty
FINE = "SELECT birth_year, gender, COUNT(*) AS n FROM children GROUP BY birth_year, gender"
REFUSED = "SELECT gender, COUNT(*) AS n\nFROM children\nWHERE birth_year > 2010 AND person_id = 'x'\nGROUP BY gender"
SERVER_SIDE = ("duckdb", "sqlglot", "sqlglotc", "fastapi", "starlette", "opendp", "splink", "uvicorn", "pydantic",
               "enclave.pipeline", "enclave.api", "enclave.check", "enclave.disclosure", "enclave.audit")


def test_importing_the_client_loads_nothing_of_the_server_side() -> None:
    """In a fresh interpreter: `import enclave.client` loads httpx and the client's own modules, nothing
    else of enclave but the standard-library caret rendering, none of the server's libraries, and neither
    pandas nor tqdm until they are used."""
    watched = ("enclave", "pandas", "tqdm", "numpy", *(n.split(".")[0] for n in SERVER_SIDE))
    probe = ("import json, sys, enclave.client; "
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {watched!r})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT,
                          env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"})
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if not m.startswith("enclave.client")] == ["enclave", "enclave.caret"], loaded
    assert {"enclave.client.session", "enclave.client.errors", "enclave.client.models"} <= set(loaded)


def test_url_and_token_come_from_the_environment(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_URL", service.base_url + "/")
    monkeypatch.setenv("ENCLAVE_TOKEN", service.keys["alice"])
    with Enclave() as enclave:
        assert [d.name for d in enclave.datasets()] == ["demo"]
        assert repr(enclave) == f"Enclave({service.base_url!r})"  # never the key
    monkeypatch.delenv("ENCLAVE_TOKEN")
    with pytest.raises(EnclaveError, match="ENCLAVE_TOKEN") as missing:
        Enclave()
    assert missing.value.code == "no_token"
    monkeypatch.delenv("ENCLAVE_URL")
    with pytest.raises(EnclaveError, match="ENCLAVE_URL"):
        Enclave(token="enc_x")


def test_datasets_dataset_rules_and_budget(alice: Enclave) -> None:
    (summary,) = alice.datasets()
    assert summary.name == "demo"
    demo = alice.dataset("demo")
    assert alice.dataset() == demo  # the default dataset is the demo's
    assert (demo.privacy_unit, demo.suppression_threshold, demo.max_rows_per_unit) == ("person_id", 11, 12)
    children = demo.tables["children"]
    assert children.columns["gender"].keys == ("F", "M", "X")
    assert children.columns["person_id"].role == "privacy_unit"
    assert demo.tables["enrollments"].columns["days_absent"].bounds == (0, 180)
    rules = alice.rules()
    assert len(rules.sha256) == 64
    assert "execution" in rules.rules
    (grant,) = alice.budget()
    assert (grant.dataset, grant.epsilon_cap, grant.active) == ("demo", 5.0, True)
    assert alice.budget("other") == []


def test_check_shows_cost_deadline_and_accuracy_and_spends_nothing(alice: Enclave) -> None:
    before = alice.budget()[0].epsilon_remaining
    report = alice.check(SQL, epsilon=0.5)
    assert isinstance(report, CheckReport)
    assert report.accepted
    assert report.violations == ()
    plan = report.plan
    assert plan is not None
    assert (plan.epsilon, plan.group_selection, plan.suppression_threshold) == (0.5, "public keys", 11)
    assert (plan.deadline_seconds or 0) > 0
    assert (plan.worst_case_rows or 0) > 0
    n = next(q for q in plan.quantities if q.column == "n")
    assert (n.mechanism, n.accuracy > 0, n.scale > 0) == ("discrete_laplace", True, True)
    mean = "± about (14,236 + 159 · |mean - 90|) / n (n the group's count)"
    assert plan.outputs == (Output("n", "count", "± 158.67"), Output("absent", "avg", mean))
    text = str(report)
    assert text.startswith(f"accepted (rules {report.rules_sha256[:12]})")  # type: ignore[index]
    assert f"  intervals at 95%:\n    n (count): ± 158.67\n    absent (avg): {mean}\n" in text
    assert "  deadline: answered" in text
    assert alice.budget()[0].epsilon_remaining == before
    refused = alice.check(REFUSED)
    assert not refused.accepted
    assert [(v.code, v.line, v.col) for v in refused.violations] == [("restricted_column", 3, 29)]
    assert str(refused).splitlines()[2:4] == ["    WHERE birth_year > 2010 AND person_id = 'x'",
                                              "                                ^^^^^^^^^"]


def test_a_rejection_points_at_the_token_with_the_rule_and_the_remedy(alice: Enclave) -> None:
    with pytest.raises(QueryRejected) as refused:
        alice.query(REFUSED, epsilon=0.1)
    error = refused.value
    assert (error.code, error.status) == ("check_failed", 400)
    (violation,) = error.violations
    lines = str(error).splitlines()
    assert lines[0] == f"check_failed: {error.message}"
    assert lines[1].startswith("restricted_column: line 3, col 29: person_id is the privacy unit")
    assert lines[2] == "    WHERE birth_year > 2010 AND person_id = 'x'"
    assert lines[3] == "                                ^^^^^^^^^"  # 4 of indent + 28: under `person_id`
    assert lines[4].startswith("    remedy: allowed columns: children.birth_year")
    # the same text the enclave's own `enclave check` renders from its violation
    server = ServerViolation(violation.code, violation.message, violation.line, violation.col, violation.highlight,
                             violation.remedy)
    assert violation.render(REFUSED) == server.render(REFUSED)


@pytest.mark.parametrize("sql", ["$1 \r\n SELECT", "SELECT count(*) FROM children\rWHERE person_id = 'x'",
                                 "SELECT school, COUNT(*) FROM enrollments GROUP BY school; DROP TABLE x",
                                 "SELECT COUNT(*) AS n FROM read_csv('/etc/passwd')"])
def test_violations_render_as_the_enclave_renders_them(alice: Enclave, sql: str) -> None:
    (violation, *_) = alice.check(sql).violations
    server = ServerViolation(violation.code, violation.message, violation.line, violation.col, violation.highlight,
                             violation.remedy)
    assert violation.render(sql) == server.render(sql)
    assert "^" in violation.render(sql)


def test_a_release_is_a_frame_with_intervals_and_protection(alice: Enclave) -> None:
    result = alice.query(SQL, epsilon=0.4)
    assert isinstance(result, Result)
    assert (result.epsilon, result.replayed, result.confidence) == (0.4, False, 0.95)
    assert isinstance(result.audit_seq, int)
    assert result.epsilon_remaining == alice.budget()[0].epsilon_remaining
    df = result.df
    assert list(df.columns) == ["school", "n", "absent"]
    assert dict(df.dtypes.astype(str)) == {"school": "string", "n": "Int64", "absent": "Float64"}
    schools = df["school"].dropna().tolist()
    assert schools == sorted(schools)  # ORDER BY school; the NULL school (pd.NA) comes last
    assert df["school"].isna().tolist() == [False] * len(schools) + [True] * (len(df) - len(schools))
    intervals = result.intervals
    assert list(intervals.columns) == ["school", "n_lower", "n_upper", "absent_lower", "absent_upper"]
    present = df["n"].notna()
    assert ((intervals["n_lower"][present] <= df["n"][present]) & (df["n"][present] <= intervals["n_upper"][present])
            ).all()
    protection = result.protection
    assert list(protection.columns) == ["school", "column", "mechanism", "scale", "lower", "upper", "suppressed",
                                        "reason"]
    assert len(protection) == 2 * len(df)
    assert list(protection["column"][:2]) == ["n", "absent"]
    assert set(protection["mechanism"].dropna()) <= {"discrete_laplace", "laplace_ratio"}
    plan = alice.check(SQL, epsilon=0.4).plan
    assert plan is not None
    scales = {q.column: q.scale for q in plan.quantities}
    released = protection[~protection["suppressed"]]
    estimated = released["scale"].notna()  # a mean whose noisy count is not positive has no estimate, says why
    assert all(reason.startswith("no estimate") for reason in released[~estimated]["reason"])
    released = released[estimated]
    assert set(released[released["column"] == "n"]["scale"]) == {scales["n"]}  # in the column's own units
    assert set(released[released["column"] == "absent"]["scale"]) == {scales["absent__sum"]}

    again = alice.query(SQL, epsilon=0.4)  # the same request: the same release, nothing spent
    assert (again.replayed, again.query_id) == (True, result.query_id)
    pd.testing.assert_frame_equal(again.df, df)
    assert again.epsilon_remaining == result.epsilon_remaining


def test_suppressed_cells_are_na_never_zero_or_nan(alice: Enclave) -> None:
    result = alice.query(FINE, epsilon=1)
    df, protection = result.df, result.protection
    suppressed = protection["suppressed"].to_numpy(dtype=bool)
    assert suppressed.any(), "some of the small groups are suppressed"
    assert df["n"].dtype == "Int64"
    assert df["n"][suppressed].isna().all()
    assert df["n"][~suppressed].notna().all()
    assert not df["n"].astype("Float64").isna().ne(pd.Series(suppressed)).any()
    assert (protection["reason"][suppressed] == "fewer than 11 persons (noisy count)").all()
    assert protection["lower"][suppressed].isna().all()
    assert result.intervals["n_lower"][suppressed].isna().all()
    assert all(value is pd.NA for value in df["n"][suppressed])  # pd.NA itself: not 0, not float NaN
    assert df["gender"].isna().any()  # the NULL key is a group of its own, pd.NA as a key too


def test_the_renderings_say_how_the_release_was_protected(alice: Enclave) -> None:
    result = alice.query(FINE, epsilon=0.9)
    html = result._repr_html_()
    assert html.startswith('<table class="enclave-release"><thead><tr><th>birth_year</th><th>gender</th><th>n</th>')
    footer = html[html.index('<p class="enclave-protection">'):]
    assert "mechanisms discrete_laplace" in footer
    assert f"ε=0.9 δ=0 spent; left ε={result.epsilon_remaining:g}" in footer
    assert f"audit record {result.audit_seq}; query {result.query_id}" in footer
    assert "noisy count of persons is below 11 are suppressed" in footer
    assert "95% confidence" in footer
    assert '<td title="fewer than 11 persons (noisy count)"><em>suppressed</em></td>' in html
    text = repr(result).splitlines()
    assert text[0].split() == ["birth_year", "gender", "n"]
    assert text[-1] == "intervals at 95%; '*' marks cells suppressed below 11 persons"
    assert any(line.split()[-1] == "*" for line in text[1:-3])


def test_queries_and_query_result(alice: Enclave) -> None:
    result = alice.query(SQL, epsilon=0.3)
    listed = {q.query_id: q for q in alice.queries()}
    assert (listed[result.query_id].status, listed[result.query_id].epsilon) == ("released", 0.3)
    fetched = alice.query_result(result.query_id)
    assert isinstance(fetched, Result)
    assert fetched.rows == result.rows
    with pytest.raises(NotFound):
        alice.query_result("0" * 32)


def test_templates_and_run_template(service: Service, alice: Enclave) -> None:
    proposed = service.client("alice").post("/v1/templates", json=TEMPLATE).json()
    with pytest.raises(Conflict) as unapproved:
        alice.run_template(proposed["id"], grade=3)
    assert unapproved.value.code == "template_not_approved"
    service.client("reviewer").post(f"/v1/templates/{proposed['id']}/approve", json={"reason": "bounded, public keys"})
    (template,) = [t for t in alice.templates() if t.id == proposed["id"]]
    assert isinstance(template, Template)
    assert (template.status, template.epsilon, template.run_limit) == ("approved", 0.25, 3)
    assert [(p.name, p.type, p.min, p.max) for p in template.parameters] == [("grade", "integer", 0, 12)]
    assert alice.template(template.id) == template
    result = alice.run_template(template.id, grade=3)
    assert (result.epsilon, list(result.df.columns)) == (0.25, ["school", "n"])
    with pytest.raises(InvalidRequest) as invalid:
        alice.run_template(template.id, grade=13)
    assert invalid.value.code == "invalid_parameters"


def test_errors_carry_the_api_code(service: Service, alice: Enclave) -> None:
    with Enclave(service.base_url, "enc_nope_nope") as stranger, pytest.raises(Unauthenticated) as unknown:
        stranger.datasets()
    assert (unknown.value.code, unknown.value.status) == ("unauthenticated", 401)
    with Enclave(service.base_url, service.keys["reviewer"]) as reviewer, pytest.raises(Forbidden) as role:
        reviewer.budget()
    assert role.value.code == "forbidden"
    service.issue("carol", {"researcher"})
    with Enclave(service.base_url, service.issue("carol")) as carol, pytest.raises(Forbidden) as ungranted:
        carol.query(SQL, epsilon=0.1)
    assert ungranted.value.code == "no_grant"
    with pytest.raises(NotFound) as missing:
        alice.dataset("nope")
    assert missing.value.code == "not_found"
    with pytest.raises(QueryRejected) as too_much:
        alice.check(SQL, epsilon=3)
    assert too_much.value.code == "epsilon_out_of_range"
    with Enclave(service.base_url, service.keys["bob"]) as bob:
        for sql in (SQL, FINE):  # bob spends 4 of his 5 (two requests: a repeat would spend nothing)
            bob.query(sql, epsilon=2)
        with pytest.raises(BudgetExhausted) as exhausted:
            bob.query(SQL, epsilon=1.5)
    assert exhausted.value.code == "budget_exceeded"
    assert isinstance(exhausted.value, QueryRejected)
    with Enclave("http://127.0.0.1:9", "enc_x") as nowhere, pytest.raises(Unavailable, match="Cannot reach"):
        nowhere.datasets()


def test_a_rate_limited_answer_says_when_to_retry() -> None:
    """429 as the enclave answers it (its envelope and Retry-After)."""
    error = error_from(429, {"ok": False, "error": {"code": "rate_limited", "message": "slow down",
                                                    "violations": []}}, retry_after="1")
    assert isinstance(error, RateLimited)
    assert (error.code, error.retry_after, str(error)) == ("rate_limited", 1.0, "rate_limited: slow down")
    assert error_from(502, "<html>").code == "internal_error"


def test_a_synchronous_query_honours_the_timeout(alice: Enclave) -> None:
    """The answer comes at the query's deadline (at least 0.2 s): a shorter timeout raises QueryTimeout,
    a TimeoutError, whose text says the charge may be spent."""
    with pytest.raises(QueryTimeout) as late:
        alice.query("SELECT grade, COUNT(*) AS n FROM enrollments GROUP BY grade", epsilon=0.1, timeout=0.05)
    assert isinstance(late.value, TimeoutError)
    assert "charge stays spent" in str(late.value)


def test_async_falls_back_to_sync_without_a_queue(alice: Enclave) -> None:
    """This service has no Redis: mode="async" is answered 409 async_unavailable, and the client asks again
    in sync mode."""
    result = alice.query("SELECT subject, COUNT(*) AS n FROM assessments GROUP BY subject", epsilon=0.1,
                         mode="async")
    assert isinstance(result, Result)
    assert [c.name for c in result.columns] == ["subject", "n"]
