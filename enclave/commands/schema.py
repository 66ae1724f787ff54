"""`enclave schema`: regenerate the published JSON Schemas of manifests and rules (a test compares them)."""

from __future__ import annotations

import argparse
import json

from enclave.catalog.manifest import Manifest
from enclave.commands.output import emit
from enclave.policy.rules import Rules
from enclave.settings import PROJECT_ROOT

SCHEMAS = {
    PROJECT_ROOT / "datasets" / "manifest.schema.json": Manifest,
    PROJECT_ROOT / "query_rules" / "rules.schema.json": Rules,
}


def schema_text(model: type) -> str:
    return json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"


def run(args: argparse.Namespace) -> int:
    written = []
    for path, model in SCHEMAS.items():
        path.write_text(schema_text(model))
        written.append(str(path.relative_to(PROJECT_ROOT)))
    emit(args, {"written": written}, "\n".join(f"wrote {name}" for name in written))
    return 0
