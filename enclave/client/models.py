"""What the enclave answers, as plain frozen dataclasses built from the API's JSON.

Plain dataclasses rather than the service's pydantic models: the client imports nothing of the server
side, so a researcher's environment needs httpx, pandas and tqdm only. Each class keeps to the API's
field names (the same vocabulary as the manifests and the rules: `epsilon`, `delta`, `alpha`, `bounds`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enclave.client.errors import Violation
from enclave.client.render import check_text, result_html, result_text

JSON = Mapping[str, Any]


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    title: str
    description: str

    @classmethod
    def from_json(cls, data: JSON) -> DatasetSummary:
        return cls(data["name"], data["title"], data["description"])


@dataclass(frozen=True)
class Column:
    """A column's public metadata. `keys` is its public key set (every key is released, zeros included);
    `bounds` are the bounds a measure is clamped to before it is summed."""

    name: str
    type: str
    role: str
    description: str = ""
    keys: tuple[str | int | bool, ...] | None = None
    bounds: tuple[float, float] | None = None


@dataclass(frozen=True)
class Table:
    name: str
    contributor: str
    description: str
    columns: dict[str, Column]


@dataclass(frozen=True)
class Dataset:
    """A dataset's public metadata: its tables and columns with their roles, public keys and bounds, and
    the contribution bounds and suppression threshold every query on it gets."""

    name: str
    title: str
    description: str
    privacy_unit: str
    max_rows_per_unit: int
    max_groups_per_unit: int
    suppression_threshold: int
    tables: dict[str, Table]

    @classmethod
    def from_json(cls, data: JSON) -> Dataset:
        tables = {name: Table(name, t["contributor"], t["description"], {
            column: Column(column, c["type"], c["role"], c.get("description", ""),
                           tuple(c["keys"]) if c.get("keys") is not None else None,
                           tuple(c["bounds"]) if c.get("bounds") is not None else None)  # type: ignore[arg-type]
            for column, c in t["columns"].items()}) for name, t in data["tables"].items()}
        return cls(data["name"], data["title"], data["description"], data["privacy_unit"],
                   data["max_rows_per_unit"], data["max_groups_per_unit"], data["suppression_threshold"], tables)


@dataclass(frozen=True)
class Rules:
    """The query rules in force (`rules` as the enclave loaded them) and their SHA-256, which every audit
    record of a query names."""

    sha256: str
    rules: dict[str, Any]


@dataclass(frozen=True)
class Budget:
    """A grant and what is left of it: ε and δ per researcher and dataset."""

    dataset: str
    purpose: str
    starts: str | None
    expires: str | None
    adhoc: bool
    active: bool
    epsilon_cap: float
    delta_cap: float
    epsilon_remaining: float
    delta_remaining: float

    @classmethod
    def from_json(cls, data: JSON) -> Budget:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Quantity:
    """One noised quantity of a plan: its mechanism, sensitivity and noise scale (in the column's own
    units), its share of ε and the weight that share was split by, and `accuracy`, the half-width of its
    interval at 1 - alpha."""

    column: str
    mechanism: str
    sensitivity: float
    scale: float
    epsilon: float
    accuracy: float
    weight: float = 1.0


@dataclass(frozen=True)
class Output:
    """One aggregate output column of a plan and, in words, the interval it will be released with at
    1 - alpha: exact for a count or sum, a formula in the group's count for a mean."""

    column: str
    kind: str
    interval: str


@dataclass(frozen=True)
class AccuracyTarget:
    """An accuracy target asked for (the half-width of an output's 1 - alpha interval) and the half-width
    the plan meets: at most the target, at the least ε that meets every target."""

    column: str
    target: float
    accuracy: float


@dataclass(frozen=True)
class Plan:
    """How a checked query would be protected and what it would cost, before anything is spent."""

    epsilon: float
    delta: float
    alpha: float
    group_selection: str
    suppression_threshold: int
    quantities: tuple[Quantity, ...]
    worst_case_rows: int | None = None
    deadline_seconds: float | None = None
    outputs: tuple[Output, ...] = ()
    accuracy_targets: tuple[AccuracyTarget, ...] = ()  # with targets: `epsilon` is what they cost

    @classmethod
    def from_json(cls, data: JSON) -> Plan:
        """A plan as the API sends it; `outputs` is absent from a server older than it."""
        return cls(data["epsilon"], data["delta"], data["alpha"], data["group_selection"],
                   data["suppression_threshold"], tuple(Quantity(**q) for q in data["quantities"]),
                   data.get("worst_case_rows"), data.get("deadline_seconds"),
                   tuple(Output(**o) for o in data.get("outputs", ())),
                   tuple(AccuracyTarget(**t) for t in data.get("accuracy_targets") or ()))


@dataclass(frozen=True)
class CheckReport:
    """The check's answer: accepted or not, every violation, and (accepted) the plan: cost, deadline and
    the interval each output will have. Checking spends nothing and runs nothing."""

    accepted: bool
    violations: tuple[Violation, ...]
    sql: str
    canonical_sql: str | None = None
    rules_sha256: str | None = None
    plan: Plan | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON, sql: str) -> CheckReport:
        plan = Plan.from_json(data["plan"]) if data.get("plan") else None
        return cls(data["accepted"], tuple(Violation.from_json(v) for v in data["violations"]), sql,
                   data.get("canonical_sql"), data.get("rules_sha256"), plan, data)

    def __str__(self) -> str:
        return check_text(self)


@dataclass(frozen=True)
class QuerySummary:
    query_id: str
    status: str
    dataset: str | None = None
    epsilon: float | None = None


