"""`enclave keys` and `enclave grants`: a steward's changes, each recorded in the audit log by the store."""

from __future__ import annotations

import argparse
import sys

from enclave.access.keys import ensure_principal, issue_key, revoke_key
from enclave.budget.ledger import grant, revoke_grant
from enclave.commands.output import emit
from enclave.pipeline import Enclave


def keys(enclave: Enclave, args: argparse.Namespace) -> int:
    with enclave.audit.transaction() as tx:
        if args.keys_command == "revoke":
            if not revoke_key(tx, "cli", args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            emit(args, {"ok": True, "key_id": args.key_id, "revoked": True}, f"revoked {args.key_id}")
            return 0
        ensure_principal(tx, "cli", args.name, set(args.role))
        key = issue_key(tx, enclave.settings.pepper, "cli", args.name)
    # shown once: only its hash is kept; the id is the key's second part (enc_<id>_<secret>)
    emit(args, {"key_id": key.split("_")[1], "principal": args.name, "roles": sorted(args.role), "key": key}, key)
    return 0


def grants(enclave: Enclave, args: argparse.Namespace) -> int:
    with enclave.audit.transaction() as tx:
        if args.grants_command == "revoke":
            if not revoke_grant(tx, "cli", args.researcher, args.dataset, args.reason):
                print("no such grant", file=sys.stderr)
                return 1
            emit(args, {"ok": True, "researcher": args.researcher, "dataset": args.dataset, "revoked": True},
                 f"revoked {args.researcher} on {args.dataset}")
            return 0
        enclave.manifest(args.dataset)
        grant(tx, "cli", args.researcher, args.dataset, args.epsilon, args.delta, purpose=args.purpose,
              starts=args.starts, expires=args.expires, adhoc=not args.templates_only)
    emit(args, {"researcher": args.researcher, "dataset": args.dataset, "purpose": args.purpose,
                "epsilon_cap": args.epsilon, "delta_cap": args.delta, "starts": args.starts, "expires": args.expires,
                "adhoc": not args.templates_only},
         f"granted {args.researcher} on {args.dataset}: ε={args.epsilon:g}, δ={args.delta:g}")
    return 0
