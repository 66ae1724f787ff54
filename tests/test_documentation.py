"""What users read must match what the code does: codes, settings and published schemas."""

from __future__ import annotations

import pytest

from enclave.api.errors import API_CODES
from enclave.audit.records import EVENT_TYPES
from enclave.check import CODES
from enclave.commands.schema import SCHEMAS, schema_text
from enclave.execute.sandbox import EXECUTION_CODES
from enclave.intake.delivery import DELIVERY_CODES
from enclave.pipeline import QUERY_CODES
from enclave.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text()


@pytest.mark.parametrize("code", sorted({**CODES, **EXECUTION_CODES, **QUERY_CODES, **API_CODES, **DELIVERY_CODES}))
def test_every_error_code_is_documented(code):
    assert f"| `{code}` |" in README


@pytest.mark.parametrize("event", sorted(EVENT_TYPES))
def test_every_audit_event_type_is_documented(event):
    assert f"| `{event}` |" in README
    assert f"`{event}`" in (PROJECT_ROOT / "audit" / "README.md").read_text()


@pytest.mark.parametrize("setting", sorted(Settings.model_fields))
def test_every_setting_is_documented(setting):
    assert f"`ENCLAVE_{setting.upper()}`" in README


@pytest.mark.parametrize("path", sorted(SCHEMAS), ids=lambda p: p.name)
def test_published_json_schema_matches_the_model(path):
    assert path.read_text() == schema_text(SCHEMAS[path]), "run `enclave schema` and commit the result"


def test_readme_has_exactly_the_two_setup_commands():
    assert "python3 run.py demo" in README
    assert "python3 run.py test" in README
    assert "python3 run.py test" in (PROJECT_ROOT / ".ci" / "run").read_text()
