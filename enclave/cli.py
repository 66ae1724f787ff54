"""The `enclave` command: check and query SQL, onboard data, verify and export the audit log, run the demo.

No command prints an un-noised value: `query` and `demo` print protected releases only, each recorded in
the audit log before it is shown. Queries run as the demo researcher on the embedded store until the
service (with real identities) arrives.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.access.keys import ROLES, ensure_principal, issue_key, revoke_key
from enclave.audit.backup import backup, restore
from enclave.audit.migrations import SCHEMA_VERSION
from enclave.audit.signing import load_public_key
from enclave.audit.state import differences
from enclave.audit.store import AuditStore, StoreError
from enclave.audit.verify import verify_lines, verify_proof
from enclave.budget.ledger import grant, revoke_grant
from enclave.catalog.demo import ensure_demo
from enclave.catalog.manifest import Manifest
from enclave.check import CheckResult, Violation
from enclave.disclosure.cache import ReleaseCache
from enclave.disclosure.plan import PlanError, PrivacyPlan
from enclave.disclosure.release import Cell, Release
from enclave.execute.cost import Cost
from enclave.intake.delivery import DeliveryFile, DeliveryRefused
from enclave.intake.quality import render_html, report
from enclave.onboarding import ConsentChange, ConsentRefused, import_consents, ingest, record_consent, rekey, relink
from enclave.pipeline import DEMO_RESEARCHER, Enclave, QueryError, UnknownDataset, plan_summary
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


def _print_check(result: CheckResult, sql: str, plan: PrivacyPlan | None, as_json: bool,
                 cost: Cost | None = None) -> None:
    if as_json:
        payload: dict[str, object] = {"accepted": result.accepted,
                                      "violations": [v.to_dict() for v in result.violations]}
        if result.query is not None:
            payload["canonical_sql"] = result.query.canonical_sql
            payload["rules_sha256"] = result.query.rules_sha256
            payload["columns"] = [{"name": c.name, "kind": getattr(c, "function", "key")}
                                  for c in result.query.columns]
        if plan is not None:
            payload["plan"] = plan_summary(plan, cost)
        print(json.dumps(payload, indent=2))
        return
    if result.accepted and result.query is not None:
        print(f"accepted (rules {result.query.rules_sha256[:12]})")
        print(f"  canonical: {result.query.canonical_sql}")
        if plan is not None:
            _print_plan(plan)
        if cost is not None:
            print(f"  deadline: answered {cost.deadline_seconds:g} s after it starts (worst case "
                  f"{cost.worst_case_rows:,} joined rows), whatever the data")
        return
    print(f"refused: {len(result.violations)} violation(s)")
    for violation in result.violations:
        print(violation.render(sql))


def _print_plan(plan: PrivacyPlan) -> None:
    summary = plan_summary(plan)
    print(f"  cost: ε={plan.epsilon:g}, δ={plan.delta:.2g}; groups by {summary['group_selection']}; "
          f"cells with fewer than {plan.suppression_threshold} persons are suppressed")
    for q in plan.quantities:
        print(f"    {q.column}: {q.mechanism}, sensitivity {q.sensitivity:g}, scale {q.scale:.4g}, ε {q.epsilon:.4g}, "
              f"±{q.accuracy:.4g} at {100 * (1 - plan.alpha):g}%")


def _print_refusal(code: str, message: str, violations: Sequence[Violation], sql: str, as_json: bool) -> None:
    """A refusal on stdout: the API's error envelope with `--json`, else one line and each violation."""
    if as_json:
        print(json.dumps({"ok": False, "error": {"code": code, "message": message,
                                                 "violations": [v.to_dict() for v in violations]}}))
        return
    print(f"refused: {code}: {message}")
    for violation in violations:
        print(violation.render(sql))


