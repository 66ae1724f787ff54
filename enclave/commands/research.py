"""`enclave check`, `query`, `templates` and `budget` in process, as the demo researcher on this machine's
enclave (`enclave.commands.remote` asks another enclave). The answers are the API's own shapes, parsed by
the client and printed as the remote commands print them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from enclave.access.keys import Principal
from enclave.api.routes.researcher import get_budget
from enclave.api.routes.templates import list_templates
from enclave.check.query import column_kind
from enclave.client import Budget, CheckReport, InvalidRequest, QueryRejected, Result, Template, Violation
from enclave.commands.output import emit, print_check, print_refusal, print_release, wants_json
from enclave.commands.tables import budget_table, parameters_of, templates_table
from enclave.disclosure.plan import PlanError
from enclave.disclosure.release import Release
from enclave.pipeline import DEMO_RESEARCHER, Enclave, QueryError, plan_summary
from enclave.templates import workflow

DEMO = Principal(DEMO_RESEARCHER, frozenset({"researcher"}), "cli")


def sql_of(args: argparse.Namespace) -> str:
    return sys.stdin.read() if args.sql == "-" else args.sql


def _rejected(error: QueryError | PlanError, sql: str) -> QueryRejected:
    violations = [Violation.from_json(v.to_dict()) for v in getattr(error, "violations", ())]
    return QueryRejected(error.code, error.message, violations=violations, sql=sql)


def check(enclave: Enclave, args: argparse.Namespace) -> int:
    sql = sql_of(args)
    try:
        prepared = enclave.prepare(args.dataset, sql)
    except QueryError:  # no data yet: the check alone, which needs none
        prepared = None
    result = prepared.result if prepared is not None else enclave.check(args.dataset, sql)
    payload: dict[str, object] = {"accepted": result.accepted, "violations": [v.to_dict() for v in result.violations]}
    if result.query is not None:
        payload["canonical_sql"] = result.query.canonical_sql
        payload["rules_sha256"] = result.query.rules_sha256
        payload["columns"] = [{"name": c.name, "kind": column_kind(c)} for c in result.query.columns]
    if prepared is not None and prepared.rewritten is not None:
        try:
            plan = enclave.plan(args.dataset, prepared.rewritten, args.epsilon, args.weights, args.accuracy)
            payload["plan"] = plan_summary(plan, prepared.rewritten.checked.columns, prepared.cost)
        except PlanError as error:
            print_refusal(_rejected(error, sql), args.json)
            return 1
    return print_check(CheckReport.from_json(payload, sql), args.json)


def released(run: Callable[[], Release], sql: str, fmt: str) -> int:
    """Print what `run()` released, or its refusal (both are in the audit log)."""
    try:
        release = run()
    except QueryError as error:
        print_refusal(_rejected(error, sql), fmt == "json")
        return 1
    print_release(Result.from_json(release.model_dump(mode="json")), fmt)
    return 0


def query(enclave: Enclave, args: argparse.Namespace) -> int:
    enclave.ensure_demo_grant()
    sql = sql_of(args)
    return released(lambda: enclave.query(DEMO_RESEARCHER, args.dataset, sql, args.epsilon, weights=args.weights,
                                          accuracy=args.accuracy), sql, args.format)


def templates(enclave: Enclave, args: argparse.Namespace) -> int:
    listed = [t.model_dump(mode="json") for t in list_templates(enclave, DEMO) if t.status == "approved"]
    approved = [Template.from_json(t) for t in listed]
    if args.templates_command in (None, "list"):
        emit(args, listed, templates_table(approved))
        return 0
    enclave.ensure_demo_grant()
    found = next((t for t in approved if t.id == args.template_id), None)
    try:
        values = parameters_of(found, args.param)
    except ValueError as error:
        print_refusal(InvalidRequest("invalid_parameters", str(error), status=422), wants_json(args))
        return 1
    return released(lambda: workflow.run(enclave, DEMO_RESEARCHER, args.template_id, values), "", args.format)


def budget(enclave: Enclave, args: argparse.Namespace) -> int:
    enclave.ensure_demo_grant()
    grants = [g.model_dump(mode="json") for g in get_budget(enclave, DEMO)]
    emit(args, grants, budget_table([Budget.from_json(g) for g in grants]))
    return 0
