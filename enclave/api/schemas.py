"""Request and response models of the HTTP API (pydantic at the edge)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave.access.keys import Role
from enclave.check.violations import Violation
from enclave.policy.rules import Epsilon


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemOut(BaseModel):
    """What is wrong with a delivered file, and where (never the value)."""

    code: str
    file: str
    message: str
    row: int | None = None
    column: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    violations: list[Violation]
    problems: list[ProblemOut] | None = None


class ErrorOut(BaseModel):
    ok: Literal[False] = False
    error: ErrorDetail


class Health(BaseModel):
    """`ok`, or (from `/readyz` only, with status 503) `unavailable`; `checks` names each readiness check
    (`database`, `redis`, `dataset:<name>`) with its outcome, never an error text."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "failed", "skipped", "no_data"]] = Field(default_factory=dict)


class ColumnOut(BaseModel):
    type: str
    role: str
    description: str = ""
    keys: list[str | int | bool] | None = None
    bounds: tuple[float, float] | None = None


class TableOut(BaseModel):
    contributor: str
    description: str
    columns: dict[str, ColumnOut]


class DatasetSummary(BaseModel):
    name: str
    title: str
    description: str


class DatasetDetail(DatasetSummary):
    privacy_unit: str
    max_rows_per_unit: int
    max_groups_per_unit: int
    suppression_threshold: int
    tables: dict[str, TableOut]


class RulesOut(BaseModel):
    sha256: str
    rules: dict[str, object]


class QueryIn(_In):
    dataset: str = Field(min_length=1, max_length=64)
    sql: str = Field(min_length=1, max_length=20_000)
    epsilon: Epsilon | None = None
    weights: dict[str, float] | None = Field(None, max_length=64, description="Each output column's weight in "
                                             "the split of ε (above 0, at most 100; 1 unless named): a weight of 2 "
                                             "gives that column's quantities twice the ε share of a column at 1. A "
                                             "column that is not an aggregate output is refused "
                                             "(422 unknown_output_column). Part of the request's identity: the same "
                                             "query at other weights is another release.")
    accuracy: dict[str, float] | None = Field(None, min_length=1, max_length=64, description="Instead of ε: "
                                              "the half-width of the 1 - alpha interval wanted for each named COUNT, "
                                              "COUNT(DISTINCT) or SUM output column. The plan is made at the least "
                                              "ε that meets every target (shown by the check before anything is "
                                              "spent; 400 accuracy_unreachable with the ε needed if above the "
                                              "rules' maximum). Not with epsilon (422 epsilon_and_accuracy).")
    purpose: str | None = Field(default=None, max_length=200)
    mode: Literal["auto", "sync", "async"] = Field("auto", description="sync: answered in this response, at the "
                                                   "query's deadline; async: 202 at once with the query id, to poll "
                                                   "at GET /v1/queries/{id} (needs a query queue); auto: async when "
                                                   "the deadline exceeds the rules' execution.async_after_seconds "
                                                   "and a queue is configured, else sync. Ignored by the check.")


class QuantityOut(BaseModel):
    column: str
    mechanism: str
    sensitivity: float
    scale: float
    epsilon: float
    weight: float = Field(1.0, description="Its weight in the split of ε: 1 for a released output's quantity, "
                          "or the researcher's weight of its output; the rules' suppression_weight for a count "
                          "of persons that only decides suppression (README, Privacy).")
    accuracy: float


class OutputPlanOut(BaseModel):
    column: str
    kind: str = Field(description="The output's aggregate: count, count_distinct_unit, sum or avg.")
    interval: str = Field(description="The interval it will be released with at 1 - alpha: '± <accuracy>' for a "
                          "count or sum (exact), a formula in the group's count n for a mean, or 'by simulation "
                          "at release'.")


class AccuracyTargetOut(BaseModel):
    column: str
    target: float = Field(description="The half-width asked for.")
    accuracy: float = Field(description="The half-width of the column's 1 - alpha interval under the plan: at "
                            "most the target, and equal to it for the target that decides the ε.")


class PlanOut(BaseModel):
    worst_case_rows: int | None = Field(None, description="The most joined rows the query can produce, from the "
                                        "contribution bounds and the tables' sizes.")
    deadline_seconds: float | None = Field(None, description="The answer comes this long after the query starts, "
                                           "released or failed, whatever the data.")
    epsilon: float
    delta: float
    alpha: float
    group_selection: str
    suppression_threshold: int
    quantities: list[QuantityOut]
    outputs: list[OutputPlanOut] = Field(description="Each aggregate output column and the interval it will be "
                                         "released with, before anything is spent.")
    accuracy_targets: list[AccuracyTargetOut] | None = Field(None, description="With accuracy targets: each "
                                                             "target and the half-width the plan meets; `epsilon` "
                                                             "is what they cost.")


