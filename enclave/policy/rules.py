"""The typed query rules and their loader.

Rules are policy as code: a reviewed YAML file, validated here at start-up so that a typo fails loudly
instead of silently allowing or refusing something. The loaded file's SHA-256 (`Rules.sha256`) is what
audit records cite, so anyone can tell exactly which policy judged a query.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import sqlglot
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlglot import exp

# The most ε any request may name: a bound of the request schemas (queries, templates), far above any sane
# rules file. The rules' own `max_epsilon` is checked by the plan (`epsilon_out_of_range`).
EPSILON_CEILING = 100.0


def _requested_epsilon(value: float) -> float:
    """One message for every ε the schema refuses. Pydantic's own would call NaN "not greater than 0" and
    Infinity "not less than or equal to 100"; JSON from Python's parser (and `--epsilon nan`) can carry both."""
    if not (math.isfinite(value) and 0 < value <= EPSILON_CEILING):
        raise PydanticCustomError("epsilon_out_of_range", "epsilon must be a finite number above 0 and at most "
                                  "{ceiling}", {"ceiling": f"{EPSILON_CEILING:g}"})
    return value


Epsilon = Annotated[float, AfterValidator(_requested_epsilon),
                    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": EPSILON_CEILING})]
"""The ε a request asks for: finite, above 0, at most EPSILON_CEILING (documented as such in JSON Schema)."""

Aggregate = Literal["count", "count_distinct_unit", "sum", "avg", "median", "quantile_cont", "var_pop", "var_samp",
                    "stddev_pop", "stddev_samp"]
JoinKind = Literal["inner", "left"]
PostProcessing = Literal["having", "arithmetic"]

# How a function name is probed: the first call shape that sqlglot parses into a function node wins.
_PROBE_CALLS = ("{}(x)", "{}(x, y)", "{}('day', x)", "{}('day', x, y)", "{}(year FROM x)")


def function_key(node: exp.Func) -> str:
    """The name a function node is allowed under: sqlglot's canonical key, or the written name."""
    if isinstance(node, exp.Anonymous):
        return f"anonymous:{node.name.lower()}"
    return node.key


def _resolve_function(name: str) -> str:
    for shape in _PROBE_CALLS:
        try:
            node = sqlglot.parse_one(f"SELECT {shape.format(name)}", read="duckdb").expressions[0]
        except sqlglot.errors.SqlglotError:
            continue
        if isinstance(node, exp.Func) and not isinstance(node, exp.AggFunc):
            return function_key(node)
    raise ValueError(f"function {name!r} is not a scalar function sqlglot's DuckDB dialect knows")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_sql_chars: PositiveInt = Field(description="Characters of SQL text accepted.")
    max_tokens: PositiveInt = Field(description="Lexical tokens, counted before parsing.")
    max_nodes: PositiveInt = Field(description="Nodes of the parsed tree.")
    max_depth: PositiveInt = Field(le=64, description="Nesting of brackets and of the parsed tree.")
    max_joins: int = Field(ge=0)
    max_group_keys: int = Field(ge=0)
    max_aggregates: PositiveInt
    max_output_groups: PositiveInt = Field(description="Groups a result may hold before it is refused.")


class PrivacyDefaults(_Strict):
    default_epsilon: float = Field(gt=0, description="ε charged when a query names none.")
    max_epsilon: float = Field(gt=0, description="The most ε one query may spend.")
    alpha: float = Field(gt=0, lt=1, description="Intervals are reported at confidence 1 - alpha.")
    selection_delta: float = Field(
        gt=0, lt=1e-3, description="δ spent choosing which groups to release when keys have no public set.")
    suppression_weight: float = Field(
        0.2, gt=0, le=1, description="The weight, against 1 for a released output, of the count of persons "
        "that only decides suppression (disclosure.plan).")

    @model_validator(mode="after")
    def _default_within_max(self) -> PrivacyDefaults:
        if self.default_epsilon > self.max_epsilon:
            raise ValueError("default_epsilon must not exceed max_epsilon")
        return self


class Execution(_Strict):
    """How queries run, and the cost model their deadlines come from (enclave.execute.cost)."""

    timeout_seconds: float = Field(gt=0, le=600, description="The longest deadline a query may have; a query "
                                   "whose worst case needs more is refused before it runs.")
    memory_limit_mb: PositiveInt
    threads: PositiveInt
    base_seconds: float = Field(0.2, gt=0, le=60, description="The deadline of a query over no rows: the fixed part.")
    rows_per_second: PositiveInt = Field(1_000_000, description="Worst-case rows the engine is budgeted to get "
                                         "through per second where the bound is made per query (a join, or keys "
                                         "the build did not prepare); set it below what the machine does under load.")
    filtered_rows_per_second: PositiveInt = Field(10_000_000, description="The same, for a query bounded by the "
                                                  "build's prepared filter whose persons are first-row marks "
                                                  "(one scan and a hash aggregate over public keys).")
    distinct_rows_per_second: PositiveInt = Field(4_000_000, description="The same, for a query bounded by the "
                                                  "prepared filter whose persons are counted distinct (a WHERE, "
                                                  "or keys computed from the dimension columns).")
    concurrency: PositiveInt = Field(1, description="Queries the engine runs at once per process. Each holds "
                                     "its slot until its deadline, so a queue's wait depends on deadlines alone.")
    max_worst_case_rows: PositiveInt = Field(5_000_000, description="The most joined rows a query may produce in "
                                             "the worst case (memory bound); beyond it a query is refused unrun.")
    async_after_seconds: float | None = Field(None, gt=0, description="With a query queue (ENCLAVE_REDIS_URL), a "
                                              "query whose deadline is longer than this runs asynchronously unless "
                                              "the request asks for sync mode; unset: only when it asks for async.")


class Rules(_Strict):
    """The query rules: what SQL may say, how much it may cost and how its output is controlled."""

    version: Literal[1]
    aggregates: list[Aggregate] = Field(min_length=1)
    operators: list[str] = Field(description="Operator node keys of sqlglot (eq, and, add, case, ...).")
    functions: list[str] = Field(description="Scalar functions by the name researchers write.")
    cast_types: list[str]
    join_kinds: list[JoinKind]
    post_processing: list[PostProcessing] = Field(
        default_factory=list, description="SQL evaluated on the released, noisy values after protection: "
        "`arithmetic` (output columns that are +, -, *, / of aggregates and literals, with ROUND and NULLIF) and "
        "`having` (HAVING on aggregates, output columns and keys). Unlisted: refused, as before.")
    limits: Limits
    privacy: PrivacyDefaults
    suppression_threshold: int = Field(
        ge=2, description="Minimum noisy count of persons for a cell to be released; datasets may raise it."
    )
    execution: Execution

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, value: list[str]) -> list[str]:
        known = {klass.key for klass in _expression_classes()}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown operator keys: {unknown}")
        return value

    @field_validator("cast_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        for name in value:
            try:
                exp.DataType.build(name, dialect="duckdb")
            except sqlglot.errors.SqlglotError:
                raise ValueError(f"unknown cast type {name!r}") from None
        return [name.lower() for name in value]

    @cached_property
    def function_keys(self) -> frozenset[str]:
        """The allowed functions as node keys (see `function_key`)."""
        return frozenset(_resolve_function(name) for name in self.functions)

    @cached_property
    def cast_type_keys(self) -> frozenset[exp.DataType.Type]:
        return frozenset(exp.DataType.build(name, dialect="duckdb").this for name in self.cast_types)

    # Set by load_rules: the hash belongs to the file that was loaded, not to the model's fields.
    _sha256: str = PrivateAttr(default="")

    @property
    def sha256(self) -> str:
        """SHA-256 of the rules file as loaded: what audit records cite."""
        return self._sha256


def _expression_classes() -> list[type[exp.Expr]]:
    found: list[type[exp.Expr]] = []
    pending: list[type[exp.Expr]] = [exp.Expr]
    while pending:
        klass = pending.pop()
        found.append(klass)
        pending.extend(klass.__subclasses__())
    return found


def load_rules(path: Path) -> Rules:
    """Load and validate one rules file; resolve its function names now, so a bad name fails at start."""
    raw = path.read_bytes()
    rules = Rules.model_validate(yaml.safe_load(raw))
    rules._sha256 = hashlib.sha256(raw).hexdigest()
    _ = rules.function_keys
    return rules
