from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from enclave.policy.rules import Rules, load_rules
from enclave.settings import PROJECT_ROOT

RULES_FILE = PROJECT_ROOT / "query_rules" / "default.yaml"


def test_rules_load_and_are_identified_by_their_file_hash(rules, tmp_path):
    import hashlib

    assert rules.sha256 == hashlib.sha256(RULES_FILE.read_bytes()).hexdigest()
    changed = tmp_path / "rules.yaml"
    changed.write_text(RULES_FILE.read_text() + "\n# a comment is a change of the reviewed file\n")
    assert load_rules(changed).sha256 != rules.sha256
    assert rules.suppression_threshold == 11


@pytest.mark.parametrize(("key", "value"), [
    ("operators", ["eq", "no_such_operator"]),
    ("aggregates", ["count", "mode"]),
    ("cast_types", ["not_a_type"]),
    ("suppression_threshold", 1),
    ("unknown_key", True),
    ("privacy", {"default_epsilon": 3.0, "max_epsilon": 2.0, "alpha": 0.05}),
])
def test_invalid_rules_are_refused(key, value):
    data = yaml.safe_load(RULES_FILE.read_text())
    data[key] = value
    with pytest.raises((ValidationError, ValueError)):
        Rules.model_validate(data)


def test_unknown_function_names_fail_at_load(tmp_path):
    data = yaml.safe_load(RULES_FILE.read_text())
    data["functions"] = [*data["functions"], "this_function_does_not_parse("]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="not a scalar function"):
        load_rules(path)
