"""The `enclave` command's subcommands, one module per group, each imported only when its command runs.

    research  check, query, templates, budget in process, as the demo researcher on this machine
    remote    the same four on a remote enclave, through `enclave.client` (nothing of the pipeline loaded)
    audit     export, verify, prove, checkpoint; migrate, backup, restore (the state store alone)
    admin     keys and grants          data  ingest, link, quality, consent
    demo      the walkthrough and the demo keys       service  serve, worker       schema  JSON Schemas

`run` gives each handler what its command needs (nothing, the state store, or this machine's enclave)
and turns the errors every command shares into one clear line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import import_module


def remote_url(args: argparse.Namespace) -> str | None:
    """The enclave a researcher's command asks: --url, else ENCLAVE_URL; None for this machine's."""
    return getattr(args, "url", None) or os.environ.get("ENCLAVE_URL") or None


def _offline(args: argparse.Namespace) -> bool:
    """`audit verify FILE` and `audit verify-proof` need nothing but the file and the public key."""
    return args.command == "audit" and (args.audit_command == "verify-proof" or
                                        (args.audit_command == "verify" and bool(args.path)))


def run(args: argparse.Namespace) -> int:
    module, _, function = args.run.partition(":")
    if args.needs == "research" and remote_url(args):
        module = "remote"
    handler: Callable[..., int] = getattr(import_module(f"enclave.commands.{module}"), function)
    if args.needs == "nothing" or module == "remote" or _offline(args):
        return handler(args) if args.needs != "store" else handler(None, args)
    from enclave.audit.store import StoreError
    from enclave.pipeline import Enclave, UnknownDataset
    from enclave.settings import Settings

    try:
        if args.needs == "store":
            return handler(Enclave.open_audit(Settings())[0], args)
        enclave = Enclave(Settings())
    except StoreError as error:  # one clear message with its remedy, never a traceback
        print(error, file=sys.stderr)
        return 2
    try:
        return handler(enclave, args)
    except UnknownDataset as error:
        from enclave.client import NotFound
        from enclave.commands.output import print_refusal, wants_json

        message = f"No dataset named {error.args[0]!r}; datasets: {', '.join(enclave.manifests)}."
        if wants_json(args):  # the API's code for it
            print_refusal(NotFound("not_found", message), True)
        else:
            print(message, file=sys.stderr)
        return 2
    finally:
        enclave.close()

