"""`enclave check`, `query`, `templates` and `budget` on a remote enclave, through `enclave.client`: the
key's principal asks over HTTP, and nothing of the pipeline is loaded here. The output and exit status
are those of the same commands in process."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import asdict

from enclave.client import Enclave, EnclaveError, InvalidRequest, NotFound, Result
from enclave.commands import remote_url
from enclave.commands.output import emit, print_check, print_refusal, print_release, refusal_status, wants_json
from enclave.commands.tables import budget_table, parameters_of, templates_table


def _asked(args: argparse.Namespace, ask: Callable[[Enclave], int]) -> int:
    """Run `ask` with a client for --url and --key (or ENCLAVE_URL and ENCLAVE_TOKEN); a refusal is printed
    as the in-process commands print it, an unknown dataset or an unreachable enclave on stderr."""
    as_json = wants_json(args)
    try:
        with Enclave(remote_url(args), getattr(args, "key", None) or os.environ.get("ENCLAVE_TOKEN")) as enclave:
            return ask(enclave)
    except EnclaveError as error:
        if as_json or not (isinstance(error, NotFound) or error.status is None):
            print_refusal(error, as_json)
        else:
            print(error.message, file=sys.stderr)
        return 2 if error.status is None else refusal_status(error)


def _sql(args: argparse.Namespace) -> str:
    return sys.stdin.read() if args.sql == "-" else args.sql


def check(args: argparse.Namespace) -> int:
    sql = _sql(args)
    return _asked(args, lambda enclave: print_check(enclave.check(
        sql, args.dataset, args.epsilon, weights=args.weights, accuracy=args.accuracy), args.json))


def _release(result: Result, fmt: str) -> int:
    print_release(result, fmt)
    return 0


def query(args: argparse.Namespace) -> int:
    sql = _sql(args)
    return _asked(args, lambda enclave: _release(enclave.query(
        sql, args.dataset, args.epsilon, timeout=args.timeout, progress=sys.stderr.isatty(), weights=args.weights,
        accuracy=args.accuracy), args.format))


def _run_template(enclave: Enclave, args: argparse.Namespace) -> int:
    try:
        values = parameters_of(enclave.template(args.template_id), args.param)
    except ValueError as error:
        raise InvalidRequest("invalid_parameters", str(error), status=422) from None
    return _release(enclave.run_template(args.template_id, **values), args.format)


def _list_templates(enclave: Enclave, args: argparse.Namespace) -> int:
    approved = [t for t in enclave.templates() if t.status == "approved"]
    emit(args, [t.raw for t in approved], templates_table(approved))
    return 0


def templates(args: argparse.Namespace) -> int:
    if args.templates_command == "run":
        return _asked(args, lambda enclave: _run_template(enclave, args))
    return _asked(args, lambda enclave: _list_templates(enclave, args))


def budget(args: argparse.Namespace) -> int:
    def ask(enclave: Enclave) -> int:
        grants = enclave.budget()
        emit(args, [asdict(g) for g in grants], budget_table(grants))
        return 0

    return _asked(args, ask)
