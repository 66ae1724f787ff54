"""`enclave audit` (export, checkpoint, prove, verify, verify-proof), `migrate`, `backup`, `restore`.

They work on the state store alone, so also on one the enclave refuses to run on; `verify FILE` and
`verify-proof` need no store at all, only the file and the public key.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.backup import backup as write_backup
from enclave.audit.backup import restore as load_backup
from enclave.audit.migrations import SCHEMA_VERSION
from enclave.audit.signing import load_public_key
from enclave.audit.state import differences
from enclave.audit.store import AuditStore
from enclave.audit.verify import Report, verify_lines, verify_proof
from enclave.commands.output import emit
from enclave.disclosure.cache import ReleaseCache
from enclave.pipeline import Enclave
from enclave.settings import Settings


def run(store: AuditStore | None, args: argparse.Namespace) -> int:
    """Export, checkpoint, prove or verify."""
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
        return _checkpoint(store, args)  # type: ignore[arg-type]
    if args.audit_command == "prove":
        return _prove(store, args)  # type: ignore[arg-type]
    public = _public_key(args)
    if args.audit_command == "verify-proof":
        proof = _read_json(args.path)
        checked = verify_proof(proof, public) if proof is not None else None
        text = checked.summary() if checked else f"FAILED: the proof {args.path} cannot be read as JSON"
        emit(args, asdict(checked) if checked else {"ok": False, "problem": text}, text)
        return 0 if checked and checked.ok else 1
    trusted = None
    if args.trusted:
        trusted = _read_json(args.trusted)
        if trusted is None:
            text = f"FAILED: the trusted checkpoint {args.trusted} cannot be read as JSON"
            emit(args, {"ok": False, "problem": text}, text)
            return 1
    if args.path:
        with open(args.path) as lines:
            report = verify_lines(lines, public, trusted)
        emit(args, asdict(report), report.summary())
        return 0 if report.ok else 1
    report = verify_lines(store.export_lines(), public, trusted)  # type: ignore[union-attr]
    found = [difference.line() for difference in differences(store)]  # type: ignore[arg-type]
    emit(args, {**asdict(report), "differences": found}, _live_summary(report, found))
    return 0 if report.ok and not found else 1


def _live_summary(report: Report, found: list[str]) -> str:
    if not found:
        return f"{report.summary()}\nstate: ok, every governed table is the projection of the log"
    return "\n".join([report.summary(), f"state: {len(found)} difference{'s' if len(found) != 1 else ''} between "
                      "the live tables and the log", *(f"  {line}" for line in found)])


def _public_key(args: argparse.Namespace) -> Ed25519PublicKey:
    return load_public_key(Path(args.public_key) if args.public_key else Settings().audit_path / "public-key.pem")


def _read_json(path: str) -> object | None:
    """The JSON in a file the auditor names, or None if it cannot be read as JSON (said by the caller)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _checkpoint(store: AuditStore, args: argparse.Namespace) -> int:
    signed = store.checkpoint_head()
    if signed is None:
        print("the log is empty: nothing to checkpoint", file=sys.stderr)
        return 1
    Path(args.out).write_text(json.dumps(signed, sort_keys=True) + "\n")
    body = signed["checkpoint"]
    text = f"checkpoint at {body['size']} (root {body['root'][:16]}...) written to {args.out}"  # type: ignore[index]
    emit(args, signed, text, sys.stderr)
    return 0


def _prove(store: AuditStore, args: argparse.Namespace) -> int:
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


def migrate(store: AuditStore, args: argparse.Namespace) -> int:
    """Opening the store migrated it (as the owning role, where one is configured)."""
    text = f"the state store at {store.backend} is at schema version {SCHEMA_VERSION}"
    emit(args, {"backend": str(store.backend), "schema_version": SCHEMA_VERSION}, text, sys.stderr)
    return 0


def backup(store: AuditStore, args: argparse.Namespace) -> int:
    with open(args.out, "w") as out:
        written = write_backup(store, out)
    text = (f"backed up {written['events']} records and {sum(written.values()) - written['events']} rows of state "
            f"to {args.out}")
    emit(args, written, text, sys.stderr)
    return 0


def restore(store: AuditStore, args: argparse.Namespace) -> int:
    """Restore, then check what was restored as `enclave audit verify` does: the log against its signed
    checkpoints, the governed tables against the log."""
    with open(args.path) as lines:
        restored = load_backup(store, lines)
    settings = Settings()
    forgotten = ReleaseCache.connect(settings.redis_url, Enclave.namespace_of(store)).clear()
    if forgotten:
        print(f"forgot {forgotten} cached answers in Redis (the store is the record)", file=sys.stderr)
    report = verify_lines(store.export_lines(), load_public_key(settings.audit_path / "public-key.pem"))
    found = [difference.line() for difference in differences(store)]
    text = (f"restored {restored['events']} records; {report.summary()}; "
            f"state: {'ok' if not found else f'{len(found)} differences'}")
    emit(args, {"restored": restored, **asdict(report), "differences": found}, text, sys.stderr)
    return 0 if report.ok and not found else 1
