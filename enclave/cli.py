"""The `enclave` command: check and query SQL, onboard data, verify and export the audit log, run the demo.

This module is only the parser and the dispatch: each command's code lives in `enclave.commands` and is
imported when that command runs, so `enclave --help` (and any usage error) loads nothing of the
pipeline, the engine or the service. No command prints an un-noised value: `query`, `templates run` and
`demo` print protected releases only, each recorded in the audit log before it is shown.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from importlib import import_module

# enclave.access.keys.ROLES, named here so that the parser needs none of the store's imports (a test
# holds the two together)
ROLE_NAMES = ("researcher", "reviewer", "steward", "auditor")
DEFAULT_DATASET = "demo"  # enclave.client.DEFAULT_DATASET: the dataset `enclave demo` serves

EPILOG = """\
Researchers (in process as the demo researcher, or on a remote enclave with --url and --key):
  enclave check "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"   cost and accuracy, free
  enclave query --epsilon 0.5 "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
  enclave templates                     approved templates; enclave templates run 3 --param grade=4
  enclave budget                        what is left of each grant
  export ENCLAVE_URL=http://127.0.0.1:8000 ENCLAVE_TOKEN=enc_...   then the same commands ask that enclave

Stewards, reviewers and auditors (on this machine's enclave):
  enclave demo                          the demo data, a walkthrough, keys per role, then the web pages
  enclave keys create --name rita --role researcher
  enclave grants create --researcher rita --purpose study --epsilon 10
  enclave audit export --out log.jsonl && enclave audit verify log.jsonl --public-key public-key.pem

Every command takes --json for scripts; `enclave COMMAND --help` explains each one.
"""

REMOTE_HELP = """\
Without --url (or ENCLAVE_URL) this runs in process as the demo researcher on this machine's enclave;
with it, it asks that enclave over HTTP with the key from --key (or ENCLAVE_TOKEN).

Exit status: 0 accepted or released, 1 refused, 2 an unknown dataset, an unreachable enclave or a usage
error. With --json everything on stdout is one JSON document: the API's answer, or its error envelope
{"ok": false, "error": {"code", "message", "violations"}}."""


def _command(commands: argparse._SubParsersAction, name: str, help: str, epilog: str = "",
             run: str | None = None, needs: str = "enclave", json_flag: bool = True,
             parents: tuple[argparse.ArgumentParser, ...] = ()) -> argparse.ArgumentParser:
    """A subcommand whose handler is `run` ("module:function" in enclave.commands), given what it `needs`:
    nothing, the state store, this machine's enclave, or either that or a remote one (`research`)."""
    sub = commands.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter, parents=list(parents))
    if json_flag:
        sub.add_argument("--json", action="store_true", help="print one JSON document, for scripts")
    if run is not None:
        sub.set_defaults(run=run, needs=needs)
    return sub


def _remote() -> argparse.ArgumentParser:
    remote = argparse.ArgumentParser(add_help=False)
    where = remote.add_argument_group("remote enclave")
    # suppressed defaults: given before or after a subcommand (`templates --url U run 3`), never reset by it
    where.add_argument("--url", default=argparse.SUPPRESS,
                       help="the enclave's URL (default: ENCLAVE_URL; none: this machine, in process)")
    where.add_argument("--key", default=argparse.SUPPRESS, help="your API key (default: ENCLAVE_TOKEN)")
    return remote