def _cmd_check(enclave: Enclave, args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    try:
        prepared = enclave.prepare(args.dataset, sql)
    except QueryError:  # no data yet: the check alone, which needs none
        prepared = None
    result = prepared.result if prepared is not None else enclave.check(args.dataset, sql)
    plan = None
    if prepared is not None and prepared.rewritten is not None:
        try:
            plan = enclave.plan(args.dataset, prepared.rewritten, args.epsilon)
        except PlanError as error:
            _print_refusal(error.code, error.message, (), sql, args.json)
            return 1
    _print_check(result, sql, plan, args.json, prepared.cost if prepared is not None else None)
    return 0 if result.accepted else 1


def _print_release(release: Release) -> None:
    names = [c.name for c in release.columns]
    keys = [c.kind == "key" for c in release.columns]
    table = [["NULL" if key and cell.value is None else _shown(cell) for key, cell in zip(keys, row, strict=True)]
             for row in release.rows]  # a NULL key is a group of its own (null in JSON, empty in CSV)
    widths = [max(len(n), *(len(r[i]) for r in table)) if table else len(n) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    note = " (replayed: the answer already released, nothing spent)" if release.replayed else ""
    print(f"\nε={release.epsilon:g} δ={release.delta:.2g} spent{note}; left ε={release.epsilon_remaining:g} "
          f"δ={release.delta_remaining:.2g}; audit record {release.audit_seq}; query {release.query_id}")
    print(f"intervals at {100 * (1 - release.alpha):g}%; '*' marks cells suppressed below "
          f"{release.suppression_threshold} persons")


def _shown(cell: Cell) -> str:
    if cell.suppressed:
        return "*"
    if cell.interval is None:
        return "" if cell.value is None else str(cell.value)
    return f"{cell.value} [{cell.interval[0]:g}, {cell.interval[1]:g}]"


def _run_query(enclave: Enclave, dataset: str, sql: str, epsilon: float | None, fmt: str) -> int:
    """Submit as the demo researcher and print the release or the refusal (both are in the log)."""
    try:
        release = enclave.query(DEMO_RESEARCHER, dataset, sql, epsilon)
    except QueryError as error:
        _print_refusal(error.code, error.message, error.violations, sql, fmt == "json")
        return 1
    if fmt == "json":
        print(release.model_dump_json(indent=2))
    elif fmt == "csv":
        print(release.to_csv(), end="")
    else:
        _print_release(release)
    return 0


def _cmd_query(enclave: Enclave, args: argparse.Namespace) -> int:
    enclave.ensure_demo_grant()
    return _run_query(enclave, args.dataset, sys.stdin.read() if args.sql == "-" else args.sql, args.epsilon,
                      args.format)


def _cmd_audit(store: AuditStore | None, args: argparse.Namespace) -> int:
    """Export, checkpoint, prove or verify; works on the store alone, so also on one the enclave refuses to
    run on (and `verify FILE`, `verify-proof` need no store at all)."""
    if args.audit_command == "export":
        out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115 - stdout is not ours to close
        try:
            written = store.export(out, args.start, args.end)  # type: ignore[union-attr]
        finally:
            if args.out:
                out.close()
        print(f"exported {written} records", file=sys.stderr)
        return 0
    if args.audit_command == "checkpoint":
        signed = store.checkpoint_head()  # type: ignore[union-attr]
        if signed is None:
            print("the log is empty: nothing to checkpoint", file=sys.stderr)
            return 1
        Path(args.out).write_text(json.dumps(signed, sort_keys=True) + "\n")
        body = signed["checkpoint"]
        print(f"checkpoint at {body['size']} (root {body['root'][:16]}...) written to {args.out}",  # type: ignore[index]
              file=sys.stderr)
        return 0
    if args.audit_command == "prove":
        return _cmd_prove(store, args)  # type: ignore[arg-type]
    public = _public_key(args)
    if args.audit_command == "verify-proof":
        proof = _read_json(args.path)
        report = verify_proof(proof, public) if proof is not None else None
        print(report.summary() if report else f"FAILED: the proof {args.path} cannot be read as JSON")
        return 0 if report and report.ok else 1
    trusted = None
    if args.trusted:
        trusted = _read_json(args.trusted)
        if trusted is None:
            print(f"FAILED: the trusted checkpoint {args.trusted} cannot be read as JSON")
            return 1
    if args.path:
        with open(args.path) as lines:
            report = verify_lines(lines, public, trusted)
        print(report.summary())
        return 0 if report.ok else 1
    report = verify_lines(store.export_lines(), public, trusted)  # type: ignore[union-attr]
    print(report.summary())
    found = differences(store)  # type: ignore[arg-type]
    if found:
        print(f"state: {len(found)} difference{'s' if len(found) != 1 else ''} between the live tables and the log")
        for difference in found:
            print(f"  {difference.line()}")
    else:
        print("state: ok, every governed table is the projection of the log")
    return 0 if report.ok and not found else 1


def _public_key(args: argparse.Namespace) -> Ed25519PublicKey:
    return load_public_key(Path(args.public_key) if args.public_key else Settings().audit_path / "public-key.pem")


def _read_json(path: str) -> object | None:
    """The JSON in a file the auditor names, or None if it cannot be read as JSON (said by the caller)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _cmd_prove(store: AuditStore, args: argparse.Namespace) -> int:
    """Write record SEQ's inclusion proof: what `verify-proof` (or anyone with RFC 9162 and the key) checks."""
    proof = store.prove(args.seq)
    if proof is None:
        print(f"no audit record {args.seq} in the log", file=sys.stderr)
        return 1
    text = json.dumps(proof, sort_keys=True, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    print(f"record {args.seq}: leaf {proof['leaf_index']} of the {proof['tree_size']} records the checkpoint "
          f"at {proof['tree_size']} signed, {len(proof['path'])} hashes of audit path"  # type: ignore[arg-type]
          + (f", written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _cmd_migrate(store: AuditStore, args: argparse.Namespace) -> int:
    """Opening the store migrated it (as the owning role, where one is configured)."""
    print(f"the state store at {store.backend} is at schema version {SCHEMA_VERSION}", file=sys.stderr)
    return 0


def _cmd_backup(store: AuditStore, args: argparse.Namespace) -> int:
    with open(args.out, "w") as out:
        written = backup(store, out)
    print(f"backed up {written['events']} records and {sum(written.values()) - written['events']} rows of state "
          f"to {args.out}", file=sys.stderr)
    return 0


def _cmd_restore(store: AuditStore, args: argparse.Namespace) -> int:
    """Restore, then check what was restored as `enclave audit verify` does: the log against its signed
    checkpoints, the governed tables against the log."""
    with open(args.path) as lines:
        restored = restore(store, lines)
    settings = Settings()
    forgotten = ReleaseCache.connect(settings.redis_url, Enclave.namespace_of(store)).clear()
    if forgotten:
        print(f"forgot {forgotten} cached answers in Redis (the store is the record)", file=sys.stderr)
    public = load_public_key(settings.audit_path / "public-key.pem")
    report = verify_lines(store.export_lines(), public)
    found = differences(store)
    print(f"restored {restored['events']} records; {report.summary()}; "
          f"state: {'ok' if not found else f'{len(found)} differences'}", file=sys.stderr)
    return 0 if report.ok and not found else 1


def _cmd_demo(enclave: Enclave, args: argparse.Namespace) -> int:
    manifest = enclave.manifest("demo")
    print(f"enclave demo: {manifest.title}")
    started = time.perf_counter()
    version = enclave.data_version("demo")
    demo = ensure_demo(manifest, enclave.settings.data_dir, children=enclave.settings.demo_children)
    linkage = demo.summary["linkage"]
    print(f"demo data version {version} ready in {time.perf_counter() - started:.1f}s "
          f"(tables: {', '.join(manifest.tables)})")
    print(f"  onboarded: {len(demo.summary['deliveries'])} contributors' rosters and records "
          f"({linkage['records']:,} roster rows with typos, nicknames, swapped dates, duplicates) linked by Splink "
          f"into {linkage['persons']:,} children; against the generator's truth: precision {linkage['precision']}, "
          f"recall {linkage['recall']}\n  raw files: {demo.directory / 'deliveries'}\n")
    enclave.ensure_demo_grant()
    for index, (title, sql) in enumerate(DEMO_QUERIES, 1):
        print(f"[{index}] {title}\n" + "\n".join(f"    {line}" for line in sql.splitlines()))
        _run_query(enclave, "demo", sql, None, "table")
        print()
    report = verify_lines(enclave.audit.export_lines(), load_public_key(enclave.public_key_path))
    print(f"audit log: {report.summary()}  (verify offline: enclave audit export --out log.jsonl; "
          "enclave audit verify log.jsonl)")
    keys = demo_keys(enclave)
    print("\ndemo API keys (shown once; only their hashes are kept):")
    for role, key in keys.items():
        print(f"  {role:<10} {key}")
    base = f"http://127.0.0.1:{args.port}"
    body = json.dumps({"dataset": "demo", "sql": " ".join(DEMO_QUERIES[0][1].split())})
    auth = f"-H 'Authorization: Bearer {keys['researcher']}'"
    print(f"\ntry:  curl -s {auth} {base}/v1/budget\n"
          f"      curl -s {auth} -H 'Content-Type: application/json' -d '{body}' {base}/v1/queries\n"
          f"OpenAPI docs: {base}/docs")
    if args.no_serve:
        return 0
    enclave.close()
    import uvicorn

    from enclave.api import create_app

    print(f"\nserving on {base} (Ctrl-C to stop)")
    uvicorn.run(create_app(enclave.settings), host="127.0.0.1", port=args.port, log_level="warning",
                log_config=None, access_log=False)  # request lines come from enclave.ops.logs
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    for path, model in SCHEMAS.items():
        path.write_text(schema_text(model))
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _cmd_serve(enclave: Enclave | None, args: argparse.Namespace) -> int:
    from enclave.ops import workers

    return workers.serve(args.host, args.port, args.workers)


def _cmd_keys(enclave: Enclave, args: argparse.Namespace) -> int:
    with enclave.audit.transaction() as tx:
        if args.keys_command == "revoke":
            if not revoke_key(tx, "cli", args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
            return 0
        ensure_principal(tx, "cli", args.name, set(args.role))
        key = issue_key(tx, enclave.settings.pepper, "cli", args.name)
    print(key)  # shown once: only its hash is kept
    return 0


def _cmd_grants(enclave: Enclave, args: argparse.Namespace) -> int:
    with enclave.audit.transaction() as tx:
        if args.grants_command == "revoke":
            if not revoke_grant(tx, "cli", args.researcher, args.dataset, args.reason):
                print("no such grant", file=sys.stderr)
                return 1
            print(f"revoked {args.researcher} on {args.dataset}")
            return 0
        enclave.manifest(args.dataset)
        grant(tx, "cli", args.researcher, args.dataset, args.epsilon, args.delta, purpose=args.purpose,
              starts=args.starts, expires=args.expires, adhoc=not args.templates_only)
    print(f"granted {args.researcher} on {args.dataset}: ε={args.epsilon:g}, δ={args.delta:g}")
    return 0


def _files(specs: list[str], sums: list[str]) -> list[DeliveryFile]:
    """KIND=PATH arguments (and KIND=SHA256 checksums) as delivery files."""
    declared = dict(item.split("=", 1) for item in sums)
    files = []
    for spec in specs:
        kind, _, path = spec.partition("=")
        files.append(DeliveryFile(kind, Path(path).name, Path(path).read_bytes(), sha256=declared.get(kind)))
    return files


def _print_problems(error: DeliveryRefused | ConsentRefused) -> int:
    problems = error.problems
    total = getattr(error, "total", len(problems))
    print(f"refused: {total} problem(s); nothing was changed", file=sys.stderr)
    for p in problems:
        print(f"  {p.code}: {p.file}: {p.message}", file=sys.stderr)
    return 1


def _cmd_ingest(enclave: Enclave, args: argparse.Namespace) -> int:
    try:
        done = ingest(enclave, "cli", args.dataset, args.contributor, _files(args.file, args.sha256), args.threshold)
    except DeliveryRefused as error:
        return _print_problems(error)
    for file in done.receipt.files if done.receipt else ():
        print(f"loaded {file.kind}: {file.name} ({file.rows} rows, sha256 {file.sha256[:16]}...)")
    if done.linked:
        print(f"linked {done.linked.records} roster rows into {done.linked.persons} persons at threshold "
              f"{done.linked.threshold} ({done.linked.kept} person keys kept) in {done.linked.seconds:.1f}s")
    print(f"data version {done.version.label}")
    return 0


def _cmd_link(enclave: Enclave, args: argparse.Namespace) -> int:
    if args.link_command == "rekey":
        print(f"person key rotated: data version {rekey(enclave, 'cli', args.dataset).version.label}")
        return 0
    done = relink(enclave, "cli", args.dataset, args.threshold)
    print(f"linked into {done.linked.persons if done.linked else '?'} persons: data version {done.version.label}")
    return 0


def _cmd_quality(enclave: Enclave, args: argparse.Namespace) -> int:
    found = report(enclave.identity(args.dataset), clerical=not args.no_clerical)
    if args.html:
        Path(args.html).write_text(render_html(found))
        print(f"wrote {args.html}", file=sys.stderr)
    print(json.dumps(found, indent=2, default=str))
    return 0


def _cmd_consent(enclave: Enclave, args: argparse.Namespace) -> int:
    try:
        if args.consent_command == "import":
            path = Path(args.path)
            version = import_consents(enclave, "cli", args.dataset, args.contributor,
                                      DeliveryFile("consent", path.name, path.read_bytes()))
        else:
            change = ConsentChange(args.contributor, args.local_id, args.purpose,
                                   "give" if args.consent_command == "give" else "revoke",
                                   getattr(args, "given", None), getattr(args, "expires", None))
            version = record_consent(enclave, "cli", args.dataset, [change], source="cli")
    except (DeliveryRefused, ConsentRefused) as error:
        return _print_problems(error)
    print(f"recorded: data version {version.label}")
    return 0


def demo_keys(enclave: Enclave) -> dict[str, str]:
    """One principal and key per role for the demo (the researcher gets the demo grant)."""
    keys = {}
    with enclave.audit.transaction() as tx:
        for role in ROLES:
            name = DEMO_RESEARCHER if role == "researcher" else f"demo-{role}"
            ensure_principal(tx, "demo-setup", name, {role})
            keys[role] = issue_key(tx, enclave.settings.pepper, "demo-setup", name)
    return keys


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="enclave", description="A secure statistical query enclave.")
    commands = top.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check SQL and show its cost and accuracy; spends nothing")
    check.add_argument("--dataset", default="demo")
    check.add_argument("--epsilon", type=float, help="the ε the query would spend (default: the rules')")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("sql", help="the SQL text, or - to read it from standard input")
    query = commands.add_parser("query", help="run a query as the demo researcher; prints the protected release")
    query.add_argument("--dataset", default="demo")
    query.add_argument("--epsilon", type=float, help="the ε to spend (default: the rules')")
    query.add_argument("--format", choices=("table", "json", "csv"), default="table")
    query.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
    query.add_argument("sql", help="the SQL text, or - to read it from standard input")
    audit = commands.add_parser("audit", help="export or verify the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_commands.add_parser("export", help="write the log (or a range) as JSONL, checkpointed")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument("--from", dest="start", type=int, default=1, help="first record")
    export.add_argument("--to", dest="end", type=int, help="last record")
    verify = audit_commands.add_parser("verify", help="verify an export offline (default: the live log)")
    verify.add_argument("path", nargs="?", help="a JSONL export; without it the live log is exported and checked")
    verify.add_argument("--public-key", help="PEM file of the signing key (default: the enclave's)")
    verify.add_argument("--trusted", metavar="CHECKPOINT",
                        help="a signed checkpoint kept earlier: fail unless the log extends it (catches truncation)")
    prove = audit_commands.add_parser("prove", help="write a record's inclusion proof (RFC 9162) with its checkpoint")
    prove.add_argument("seq", type=int, metavar="SEQ", help="the record's sequence number")
    prove.add_argument("--out", help="file to write (default: standard output)")
    verify_proof_cmd = audit_commands.add_parser("verify-proof", help="verify an inclusion proof offline")
    verify_proof_cmd.add_argument("path", help="a proof written by `enclave audit prove` or GET /v1/audit/proof/SEQ")
    verify_proof_cmd.add_argument("--public-key", help="PEM file of the signing key (default: the enclave's)")
    head = audit_commands.add_parser("checkpoint", help="sign the head and write the latest signed checkpoint")
    head.add_argument("--out", required=True, help="file to write (keep it: verify --trusted checks against it)")
    commands.add_parser("migrate", help="bring the state store to this enclave's schema version (as the owner)")
    backup = commands.add_parser("backup", help="write every table of the state store, in one snapshot, as JSONL")
    backup.add_argument("--out", required=True, help="file to write")
    restore_cmd = commands.add_parser("restore", help="restore a backup into an empty state store, then verify")
    restore_cmd.add_argument("path", help="a file written by `enclave backup`")
    serve = commands.add_parser("serve", help="serve the HTTP API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive, default=1,
                       help="API worker processes on the one port (default 1: this process)")
    worker = commands.add_parser("worker", help="run query workers for asynchronous queries (needs ENCLAVE_REDIS_URL)")
    worker.add_argument("--concurrency", type=int, default=1, metavar="M", help="worker processes (default 1)")
    keys = commands.add_parser("keys", help="issue or revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create_key = key_commands.add_parser("create", help="create a principal (if new) and print a new key once")
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--role", required=True, action="append", choices=ROLES)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    grants = commands.add_parser("grants", help="create or revoke grants")
    grant_commands = grants.add_subparsers(dest="grants_command", required=True)
    create_grant = grant_commands.add_parser("create")
    create_grant.add_argument("--researcher", required=True)
    create_grant.add_argument("--dataset", default="demo")
    create_grant.add_argument("--purpose", required=True)
    create_grant.add_argument("--epsilon", type=float, required=True)
    create_grant.add_argument("--delta", type=float, default=1e-6)
    create_grant.add_argument("--starts", type=date.fromisoformat)
    create_grant.add_argument("--expires", type=date.fromisoformat)
    create_grant.add_argument("--templates-only", action="store_true")
    revoke_grant_cmd = grant_commands.add_parser("revoke")
    revoke_grant_cmd.add_argument("--researcher", required=True)
    revoke_grant_cmd.add_argument("--dataset", default="demo")
    revoke_grant_cmd.add_argument("--reason", required=True)
    ingest_cmd = commands.add_parser("ingest", help="validate, load and link a contributor's delivery")
    ingest_cmd.add_argument("--dataset", required=True)
    ingest_cmd.add_argument("--contributor", required=True)
    ingest_cmd.add_argument("--file", required=True, action="append", metavar="KIND=PATH",
                            help="roster=PATH or TABLE=PATH, .csv or .parquet (repeat for each file)")
    ingest_cmd.add_argument("--sha256", action="append", default=[], metavar="KIND=HEX",
                            help="the checksum the contributor declared for a file")
    ingest_cmd.add_argument("--threshold", type=float, help="match probability for linkage (default: manifest)")
    link_cmd = commands.add_parser("link", help="re-link at another threshold, or rotate the person key")
    link_commands = link_cmd.add_subparsers(dest="link_command", required=True)
    relink_cmd = link_commands.add_parser("run", help="link again at a threshold")
    relink_cmd.add_argument("--dataset", required=True)
    relink_cmd.add_argument("--threshold", type=float, required=True)
    rekey_cmd = link_commands.add_parser("rekey", help="rotate the person key (every person key changes)")
    rekey_cmd.add_argument("--dataset", required=True)
    quality = commands.add_parser("quality", help="the linkage and data-quality report (stewards only)")
    quality.add_argument("--dataset", required=True)
    quality.add_argument("--html", help="also write the report as a page to this file")
    quality.add_argument("--no-clerical", action="store_true", help="leave out the borderline pairs")
    consent = commands.add_parser("consent", help="record, revoke or import consent")
    consent_commands = consent.add_subparsers(dest="consent_command", required=True)
    for action in ("give", "revoke"):
        statement = consent_commands.add_parser(action)
        statement.add_argument("--dataset", required=True)
        statement.add_argument("--contributor", required=True)
        statement.add_argument("--local-id", required=True)
        statement.add_argument("--purpose", required=True)
        if action == "give":
            statement.add_argument("--given", type=date.fromisoformat, default=date.today())
            statement.add_argument("--expires", type=date.fromisoformat)
    consent_import = consent_commands.add_parser("import", help="a contributor's consent file (CSV or Parquet)")
    consent_import.add_argument("--dataset", required=True)
    consent_import.add_argument("--contributor", required=True)
    consent_import.add_argument("path")
    demo = commands.add_parser("demo", help="the pipeline on the demo dataset, then the service with demo keys")
    demo.add_argument("--no-serve", action="store_true", help="stop after the scripted walkthrough")
    demo.add_argument("--port", type=int, default=8000)
    commands.add_parser("schema", help="regenerate the JSON Schemas of manifests and rules")
    return top


STORE_COMMANDS = {"audit": _cmd_audit, "migrate": _cmd_migrate, "backup": _cmd_backup, "restore": _cmd_restore}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "schema":
        return _cmd_schema(args)
    if args.command == "serve":
        try:
            return _cmd_serve(None, args)
        except StoreError as error:
            print(error, file=sys.stderr)
            return 2
    if args.command == "worker":
        from enclave.jobs.worker import run_workers

        try:
            return run_workers(Settings(), max(1, args.concurrency))
        except StoreError as error:
            print(error, file=sys.stderr)
            return 2
    if args.command == "audit" and (args.audit_command == "verify-proof" or
                                    (args.audit_command == "verify" and args.path)):
        return _cmd_audit(None, args)  # offline: nothing but the file and the public key
    try:
        if args.command in STORE_COMMANDS:
            return STORE_COMMANDS[args.command](Enclave.open_audit(Settings())[0], args)
        enclave = Enclave(Settings())
    except StoreError as error:  # one clear message with its remedy, never a traceback
        print(error, file=sys.stderr)
        return 2
    handlers = {"check": _cmd_check, "query": _cmd_query, "demo": _cmd_demo,
                "keys": _cmd_keys, "grants": _cmd_grants, "ingest": _cmd_ingest, "link": _cmd_link,
                "quality": _cmd_quality, "consent": _cmd_consent}
    try:
        return handlers[args.command](enclave, args)
    except UnknownDataset as error:
        message = f"No dataset named {error.args[0]!r}; datasets: {', '.join(enclave.manifests)}."
        if getattr(args, "json", False) or getattr(args, "format", None) == "json":  # the API's code for it
            _print_refusal("not_found", message, (), "", True)
        else:
            print(message, file=sys.stderr)
        return 2
    finally:
        enclave.close()


if __name__ == "__main__":
    sys.exit(main())
