"""What the commands print: one JSON document with --json, else text for people; the same texts remote
or in process (the client's renderings), so a researcher reads one format wherever they ask."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from enclave.client import CheckReport, EnclaveError, NotFound, Result, Unavailable


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False)) or getattr(args, "format", None) == "json"


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def emit(args: argparse.Namespace, payload: Any, text: str, stream: TextIO | None = None) -> None:
    """The command's outcome: `payload` as JSON on stdout with --json, else `text` for people (on `stream`:
    stderr for a command whose stdout is kept for data, as `audit export` and `prove` write theirs)."""
    if wants_json(args):
        print_json(payload)
    else:
        print(text, file=stream or sys.stdout)


def print_check(report: CheckReport, as_json: bool) -> int:
    """An accepted or refused check: `{"accepted", "violations", ...}` as POST /v1/queries/check answers it."""
    if as_json:
        print_json(report.raw)
    else:
        print(report)
    return 0 if report.accepted else 1


def print_refusal(error: EnclaveError, as_json: bool) -> None:
    """A refusal on stdout: the API's error envelope with --json, else one line and each violation."""
    if as_json:
        print(json.dumps({"ok": False, "error": {"code": error.code, "message": error.message,
                                                 "violations": [asdict(v) for v in error.violations]}}))
    else:
        print(f"refused: {error}")


def refusal_status(error: EnclaveError) -> int:
    """2 for an unknown dataset (or template) and for an enclave that could not be asked; 1 for a refusal."""
    return 2 if isinstance(error, NotFound | Unavailable) else 1


def print_release(result: Result, fmt: str) -> None:
    if fmt == "json":
        print_json(result.raw)
    elif fmt == "csv":
        from enclave.disclosure.release import Release  # the CSV layout the enclave documents, one place

        print(Release.model_validate(result.raw).to_csv(), end="")
    else:
        print(repr(result))