class _ByColumn(argparse.Action):
    """A repeatable COLUMN=NUMBER option, gathered into {column: number} (None when never given)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: object,
                 option_string: str | None = None) -> None:
        column, sep, number = str(value).partition("=")
        try:
            parsed = float(number)
        except ValueError:
            parsed = None
        if not sep or not column or parsed is None:
            parser.error(f"{option_string} {value!r}: write COLUMN=NUMBER")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), column: parsed})


def _sql(sub: argparse.ArgumentParser, spends: str) -> None:
    sub.add_argument("--dataset", default=DEFAULT_DATASET, help=f"the dataset (default: {DEFAULT_DATASET})")
    cost = sub.add_mutually_exclusive_group()
    cost.add_argument("--epsilon", type=float, help=f"the ε the query {spends} (default: the rules')")
    cost.add_argument("--accuracy", action=_ByColumn, metavar="COLUMN=HALF_WIDTH",
                      help="instead of --epsilon: the half-width wanted for a COUNT or SUM output's interval; "
                      f"the query {spends} the least ε that meets every target (repeatable)")
    sub.add_argument("--weight", dest="weights", action=_ByColumn, metavar="COLUMN=W",
                     help="an output column's weight in the split of ε (0 < W <= 100, default 1; repeatable)")
    sub.add_argument("sql", help="the SQL text, or - to read it from standard input")


def _research(commands: argparse._SubParsersAction) -> None:
    remote = _remote()
    check = _command(commands, "check", "check SQL and show its cost, deadline and accuracy; spends nothing",
                     'example:\n  enclave check --epsilon 0.5 "SELECT grade, AVG(days_absent) AS absent '
                     'FROM enrollments GROUP BY grade"\n\n' + REMOTE_HELP, "research:check", "research",
                     parents=(remote,))
    _sql(check, "would spend")
    query = _command(commands, "query", "run a query and print its protected release (table, JSON or CSV)",
                     'example:\n  enclave query --epsilon 0.5 --format csv "SELECT school, COUNT(*) AS n '
                     'FROM enrollments GROUP BY school"\n\nEvery value is noised; a cell of a group below the '
                     "suppression threshold is '*' (null in JSON).\n" + REMOTE_HELP, "research:query", "research",
                     json_flag=False, parents=(remote,))
    _sql(query, "spends")
    query.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="table for people (default); json, the API's release; csv, value, interval, suppressed")
    query.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
    query.add_argument("--timeout", type=float, help="seconds to wait for a remote answer (default: until it comes)")
    templates = _command(commands, "templates", "list the approved query templates, or run one",
                         "examples:\n  enclave templates\n  enclave templates run 3 --param grade=4\n\n"
                         + REMOTE_HELP, "research:templates", "research", parents=(remote,))
    runs = templates.add_subparsers(dest="templates_command", metavar="{list,run}")
    listing = _command(runs, "list", "list the approved templates, with their parameters, ε per run and run limit",
                       parents=(remote,), json_flag=False)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    run = _command(runs, "run", "run an approved template with its parameters; spends its ε per run",
                   "example:\n  enclave templates run 3 --param grade=4", parents=(remote,), json_flag=False)
    run.add_argument("template_id", type=int, metavar="ID", help="the template's id (`enclave templates` lists them)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a parameter's value (repeat for each); typed as the template declares it")
    run.add_argument("--format", choices=("table", "json", "csv"), default="table")
    run.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
    _command(commands, "budget", "show each of your grants and the ε and δ left on it",
             "example:\n  enclave budget --url http://127.0.0.1:8000 --key enc_...\n\n" + REMOTE_HELP,
             "research:budget", "research", parents=(remote,))


def _audit(commands: argparse._SubParsersAction) -> None:
    audit = _command(commands, "audit", "export, verify, prove or checkpoint the audit log",
                     "examples:\n  enclave audit export --out log.jsonl\n  enclave audit verify log.jsonl "
                     "--public-key .enclave/audit/public-key.pem\n  enclave audit verify          (the live log "
                     "and the tables it governs)", json_flag=False)
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    export = _command(audit_commands, "export", "write the log (or a range) as JSONL, checkpointed", run="audit:run",
                      needs="store", json_flag=False)
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument("--from", dest="start", type=int, default=1, help="first record")
    export.add_argument("--to", dest="end", type=int, help="last record")
    verify = _command(audit_commands, "verify", "verify an export offline (default: the live log)", run="audit:run",
                      needs="store")
    verify.add_argument("path", nargs="?", help="a JSONL export; without it the live log is exported and checked")
    verify.add_argument("--public-key", help="PEM file of the signing key (default: the enclave's)")
    verify.add_argument("--trusted", metavar="CHECKPOINT",
                        help="a signed checkpoint kept earlier: fail unless the log extends it (catches truncation)")
    prove = _command(audit_commands, "prove", "write a record's inclusion proof (RFC 9162) with its checkpoint",
                     run="audit:run", needs="store", json_flag=False)
    prove.add_argument("seq", type=int, metavar="SEQ", help="the record's sequence number")
    prove.add_argument("--out", help="file to write (default: standard output)")
    verify_proof = _command(audit_commands, "verify-proof", "verify an inclusion proof offline", run="audit:run",
                            needs="store")
    verify_proof.add_argument("path", help="a proof written by `enclave audit prove` or GET /v1/audit/proof/SEQ")
    verify_proof.add_argument("--public-key", help="PEM file of the signing key (default: the enclave's)")
    head = _command(audit_commands, "checkpoint", "sign the head and write the latest signed checkpoint",
                    run="audit:run", needs="store")
    head.add_argument("--out", required=True, help="file to write (keep it: verify --trusted checks against it)")
    _command(commands, "migrate", "bring the state store to this enclave's schema version (as the owner)",
             run="audit:migrate", needs="store")
    backup = _command(commands, "backup", "write every table of the state store, in one snapshot, as JSONL",
                      "example:\n  enclave backup --out state.jsonl   (keep the signing key with it)",
                      "audit:backup", "store")
    backup.add_argument("--out", required=True, help="file to write")
    restore = _command(commands, "restore", "restore a backup into an empty state store, then verify",
                       "example:\n  ENCLAVE_DATABASE_URL=postgresql://... enclave restore state.jsonl",
                       "audit:restore", "store")
    restore.add_argument("path", help="a file written by `enclave backup`")


def _service(commands: argparse._SubParsersAction) -> None:
    serve = _command(commands, "serve", "serve the HTTP API and the web pages with uvicorn",
                     "example:\n  enclave serve --port 8000 --workers 2", "service:serve", "nothing",
                     json_flag=False)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive, default=1,
                       help="API worker processes on the one port (default 1: this process)")
    worker = _command(commands, "worker", "run query workers for asynchronous queries (needs ENCLAVE_REDIS_URL)",
                      run="service:worker", needs="nothing", json_flag=False)
    worker.add_argument("--concurrency", type=int, default=1, metavar="M", help="worker processes (default 1)")


def _admin(commands: argparse._SubParsersAction) -> None:
    keys = _command(commands, "keys", "issue or revoke API keys", "examples:\n  enclave keys create --name rita "
                    "--role researcher\n  enclave keys revoke 1a2b3c4d", json_flag=False)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create_key = _command(key_commands, "create", "create a principal (if new) and print a new key once",
                          run="admin:keys")
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--role", required=True, action="append", choices=ROLE_NAMES,
                            help="a role of the principal (repeat for several)")
    revoke = _command(key_commands, "revoke", "revoke a key by its id", run="admin:keys")
    revoke.add_argument("key_id")
    grants = _command(commands, "grants", "create or revoke grants", "examples:\n  enclave grants create --researcher "
                      "rita --purpose 'attendance study' --epsilon 10 --expires 2027-06-30\n  enclave grants revoke "
                      "--researcher rita --reason 'study ended'", json_flag=False)
    grant_commands = grants.add_subparsers(dest="grants_command", required=True)
    create_grant = _command(grant_commands, "create", "grant a researcher a dataset, with a purpose and ε, δ caps",
                            run="admin:grants")
    create_grant.add_argument("--researcher", required=True)
    create_grant.add_argument("--dataset", default=DEFAULT_DATASET)
    create_grant.add_argument("--purpose", required=True)
    create_grant.add_argument("--epsilon", type=float, required=True, help="the ε cap")
    create_grant.add_argument("--delta", type=float, default=1e-6, help="the δ cap (default 1e-6)")
    create_grant.add_argument("--starts", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    create_grant.add_argument("--expires", type=date.fromisoformat, help="last day, YYYY-MM-DD")
    create_grant.add_argument("--templates-only", action="store_true", help="approved templates only, no ad-hoc SQL")
    revoke_grant = _command(grant_commands, "revoke", "revoke a grant, with the reason", run="admin:grants")
    revoke_grant.add_argument("--researcher", required=True)
    revoke_grant.add_argument("--dataset", default=DEFAULT_DATASET)
    revoke_grant.add_argument("--reason", required=True)


def _data(commands: argparse._SubParsersAction) -> None:
    ingest = _command(commands, "ingest", "validate, load and link a contributor's delivery",
                      "example:\n  enclave ingest --dataset demo --contributor clinic --file roster=roster.csv "
                      "--file clinic_visits=visits.parquet", "data:ingest")
    ingest.add_argument("--dataset", required=True)
    ingest.add_argument("--contributor", required=True)
    ingest.add_argument("--file", required=True, action="append", metavar="KIND=PATH",
                        help="roster=PATH or TABLE=PATH, .csv or .parquet (repeat for each file)")
    ingest.add_argument("--sha256", action="append", default=[], metavar="KIND=HEX",
                        help="the checksum the contributor declared for a file")
    ingest.add_argument("--threshold", type=float, help="match probability for linkage (default: manifest)")
    link = _command(commands, "link", "re-link at another threshold, or rotate the person key",
                    "examples:\n  enclave link run --dataset demo --threshold 0.8\n  enclave link rekey --dataset demo",
                    json_flag=False)
    link_commands = link.add_subparsers(dest="link_command", required=True)
    relink = _command(link_commands, "run", "link again at a threshold", run="data:link")
    relink.add_argument("--dataset", required=True)
    relink.add_argument("--threshold", type=float, required=True)
    rekey = _command(link_commands, "rekey", "rotate the person key (every person key changes)", run="data:link")
    rekey.add_argument("--dataset", required=True)
    quality = _command(commands, "quality", "the linkage and data-quality report, as JSON (stewards only)",
                       "example:\n  enclave quality --dataset demo --html quality.html", "data:quality",
                       json_flag=False)
    quality.add_argument("--dataset", required=True)
    quality.add_argument("--html", help="also write the report as a page to this file")
    quality.add_argument("--no-clerical", action="store_true", help="leave out the borderline pairs")
    consent = _command(commands, "consent", "record, revoke or import consent",
                       "examples:\n  enclave consent give --dataset demo --contributor clinic --local-id C1234567 "
                       "--purpose research --expires 2027-06-30\n  enclave consent import --dataset demo "
                       "--contributor clinic consents.csv", json_flag=False)
    consent_commands = consent.add_subparsers(dest="consent_command", required=True)
    for action in ("give", "revoke"):
        statement = _command(consent_commands, action, f"{action} a person's consent for a purpose", run="data:consent")
        statement.add_argument("--dataset", required=True)
        statement.add_argument("--contributor", required=True)
        statement.add_argument("--local-id", required=True)
        statement.add_argument("--purpose", required=True)
        if action == "give":
            statement.add_argument("--given", type=date.fromisoformat, default=date.today())
            statement.add_argument("--expires", type=date.fromisoformat)
    consent_import = _command(consent_commands, "import", "a contributor's consent file (CSV or Parquet)",
                              run="data:consent")
    consent_import.add_argument("--dataset", required=True)
    consent_import.add_argument("--contributor", required=True)
    consent_import.add_argument("path")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="enclave", description="A secure statistical query enclave: aggregate SQL "
                                  "in, differentially private, audited tables out.", epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _research(commands)
    _audit(commands)
    _service(commands)
    _admin(commands)
    _data(commands)
    demo = _command(commands, "demo", "the pipeline on the demo dataset, then the service with demo keys",
                    "Prints a key per role and the web page to sign in with it, then serves them.",
                    "demo:run", json_flag=False)
    demo.add_argument("--no-serve", action="store_true", help="stop after the scripted walkthrough")
    demo.add_argument("--port", type=int, default=8000)
    _command(commands, "schema", "regenerate the JSON Schemas of manifests and rules", run="schema:run",
             needs="nothing")
    return top


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return import_module("enclave.commands").run(args)


if __name__ == "__main__":
    sys.exit(main())
