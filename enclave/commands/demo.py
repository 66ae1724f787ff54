"""`enclave demo`: the demo data, a scripted walkthrough (two releases, two refusals), the log verified,
one key per role with the web page to sign in with it, then the service."""

from __future__ import annotations

import argparse
import json
import time

from enclave.access.keys import ROLES, ensure_principal, issue_key
from enclave.audit.signing import load_public_key
from enclave.audit.verify import verify_lines
from enclave.catalog.demo import ensure_demo
from enclave.commands.research import released
from enclave.pipeline import DEMO_RESEARCHER, Enclave

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


def demo_keys(enclave: Enclave) -> dict[str, str]:
    """One principal and key per role for the demo (the researcher gets the demo grant)."""
    keys = {}
    with enclave.audit.transaction() as tx:
        for role in ROLES:
            name = DEMO_RESEARCHER if role == "researcher" else f"demo-{role}"
            ensure_principal(tx, "demo-setup", name, {role})
            keys[role] = issue_key(tx, enclave.settings.pepper, "demo-setup", name)
    return keys


def sign_in_block(base: str, keys: dict[str, str]) -> str:
    """Per role, the page it lands on and the key to sign in with (at `base`/, the sign-in page)."""
    width = max(len(role) for role in keys)
    lines = [f"web pages: sign in at {base}/ with one of these keys (shown once; only their hashes are kept)"]
    lines += [f"  {role:<{width}}  {base}/{role:<{width}}  {key}" for role, key in keys.items()]
    return "\n".join(lines)


def run(enclave: Enclave, args: argparse.Namespace) -> int:
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
        released(lambda sql=sql: enclave.query(DEMO_RESEARCHER, "demo", sql), sql, "table")
        print()
    report = verify_lines(enclave.audit.export_lines(), load_public_key(enclave.public_key_path))
    print(f"audit log: {report.summary()}  (verify offline: enclave audit export --out log.jsonl; "
          "enclave audit verify log.jsonl)")
    keys = demo_keys(enclave)
    base = f"http://127.0.0.1:{args.port}"
    print("\n" + sign_in_block(base, keys))
    body = json.dumps({"dataset": "demo", "sql": " ".join(DEMO_QUERIES[0][1].split())})
    print(f"\nas the researcher from a shell: export ENCLAVE_URL={base} ENCLAVE_TOKEN={keys['researcher']}\n"
          "  then: enclave budget, enclave check ..., enclave query ... (remote), or Python: docs/client.md\n"
          f"  curl -s -H \"Authorization: Bearer $ENCLAVE_TOKEN\" $ENCLAVE_URL/v1/budget\n"
          f"  curl -s -H \"Authorization: Bearer $ENCLAVE_TOKEN\" -H 'Content-Type: application/json' -d '{body}' "
          "$ENCLAVE_URL/v1/queries\n"
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