class CheckOut(BaseModel):
    accepted: bool
    violations: list[Violation]
    canonical_sql: str | None = None
    rules_sha256: str | None = None
    plan: PlanOut | None = None


class QuerySummary(BaseModel):
    query_id: str
    status: Literal["pending", "released", "failed"]
    dataset: str | None = None
    epsilon: float | None = None


class QueryStatus(BaseModel):
    """An asynchronous query that has no released answer (yet). Its state and progress depend on the
    query's deadline (set before it ran) and the clock only, never on when the engine finished."""

    query_id: str
    dataset: str
    state: Literal["queued", "executing", "protecting", "failed", "cancelled"]
    deadline_seconds: float = Field(description="How long the query runs once a worker starts it, released or "
                                    "failed, whatever the data.")
    progress: float = Field(ge=0, le=1, description="The share of the time to the answer that has passed.")
    charged: bool = Field(description="Its privacy cost is spent (a worker started it); a cancelled query that "
                          "was not charged spent nothing.")
    error: ErrorDetail | None = Field(None, description="Why it failed (state failed).")


class BudgetOut(BaseModel):
    dataset: str
    purpose: str
    starts: date | None
    expires: date | None
    adhoc: bool
    active: bool
    epsilon_cap: float
    delta_cap: float
    epsilon_remaining: float
    delta_remaining: float


class GrantIn(_In):
    researcher: str = Field(min_length=1, max_length=100)
    dataset: str = Field(min_length=1, max_length=64)
    purpose: str = Field(min_length=1, max_length=200)
    starts: date | None = None
    expires: date | None = None
    epsilon_cap: float = Field(gt=0, le=1000)
    delta_cap: float = Field(ge=0, lt=1e-2)
    adhoc: bool = True


class ReasonIn(_In):
    reason: str = Field(min_length=3, max_length=500)


class PrincipalIn(_In):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")
    roles: list[Role] = Field(min_length=1)


class KeyIn(_In):
    principal: str = Field(min_length=1, max_length=100)


class KeyOut(BaseModel):
    key_id: str
    principal: str
    key: str = Field(description="The API key. Shown once: only its hash is kept.")


class Done(BaseModel):
    ok: Literal[True] = True
    audit_seq: int | None = None


class EventsOut(BaseModel):
    events: list[dict[str, object]]
    next_after: int | None = Field(description="Pass as `after` to get the next page; null at the end.")


class VerifyOut(BaseModel):
    ok: bool
    records: int
    checkpoints: int
    problem: str | None = None
    differences: list[str] = []  # live governed tables vs the log's projection, one line each


class ProofOut(BaseModel):
    """A record's RFC 9162 inclusion proof in a signed checkpoint's tree; `enclave audit verify-proof` checks
    it offline with the public key alone."""

    seq: int
    record: str = Field(description="The record's canonical JSON, as stored: its Merkle leaf is SHA-256(0x00 || "
                                    "record), its hash SHA-256(record).")
    hash: str
    leaf_index: int = Field(description="seq - 1: leaves are numbered from 0.")
    tree_size: int = Field(description="The records the checkpoint signed (its `size`).")
    path: list[str] = Field(description="The audit path (RFC 9162 2.1.3.1), hex, from the leaf up.")
    checkpoint: dict[str, object] = Field(description="The signed checkpoint, as stored: `{checkpoint: {size, "
                                                      "root, time, key_id}, signature}`.")


class DeliveredFileOut(BaseModel):
    kind: str
    name: str
    sha256: str
    rows: int


class LinkageOut(BaseModel):
    threshold: float
    records: int
    persons: int
    keys_kept: int
    seconds: float


class OnboardedOut(BaseModel):
    data_version: str
    files: list[DeliveredFileOut] = []
    linkage: LinkageOut | None = None


class LinkIn(_In):
    threshold: float = Field(gt=0, lt=1, description="Match probability at or above which rows are one person.")


class ConsentIn(_In):
    contributor: str = Field(min_length=1, max_length=64)
    local_id: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=200)
    given: date
    expires: date | None = None


class ConsentsIn(_In):
    statements: list[ConsentIn] = Field(min_length=1, max_length=10_000)


class RevokeConsentIn(_In):
    contributor: str = Field(min_length=1, max_length=64)
    local_id: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=200)


class VersionOut(BaseModel):
    data_version: str