@dataclass(frozen=True)
class QueryStatus:
    """An asynchronous query without a released answer yet: its state (queued, executing, protecting,
    failed, cancelled) and the share of the time to its answer that has passed. Both depend on the
    query's deadline and the clock only, never on the data."""

    query_id: str
    dataset: str
    state: str
    deadline_seconds: float
    progress: float
    charged: bool
    error: JSON | None = None

    @classmethod
    def from_json(cls, data: JSON) -> QueryStatus:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Parameter:
    """A template parameter: its type and the values a reviewer allowed."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str | int | float | bool, ...] | None = None
    description: str = ""

    def parse(self, text: str) -> str | int | float | bool:
        """A value typed on a command line, as this parameter's type (the enclave checks the range)."""
        if self.type == "integer":
            return int(text)
        if self.type == "number":
            return float(text)
        if self.type == "boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"{self.name} must be true or false")
            return text.lower() == "true"
        return text


@dataclass(frozen=True)
class Template:
    """An approved (or, for its proposer, a proposed) query template: fixed SQL with typed parameters, its
    per-run ε and run limit."""

    id: int
    status: str
    proposer: str
    approvals: tuple[str, ...]
    title: str
    purpose: str
    dataset: str
    sql: str
    parameters: tuple[Parameter, ...]
    epsilon: float
    run_limit: int
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> Template:
        spec = data["spec"]
        parameters = tuple(Parameter(p["name"], p["type"], p.get("min"), p.get("max"),
                                     tuple(p["choices"]) if p.get("choices") is not None else None,
                                     p.get("description", "")) for p in spec.get("parameters", ()))
        return cls(data["id"], data["status"], data["proposer"], tuple(data["approvals"]), spec["title"],
                   spec["purpose"], spec["dataset"], spec["sql"], parameters, spec["epsilon"], spec["run_limit"],
                   data)


@dataclass(frozen=True)
class Cell:
    """One released cell: its value (None when suppressed) and how it was protected."""

    value: str | int | float | bool | None
    mechanism: str | None = None
    scale: float | None = None
    interval: tuple[float, float] | None = None
    suppressed: bool = False
    reason: str | None = None
    derived: bool = False  # computed after protection from other noisy values


@dataclass(frozen=True)
class ResultColumn:
    name: str
    kind: str  # key, count, count_distinct_unit, sum, avg, derived

    @property
    def is_key(self) -> bool:
        return self.kind == "key"


@dataclass(frozen=True)
class Result:
    """A protected release: `df` (suppressed cells are `pd.NA`), `intervals`, `protection`, and what it
    cost. `epsilon_remaining`, `delta_remaining` and `audit_seq` are None when the enclave did not say
    (an asynchronous answer fetched later carries the release only; `Enclave.query` then fills the budget
    from GET /v1/budget)."""

    query_id: str
    dataset: str
    data_version: str
    rules_sha256: str
    epsilon: float
    delta: float
    alpha: float
    suppression_threshold: int
    columns: tuple[ResultColumn, ...]
    rows: tuple[tuple[Cell, ...], ...]
    epsilon_remaining: float | None = None
    delta_remaining: float | None = None
    audit_seq: int | None = None
    replayed: bool = False
    raw: JSON = field(default_factory=dict, repr=False, compare=False)
    having_removed: int | None = None  # groups HAVING dropped on their noisy values; None without HAVING

    @classmethod
    def from_json(cls, data: JSON) -> Result:
        columns = tuple(ResultColumn(c["name"], c["kind"]) for c in data["columns"])
        rows = tuple(tuple(Cell(c["value"], c.get("mechanism"), c.get("scale"),
                                tuple(c["interval"]) if c.get("interval") is not None else None,  # type: ignore[arg-type]
                                c.get("suppressed", False), c.get("reason"), c.get("derived", False)) for c in row)
                     for row in data["rows"])
        return cls(data["query_id"], data["dataset"], data["data_version"], data["rules_sha256"], data["epsilon"],
                   data["delta"], data["alpha"], data["suppression_threshold"], columns, rows,
                   data.get("epsilon_remaining"), data.get("delta_remaining"), data.get("audit_seq"),
                   data.get("replayed", False), data, data.get("having_removed"))

    @property
    def confidence(self) -> float:
        """The confidence of every interval, 1 - alpha."""
        return 1 - self.alpha

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms that protected this release, each once, in the order first met."""
        return tuple(dict.fromkeys(c.mechanism for row in self.rows for c in row if c.mechanism))

    @property
    def df(self) -> Any:
        """The released table as a pandas DataFrame, one column per output, in nullable dtypes (Int64,
        Float64, boolean, string): a suppressed cell, a mean with no estimate and a NULL key are `pd.NA`,
        never 0 and never NaN as a value."""
        from enclave.client.frames import values_frame

        return values_frame(self)

    @property
    def intervals(self) -> Any:
        """Per statistic cell, the bounds of its interval at `confidence`: the key columns, then
        `<column>_lower` and `<column>_upper` for each statistic (pd.NA where suppressed)."""
        from enclave.client.frames import intervals_frame

        return intervals_frame(self)

    @property
    def protection(self) -> Any:
        """How each statistic cell was protected, one row per cell: the group's keys, then `column`,
        `mechanism`, `scale` (the noise scale in the column's own units; for a mean, its noisy sum's),
        `lower`, `upper`, `suppressed` and `reason`."""
        from enclave.client.frames import protection_frame

        return protection_frame(self)

    def __repr__(self) -> str:
        return result_text(self)

    def _repr_html_(self) -> str:
        return result_html(self)
