"""Query rules: `query_rules/*.yaml` loaded into a typed, validated, hashed policy."""

from enclave.policy.rules import Rules, load_rules

__all__ = ["Rules", "load_rules"]
