"""`enclave ingest`, `link`, `quality` and `consent`: onboarding a contributor's data (stewards)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from enclave.commands.output import emit, print_json
from enclave.intake.delivery import DeliveryFile, DeliveryRefused
from enclave.intake.quality import render_html, report
from enclave.onboarding import ConsentChange, ConsentRefused, import_consents, record_consent, rekey, relink
from enclave.onboarding import ingest as onboard
from enclave.pipeline import Enclave


def _files(specs: list[str], sums: list[str]) -> list[DeliveryFile]:
    """KIND=PATH arguments (and KIND=SHA256 checksums) as delivery files."""
    declared = dict(item.split("=", 1) for item in sums)
    files = []
    for spec in specs:
        kind, _, path = spec.partition("=")
        files.append(DeliveryFile(kind, Path(path).name, Path(path).read_bytes(), sha256=declared.get(kind)))
    return files


def _refused(args: argparse.Namespace, error: DeliveryRefused | ConsentRefused) -> int:
    problems = error.problems
    total = getattr(error, "total", len(problems))
    if args.json:
        code = "delivery_refused" if isinstance(error, DeliveryRefused) else "consent_refused"  # the API's codes
        print_json({"ok": False, "error": {"code": code, "message": f"refused: {total} problem(s); nothing was "
                                           "changed", "violations": [], "problems": [asdict(p) for p in problems]}})
        return 1
    print(f"refused: {total} problem(s); nothing was changed", file=sys.stderr)
    for p in problems:
        print(f"  {p.code}: {p.file}: {p.message}", file=sys.stderr)
    return 1


def ingest(enclave: Enclave, args: argparse.Namespace) -> int:
    try:
        done = onboard(enclave, "cli", args.dataset, args.contributor, _files(args.file, args.sha256), args.threshold)
    except DeliveryRefused as error:
        return _refused(args, error)
    files = done.receipt.files if done.receipt else ()
    lines = [f"loaded {f.kind}: {f.name} ({f.rows} rows, sha256 {f.sha256[:16]}...)" for f in files]
    if done.linked:
        lines.append(f"linked {done.linked.records} roster rows into {done.linked.persons} persons at threshold "
                     f"{done.linked.threshold} ({done.linked.kept} person keys kept) in {done.linked.seconds:.1f}s")
    lines.append(f"data version {done.version.label}")
    linkage = done.linked and {"threshold": done.linked.threshold, "records": done.linked.records,
                               "persons": done.linked.persons, "keys_kept": done.linked.kept,
                               "seconds": done.linked.seconds}
    emit(args, {"data_version": done.version.label, "linkage": linkage or None,
                "files": [{"kind": f.kind, "name": f.name, "sha256": f.sha256, "rows": f.rows} for f in files]},
         "\n".join(lines))
    return 0


def link(enclave: Enclave, args: argparse.Namespace) -> int:
    if args.link_command == "rekey":
        label = rekey(enclave, "cli", args.dataset).version.label
        emit(args, {"data_version": label}, f"person key rotated: data version {label}")
        return 0
    done = relink(enclave, "cli", args.dataset, args.threshold)
    persons = done.linked.persons if done.linked else None
    emit(args, {"data_version": done.version.label, "persons": persons},
         f"linked into {persons if persons is not None else '?'} persons: data version {done.version.label}")
    return 0


def quality(enclave: Enclave, args: argparse.Namespace) -> int:
    found = report(enclave.identity(args.dataset), clerical=not args.no_clerical)
    if args.html:
        Path(args.html).write_text(render_html(found))
        print(f"wrote {args.html}", file=sys.stderr)
    print(json.dumps(found, indent=2, default=str))
    return 0


def consent(enclave: Enclave, args: argparse.Namespace) -> int:
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
        return _refused(args, error)
    emit(args, {"data_version": version.label}, f"recorded: data version {version.label}")
    return 0
