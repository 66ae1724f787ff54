"""A query template: SQL with named parameters ($name or :name), each with a type and allowed values.

Parameters are validated against their declaration before any SQL is built, then bound into the parsed
tree as literals (never spliced into text), and the bound query goes through the same check, rewrite,
execution, protection and audit as any other. A template fixes the shape; the rules still apply.
"""

from __future__ import annotations

from typing import Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlglot import exp

from enclave.policy.rules import Epsilon

Value = int | float | str | bool


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    type: Literal["integer", "number", "string", "boolean"]
    min: float | None = None
    max: float | None = None
    choices: list[Value] | None = Field(default=None, min_length=1, max_length=200)
    description: str = ""

    @model_validator(mode="after")
    def _declared(self) -> Parameter:
        if self.type == "string" and not self.choices:
            raise ValueError(f"string parameter {self.name} needs its list of choices")
        if self.type in ("integer", "number") and self.choices is None and (self.min is None or self.max is None):
            raise ValueError(f"numeric parameter {self.name} needs min and max, or choices")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"parameter {self.name}: min is above max")
        for choice in self.choices or []:
            self.check(choice)
        return self

    def check(self, value: object) -> Value:
        """The value if it is allowed, else ValueError saying why (no SQL is built before this)."""
        kinds = {"integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,)}[self.type]
        if isinstance(value, bool) != (self.type == "boolean") or not isinstance(value, kinds):
            raise ValueError(f"{self.name} must be a {self.type}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}")
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                (self.min is not None and value < self.min) or (self.max is not None and value > self.max)):
            limits = [f"at least {self.min:g}" if self.min is not None else "",
                      f"at most {self.max:g}" if self.max is not None else ""]
            raise ValueError(f"{self.name} must be " + " and ".join(part for part in limits if part))
        return value  # type: ignore[return-value]

    def example(self) -> Value:
        if self.choices:
            return self.choices[0]
        if self.type == "boolean":
            return True
        return int(self.min) if self.type == "integer" else float(self.min)  # type: ignore[arg-type]


class TemplateSpec(BaseModel):
    """What a proposer submits; once approved it never changes (a change is a new template)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=3, max_length=200)
    purpose: str = Field(min_length=3, max_length=2000, description="Plain-language purpose.")
    dataset: str = Field(min_length=1, max_length=64)
    sql: str = Field(min_length=1, max_length=10_000)
    parameters: list[Parameter] = Field(default_factory=list, max_length=20)
    epsilon: Epsilon = Field(description="ε each run spends.")
    run_limit: int = Field(ge=1, le=10_000, description="Runs allowed per researcher.")

    @model_validator(mode="after")
    def _names_match(self) -> TemplateSpec:
        declared = [p.name for p in self.parameters]
        if len(set(declared)) != len(declared):
            raise ValueError("parameter names must be distinct")
        try:
            used = {p.name for p in sqlglot.parse_one(self.sql, read="duckdb").find_all(exp.Placeholder)}
        except sqlglot.errors.SqlglotError:
            return self  # the check reports the syntax error with its position
        if used != set(declared):
            raise ValueError(f"the SQL uses parameters {sorted(used)}; declared {sorted(declared)}")
        return self

    def bind(self, values: dict[str, object]) -> str:
        """The SQL with each parameter replaced by its validated value, rendered from the tree."""
        allowed = {p.name: p for p in self.parameters}
        if set(values) != set(allowed):
            raise ValueError(f"give exactly the parameters {sorted(allowed)}")
        literals = {name: _literal(allowed[name].check(value)) for name, value in values.items()}
        tree = sqlglot.parse_one(self.sql, read="duckdb").transform(
            lambda node: literals[node.name].copy() if isinstance(node, exp.Placeholder) else node)
        return tree.sql("duckdb", comments=False)

    def example_sql(self) -> str:
        return self.bind({p.name: p.example() for p in self.parameters})


def _literal(value: Value) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(value)
