"""The `enclave` command: check SQL, run the demo, regenerate the published JSON Schemas.

No command prints un-noised results: the demo executes queries in the sandbox to show the pipeline
working, and withholds every value until the protection stage releases it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from enclave.catalog.manifest import Manifest
from enclave.check import CheckResult
from enclave.execute.sandbox import ExecutionError
from enclave.pipeline import Enclave, UnknownDataset
from enclave.policy.rules import Rules
from enclave.settings import PROJECT_ROOT, Settings

SCHEMAS = {
    PROJECT_ROOT / "datasets" / "manifest.schema.json": Manifest,
    PROJECT_ROOT / "query_rules" / "rules.schema.json": Rules,
}

DEMO_QUERIES = (
    ("Chronic absence by school year",
     "SELECT school_year,\n       COUNT(DISTINCT person_id) AS children,\n"
     "       AVG(CASE WHEN days_absent >= 18 THEN 1 ELSE 0 END) AS chronic_rate\n"
     "FROM enrollments\nGROUP BY school_year\nORDER BY school_year"),
    ("Math proficiency by gender, joined across contributors",
     "SELECT c.gender, AVG(a.scale_score) AS mean_score, COUNT(*) AS tests\n"
     "FROM assessments a JOIN children c ON a.person_id = c.person_id\n"
     "WHERE a.subject = 'math'\nGROUP BY c.gender"),
    ("Trying to list identifiers", "SELECT person_id, days_absent FROM enrollments WHERE school = 'Oak Elementary'"),
    ("Trying to read a file and run a second statement",
     "SELECT count(*) FROM read_csv('/etc/passwd'); DROP TABLE children"),
)


def schema_text(model: type) -> str:
    return json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"


def _print_check(result: CheckResult, sql: str, as_json: bool) -> None:
    if as_json:
        payload: dict[str, object] = {"accepted": result.accepted,
                                      "violations": [v.to_dict() for v in result.violations]}
        if result.query is not None:
            payload["canonical_sql"] = result.query.canonical_sql
            payload["rules_sha256"] = result.query.rules_sha256
            payload["columns"] = [{"name": c.name, "kind": getattr(c, "function", "key")}
                                  for c in result.query.columns]
        print(json.dumps(payload, indent=2))
        return
    if result.accepted and result.query is not None:
        print(f"accepted (rules {result.query.rules_sha256[:12]})")
        print(f"  canonical: {result.query.canonical_sql}")
        return
    print(f"refused: {len(result.violations)} violation(s)")
    for violation in result.violations:
        print(violation.render(sql))


def _cmd_check(enclave: Enclave, args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    result = enclave.check(args.dataset, sql)
    _print_check(result, sql, args.json)
    return 0 if result.accepted else 1


def _cmd_demo(enclave: Enclave, args: argparse.Namespace) -> int:
    manifest = enclave.manifest("demo")
    print(f"enclave demo: {manifest.title}")
    started = time.perf_counter()
    version = enclave.data_version("demo")
    print(f"demo data version {version} ready in {time.perf_counter() - started:.1f}s "
          f"(tables: {', '.join(manifest.tables)})\n")
    for index, (title, sql) in enumerate(DEMO_QUERIES, 1):
        print(f"[{index}] {title}\n" + "\n".join(f"    {line}" for line in sql.splitlines()))
        prepared = enclave.prepare("demo", sql)
        _print_check(prepared.result, sql, as_json=False)
        if prepared.rewritten is not None:
            plan = prepared.rewritten.plan
            bounds = plan.bounds
            print(f"  rewritten: at most {bounds.max_rows} rows and {bounds.max_groups} groups per person; "
                  "computes " + ", ".join(f"{m.function}({m.output}{'' if m.part == 'value' else ':' + m.part})"
                                          for m in plan.measures))
            started = time.perf_counter()
            try:
                enclave.execute_unprotected("demo", prepared.rewritten)
                print(f"  executed in the sandbox in {1000 * (time.perf_counter() - started):.0f} ms; "
                      "values withheld until noise and suppression protect them")
            except ExecutionError as error:
                print(f"  execution refused: {error.code}")
        print()
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    for path, model in SCHEMAS.items():
        path.write_text(schema_text(model))
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="enclave", description="A secure statistical query enclave.")
    commands = top.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check SQL against the rules and a dataset; spends nothing")
    check.add_argument("--dataset", default="demo")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("sql", help="the SQL text, or - to read it from standard input")
    commands.add_parser("demo", help="run the enclave's pipeline on the embedded demo dataset")
    commands.add_parser("schema", help="regenerate the JSON Schemas of manifests and rules")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "schema":
        return _cmd_schema(args)
    enclave = Enclave(Settings())
    try:
        if args.command == "check":
            return _cmd_check(enclave, args)
        return _cmd_demo(enclave, args)
    except UnknownDataset as error:
        print(f"unknown dataset {error.args[0]!r}; datasets: {', '.join(enclave.manifests)}", file=sys.stderr)
        return 2
    finally:
        enclave.close()


if __name__ == "__main__":
    sys.exit(main())
