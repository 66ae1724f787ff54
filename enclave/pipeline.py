"""The enclave's pipeline, in the order a query goes through it.

    check (parse, grammar, semantics, qualify)   enclave.check       no data touched
    rewrite (bound, clamp, guard, regenerate)    enclave.rewrite     no data touched
    plan privacy (mechanisms, scales, cost)      enclave.disclosure  no data touched
    reserve budget + record the charge           enclave.budget + enclave.audit, one transaction
    execute (locked-down DuckDB)                 enclave.execute
    protect (noise, suppression, rounding)       enclave.disclosure
    record the release                           enclave.audit
    respond

`Enclave.query` runs them top to bottom. A refusal at any stage is recorded; a failure after the charge
is recorded and the charge stays spent (a query that may have executed has spent its budget, whatever
happened after, so a failure can never be used to get a refund and try again for free).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from enclave.audit.postgres import PostgresBackend
from enclave.audit.records import sha256_text
from enclave.audit.signing import Signer, key_id, public_pem
from enclave.audit.sqlite import SqliteBackend
from enclave.audit.state import ensure_consistent
from enclave.audit.store import AuditStore, Backend, Transaction
from enclave.budget.ledger import BudgetError, Remaining, admit, find_grant, grant, remaining, reserve, today
from enclave.catalog import versions
from enclave.catalog.demo import DEFAULT_SEED, demo_key, ensure_demo
from enclave.catalog.manifest import Manifest, load_manifest
from enclave.catalog.versions import DataVersion
from enclave.check import CheckResult, Violation, check
from enclave.check.query import OutputColumn
from enclave.check.violations import at
from enclave.consent import registry
from enclave.disclosure import preview, replay
from enclave.disclosure.cache import ReleaseCache
from enclave.disclosure.plan import PlanError, PrivacyPlan, accuracy_met, plan_request, requested_epsilon
from enclave.disclosure.protect import protect
from enclave.disclosure.release import Release
from enclave.execute.cost import Cost, cost_of
from enclave.execute.engine import Engine
from enclave.execute.sandbox import EXECUTION_CODES, ExecutionError, RawResult, Sandbox
from enclave.execute.slots import Slots
from enclave.intake.identity import IdentityStore, StaleBuild
from enclave.ops import metrics
from enclave.policy import Rules, load_rules
from enclave.rewrite import RewrittenQuery, rewrite, sampling_salt
from enclave.settings import Settings

DEMO_RESEARCHER = "demo-researcher"


class UnknownDataset(LookupError):
    """The named dataset is not registered."""


# code -> meaning, for refusals and failures of a query; README.md documents each (a test checks it).
QUERY_CODES: dict[str, str] = {
    "check_failed": "The check refused the query; its violations are listed.",
    "no_data": "The dataset has no data yet: no delivery has been onboarded.",
    "data_changed": "The dataset changed (a delivery, re-link or re-key) while the query was prepared; nothing "
    "ran and nothing was spent: send it again.",
    "epsilon_out_of_range": "ε is not above 0 and at most the rules' maximum per query.",
    "unbounded_group_keys": "Grouping keys with neither a public key set nor a small bounded domain.",
    "unknown_output_column": "A weight or accuracy target names a column that is not an aggregate output of the "
    "query; the message names it (422).",
    "invalid_weight": "A weight is not a number above 0 and at most 100 (422).",
    "invalid_accuracy_target": "An accuracy target is not a positive half-width of a COUNT, COUNT(DISTINCT) or SUM "
    "output (a mean's depends on its group's count) (422).",
    "epsilon_and_accuracy": "Both ε and accuracy targets were given; the targets decide the ε (422).",
    "accuracy_unreachable": "The accuracy targets need more ε than the rules allow per query; the message says how "
    "much.",
    "no_grant": "The researcher has no grant on the dataset.",
    "grant_revoked": "The researcher's grant on the dataset was revoked.",
    "grant_not_started": "The researcher's grant on the dataset has not started yet.",
    "grant_expired": "The researcher's grant on the dataset has expired.",
    "templates_only": "The grant allows approved templates only, not ad-hoc SQL.",
    "template_not_found": "No such template, or not one this principal may see.",
    "template_not_approved": "The template is not approved (proposed, rejected or revoked).",
    "invalid_parameters": "The parameters do not match the template's declared names, types and ranges.",
    "run_limit_reached": "The researcher has run this template as often as it allows.",
    "review_not_allowed": "A template cannot be reviewed this way (own proposal, already decided, approved twice).",
    "budget_exceeded": "The query costs more ε or δ than the grant has left; nothing ran.",
    "request_in_progress": "An identical request is still running; its answer will be replayed.",
    "protection_failed": "The result could not be protected; nothing was released, the charge is spent.",
    "audit_unavailable": "The audit log could not record the release, so nothing was released; the charge is spent.",
    "job_abandoned": "An asynchronous query's workers stopped (killed or lost) more often than the retry limit "
    "allows; nothing was released, and a charge already recorded stays spent.",
}


class QueryError(Exception):
    """A query that was refused or failed; code and message are safe to show (no data, no paths).

    `answer_at` (a time.monotonic() value) is when it may be shown: the deadline of a query that was
    charged and then failed, so a failure comes at the same time as a release would; 0 for a refusal
    before any charge (which depends only on the query, the policy and the budget).
    """

    def __init__(self, code: str, message: str, violations: tuple[Violation, ...] = (),
                 answer_at: float = 0.0) -> None:
        if code not in QUERY_CODES and code not in EXECUTION_CODES:
            raise ValueError(f"undocumented query code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.violations = violations
        self.answer_at = answer_at


def hold_until(answer_at: float) -> None:
    """Wait, in this thread, until `answer_at`. A charged query waits so before its outcome is recorded
    (`Hooks.hold`), in the thread that runs it; the HTTP API then answers at once."""
    delay = answer_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class Superseded(Exception):
    """An asynchronous query's attempt that may no longer write its outcome: cancelled, or taken over by
    another worker. Raised inside the transaction that would have written it, so none of it is written."""


class Hooks:
    """What a caller adds to the pipeline's transactions; the default adds nothing (a synchronous request).

    An asynchronous query (enclave.jobs) writes its job's state in the same transaction as the audit
    record it goes with, charges under its job id, re-uses a charge it recorded before its worker died,
    and waits for the answer time in its own way (`hold`); every query writes the outcome of its charge
    only at its answer time, so nothing a researcher can see turns released or failed when the engine
    finished.
    """

    query_id: str | None = None  # charge under this id (a job's); None: a new one
    charged_key: str | None = None  # the request key of this job's recorded charge (a retry), else None

    def refused(self, tx: Transaction, error: QueryError) -> None:
        """A refusal before any charge is being recorded."""

    def charged(self, tx: Transaction, query_id: str, key: str, retried: bool) -> None:
        """The charge is being recorded (or, retried, re-used)."""

    def started(self, answer_at: float) -> None:
        """The query holds an execution slot and will be answered at `answer_at` (time.monotonic())."""

    def hold(self, answer_at: float) -> None:
        """Wait for the answer time before the outcome of a charged query is recorded. Recording it earlier
        would let the data show: an identical request waiting on the claim would get the replay, and a
        researcher's list of queries would show it released, when the engine finished."""
        hold_until(answer_at)

    def replayed(self, tx: Transaction, key: str) -> None:
        """An identical request's released answer is being given again."""

    def failed(self, tx: Transaction, error: QueryError) -> None:
        """A charged query's failure is being recorded."""

    def released(self, tx: Transaction, key: str) -> None:
        """The release is being recorded."""


SYNCHRONOUS = Hooks()


@dataclass(frozen=True)
class Planned:
    """A query checked, rewritten and planned, and the audit record of it so far: ready to charge."""

    prepared: Prepared
    plan: PrivacyPlan
    record: dict[str, object]
    alias: str | None = None  # the request as sent (enclave.disclosure.replay.alias_key), named at its release

    @property
    def deadline_seconds(self) -> float:
        assert self.prepared.cost is not None  # a prepared query with a rewrite always has its cost
        return self.prepared.cost.deadline_seconds


@dataclass(frozen=True)
class Prepared:
    """A query checked and rewritten against one data version: ready to plan and execute, or refused."""

    result: CheckResult
    rewritten: RewrittenQuery | None
    version: DataVersion | None
    cost: Cost | None = None

    @property
    def data_version(self) -> str | None:
        return self.version.label if self.version else None


@dataclass(frozen=True)
class ConsentSnapshot:
    """The persons a query may use, for datasets that require consent; its summary is audited."""

    keys: tuple[str, ...]
    summary: dict[str, object]


def load_manifests(datasets_dir: Path, rules: Rules) -> dict[str, Manifest]:
    """Every `datasets/<name>/manifest.yaml`; a manifest may tighten the rules, never loosen them."""
    manifests = {}
    for path in sorted(datasets_dir.glob("*/manifest.yaml")):
        manifest = load_manifest(path)
        threshold = manifest.suppression_threshold
        if threshold is not None and threshold < rules.suppression_threshold:
            raise ValueError(f"{path}: suppression_threshold {threshold} is below the rules' "
                             f"{rules.suppression_threshold}; a dataset may raise it, never lower it")
        manifests[manifest.name] = manifest
    return manifests


def plan_summary(plan: PrivacyPlan, columns: Sequence[OutputColumn], cost: Cost | None = None) -> dict[str, object]:
    """The plan as recorded and shown: no data in it, only mechanisms, scales and costs, the interval each
    output column will have, and (with the query's cost) its worst case and the deadline it will be
    answered at; a plan made for accuracy targets lists each with the half-width it meets."""
    timing = {"worst_case_rows": cost.worst_case_rows, "deadline_seconds": cost.deadline_seconds} if cost else {}
    targets = {"accuracy_targets": [asdict(met) for met in accuracy_met(plan, plan.targets)]} if plan.targets else {}
    return {**timing, **targets,
        "epsilon": plan.epsilon, "delta": plan.delta, "alpha": plan.alpha,
        "group_selection": "public keys" if plan.groups is not None else f"threshold {plan.selection_threshold}",
        "suppression_threshold": plan.suppression_threshold,
        "quantities": [{"column": q.column, "mechanism": q.mechanism, "sensitivity": q.sensitivity,
                        "scale": q.scale, "epsilon": q.epsilon, "weight": q.weight, "accuracy": q.accuracy}
                       for q in plan.quantities],
        "outputs": [asdict(output) for output in preview.outputs(plan, columns)],
    }


@contextmanager
def _stage(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the wall time of a stage to `timings` (when the caller asked for them); always to the metrics."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        metrics.observe_stage(name, elapsed)
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + elapsed


@lru_cache(maxsize=1024)
def _release_of(payload: str) -> Release:
    """A released answer, parsed once: a payload is final for its request key, and replays copy it."""
    return Release.model_validate_json(payload)


def open_backend(settings: Settings) -> Backend:
    """The state store's database: PostgreSQL when `database_url` is set, else SQLite under audit_path."""
    if settings.database_url:
        return PostgresBackend(settings.database_url, settings.admin_database_url,
                               pool_size=settings.database_pool_size, separate_owner=settings.mode == "production")
    return SqliteBackend(settings.audit_path / "log.sqlite3")


class Enclave:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = load_rules(settings.rules_file)
        self.manifests = load_manifests(settings.datasets_dir, self.rules)
        self.audit, self.public_key_path = self.open_audit(settings)
        ensure_consistent(self.audit)  # never serve on governed state the log does not explain
        self._sandboxes: dict[str, Engine] = {}
        self._identities: dict[str, IdentityStore] = {}
        self._snapshots: OrderedDict[tuple[str, str, str, dt.date], ConsentSnapshot] = OrderedDict()
        self._bound: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._lock = threading.RLock()
        self._slots = Slots(settings.home / "run", self.rules.execution.concurrency)
        self.namespace = self.namespace_of(self.audit)
        self.answers = ReleaseCache.connect(settings.redis_url, self.namespace)

    @staticmethod
    def open_audit(settings: Settings) -> tuple[AuditStore, Path]:
        """The audit store and the public key beside it, without the start-up state check: what
        `enclave audit` needs to export, checkpoint and verify a store the enclave refuses to run on."""
        signer = Signer.load_or_create(settings.home / "secrets" / "audit-ed25519.pem")
        store = AuditStore(open_backend(settings), signer, settings.checkpoint_every)
        public = settings.audit_path / "public-key.pem"
        public.parent.mkdir(parents=True, exist_ok=True)
        if not public.exists() or public.read_bytes() != public_pem(signer.public):
            public.write_bytes(public_pem(signer.public))
        return store, public

    @staticmethod
    def namespace_of(audit: AuditStore) -> str:
        """The prefix of this enclave's keys in Redis: one per audit store (its signing key), so enclaves
        that share a Redis never mix their queues or cached answers."""
        return f"enclave:{key_id(audit.signer.public)[:16]}"

    def manifest(self, dataset: str) -> Manifest:
        try:
            return self.manifests[dataset]
        except KeyError:
            raise UnknownDataset(dataset) from None

    def check(self, dataset: str, sql: str) -> CheckResult:
        """Check only: no data touched, nothing spent."""
        return check(sql, self.rules, self.manifest(dataset))

    def version(self, dataset: str) -> DataVersion:
        """The dataset's current data version (read afresh: a change takes effect at the next query)."""
        self.manifest(dataset)
        with self.audit.reading() as connection:
            found = versions.current(connection, dataset)
        if found is None and dataset == "demo":
            found = self._adopt_demo()
        if found is None:
            raise QueryError("no_data", QUERY_CODES["no_data"])
        return found

    def _adopt_demo(self) -> DataVersion:
        """The demo's first version: generate it (through the intake path) and record what made it."""
        with self._lock:
            data = ensure_demo(self.manifest("demo"), self.settings.data_dir, children=self.settings.demo_children)
            with self.audit.transaction() as tx:
                found = versions.current(tx.connection, "demo")
                if found is None:
                    found = versions.record(tx, "demo-steward", "demo", "demo generated", build=data.data_version,
                                            database=data.database, rows=data.summary["rows"])  # type: ignore[arg-type]
                    for delivery in data.summary["deliveries"]:  # type: ignore[union-attr]
                        tx.append("data.delivered", "demo-steward", "allow", [], dataset="demo", **delivery,
                                  linkage=data.summary["linkage"], data_version=found.label)
            return found

    def identity(self, dataset: str) -> IdentityStore:
        """The dataset's identity store, `<data>/<dataset>/identity.duckdb` (opened on first use). Never handed
        to a query path. The demo's starts as a copy of the generated one, which stays untouched."""
        manifest = self.manifest(dataset)
        with self._lock:
            if dataset not in self._identities:
                path = self.settings.data_dir / dataset / "identity.duckdb"
                if dataset != "demo":
                    secret = self.settings.secret(f"identity-{dataset}")
                else:  # demo only: its secret derives from the public seed, like its generated data
                    secret = demo_key(DEFAULT_SEED, "identity")
                    if not path.exists():
                        generated = ensure_demo(manifest, self.settings.data_dir, children=self.settings.demo_children)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(generated.identity, path)
                self._identities[dataset] = IdentityStore(path, manifest, secret)
            return self._identities[dataset]

    def _sandbox(self, version: DataVersion) -> Engine:
        """The engine of a data version (ENCLAVE_ENGINE: DuckDB's sandbox, or Spark), opened once."""
        with self._lock:
            key = str(version.database)
            if key not in self._sandboxes:
                # a backstop only: plans bound every query's groups far below it (see disclosure.keys)
                groups = 100 * self.rules.limits.max_output_groups
                if self.settings.engine == "spark":
                    from enclave.execute.spark import SparkEngine  # pyspark only where Spark is chosen

                    self._sandboxes[key] = SparkEngine(version.database, self.rules.execution, groups,
                                                       self.settings.spark_master)
                else:
                    self._sandboxes[key] = Sandbox(version.database, self.rules.execution, groups)
            return self._sandboxes[key]

    def data_version(self, dataset: str) -> str:
        version = self.version(dataset)
        self._sandbox(version)
        return version.label

    def consent_snapshot(self, dataset: str, version: DataVersion, purpose: str) -> ConsentSnapshot | None:
        """The persons with consent for `purpose` valid today, as of the version's consent sequence;
        None where the dataset does not require consent."""
        if not self.manifest(dataset).consent_required:
            return None
        on = today()
        cache_key = (dataset, version.label, purpose, on)
        with self._lock:
            if cache_key in self._snapshots:
                self._snapshots.move_to_end(cache_key)
                return self._snapshots[cache_key]
        with self.audit.reading() as connection:
            statements = registry.latest(connection, dataset, purpose, version.consent_seq)
        try:
            keys = tuple(self.identity(dataset).consented_keys(statements, on, version.build))
        except StaleBuild:
            raise QueryError("data_changed", QUERY_CODES["data_changed"]) from None
        snapshot = ConsentSnapshot(keys, {
            "purpose": purpose, "on": on.isoformat(), "consent_seq": version.consent_seq, "persons": len(keys),
            "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()})
        with self._lock:
            self._snapshots[cache_key] = snapshot
            while len(self._snapshots) > 16:
                self._snapshots.popitem(last=False)
        return snapshot

    def prepare(self, dataset: str, sql: str) -> Prepared:
        """Check, rewrite against the dataset's current data version, and have the engine bind it.

        Binding plans the query without reading data, so a type error is refused here, before any
        budget is spent, and says nothing about the data.
        """
        result = self.check(dataset, sql)
        if not result.accepted or result.query is None:
            return Prepared(result, None, None)
        return self._rewritten(dataset, sql, result, self.version(dataset))

    def _binds(self, version: DataVersion, sql: str, consent_required: bool) -> bool:
        """Whether the engine binds a rewritten query on a version: asked once per (version, SQL), since
        the answer depends on nothing else (the schema of a version never changes)."""
        cache_key = (str(version.database), sql)
        with self._lock:
            if cache_key in self._bound:
                self._bound.move_to_end(cache_key)
                return self._bound[cache_key]
        try:
            self._sandbox(version).bind(sql, () if consent_required else None)
            binds = True
        except ExecutionError:
            binds = False
        with self._lock:
            self._bound[cache_key] = binds
            while len(self._bound) > 4096:
                self._bound.popitem(last=False)
        return binds

    def _rewritten(self, dataset: str, sql: str, result: CheckResult, version: DataVersion) -> Prepared:
        """Rewrite an accepted query against a data version, bind it and cost its worst case."""
        assert result.query is not None
        sandbox = self._sandbox(version)
        salt = sampling_salt(self.settings.secret("sampling"), version.label)
        manifest = self.manifest(dataset)
        rewritten = rewrite(result.query, manifest, salt, sandbox.layout())
        try:
            executed = sandbox.sql_of(rewritten)
        except ExecutionError:
            violation = Violation("engine_unsupported", f"The dataset's engine ({sandbox.name}) cannot compute a "
                                  "construct of this query with the reference engine's meaning.",
                                  remedy="rewrite the query with the constructs the engine accepts (README: Engines)")
            return Prepared(CheckResult((violation,)), None, None)
        if not self._binds(version, executed, manifest.consent_required):
            violation = Violation("type_mismatch", "The query does not type-check: a value is compared with, or "
                                  "passed to, something of another type.", remedy="cast to a common type")
            return Prepared(CheckResult((violation,)), None, None)
        cost = cost_of(rewritten.plan, sandbox.table_rows(), manifest.contribution_bounds.max_rows_per_unit,
                       self.rules.execution)
        if not cost.within_limits:
            joins = result.query.tree.args.get("joins") or []
            execution = self.rules.execution
            violation = at("worst_case_too_large", f"In the worst case this query's tables join into "
                           f"{cost.worst_case_rows:,} rows ({cost.deadline_seconds:g} s); the rules allow "
                           f"{execution.max_worst_case_rows:,} rows and {execution.timeout_seconds:g} s.", sql,
                           joins[-1] if joins else None, "join fewer tables, or join a smaller table first "
                           "(each table keeps at most max_rows_per_unit rows of a person before it is joined)")
            return Prepared(CheckResult((violation,)), None, None)
        return Prepared(result, rewritten, version, cost)

    def plan(self, dataset: str, rewritten: RewrittenQuery, epsilon: float | None,
             weights: Mapping[str, float] | None = None, accuracy: Mapping[str, float] | None = None) -> PrivacyPlan:
        """Cost and accuracy of a rewritten query at ε (or at the least ε meeting `accuracy`, its targets'
        half-widths), split by its output columns' `weights`, before anything runs."""
        return plan_request(rewritten, self.manifest(dataset), self.rules, epsilon, weights, accuracy)

    def execute_unprotected(self, dataset: str, rewritten: RewrittenQuery, consent: ConsentSnapshot | None = None,
                            version: DataVersion | None = None, deadline_seconds: float | None = None) -> RawResult:
        """True aggregates of a rewritten query on a version (default: the current one) with a consent
        snapshot (required where the dataset requires consent), interrupted at the deadline. Internal:
        the protection stage's input, never a release."""
        if self.manifest(dataset).consent_required and consent is None:
            raise ValueError(f"dataset {dataset} requires consent: a query needs a consent snapshot")
        sandbox = self._sandbox(version or self.version(dataset))
        return sandbox.execute(sandbox.sql_of(rewritten), consent.keys if consent is not None else None,
                               deadline_seconds)

    def _purpose(self, researcher: str, dataset: str) -> str:
        with self.audit.transaction() as tx:
            found = find_grant(tx, researcher, dataset)
        return found.purpose if found is not None else ""

    def ensure_demo_grant(self) -> None:
        """The demo researcher's grant on the demo dataset, created once (and recorded) on first use."""
        with self.audit.transaction() as tx:
            if remaining(tx, DEMO_RESEARCHER, "demo") is None:
                grant(tx, "demo-steward", DEMO_RESEARCHER, "demo", self.settings.demo_epsilon_cap,
                      self.settings.demo_delta_cap)

    def _refuse(self, researcher: str, record: dict[str, object], error: QueryError,
                hooks: Hooks = SYNCHRONOUS) -> QueryError:
        reasons = [f"{v.code}: {v.message}" for v in error.violations] or [f"{error.code}: {error.message}"]
        with self.audit.transaction() as tx:
            tx.append("query.refused", researcher, "deny", reasons, **record, code=error.code)
            hooks.refused(tx, error)
        return error

    def query(self, researcher: str, dataset: str, sql: str, epsilon: float | None = None,
              timings: dict[str, float] | None = None, *, adhoc: bool = True, hold: bool = True,
              hooks: Hooks = SYNCHRONOUS, sent: Mapping[str, object] | None = None,
              weights: Mapping[str, float] | None = None, accuracy: Mapping[str, float] | None = None) -> Release:
        """The whole protected pipeline for one request; raises QueryError when refused or failed.

        A query that is charged is answered at its deadline (`Prepared.cost`, set from its worst case
        before it runs), released or failed, never before: with `hold` this waits for it; without, the
        caller must (`Release.answer_at`, `QueryError.answer_at`). `adhoc` is False for a run of an
        approved template (allowed by templates-only grants). `timings`, when given, receives the seconds
        spent in each stage (for bench/). `hooks` are an asynchronous query's (enclave.jobs). `sent` is the
        request as the researcher sent it (default: the SQL and ε; a template run's: the template and its
        parameters), which a repeat of it is replayed by (`plan_or_replay`). `weights` and `accuracy` are
        the researcher's, by output column (`plan`).
        """
        try:
            planned = self.plan_or_replay(researcher, dataset, sql, epsilon, timings, hooks, sent, weights, accuracy)
            release = planned if isinstance(planned, Release) else self.run_planned(
                researcher, planned, timings, adhoc, hooks)
        except QueryError as error:  # charged, then failed, when it has a deadline (answer_at)
            metrics.query_decided("failed" if error.answer_at else "refused", dataset, error.code)
            if hold:
                hold_until(error.answer_at)
            raise
        metrics.query_released(release)
        if hold:
            hold_until(release.answer_at)
        return release

    def plan_or_replay(self, researcher: str, dataset: str, sql: str, epsilon: float | None,
                       timings: dict[str, float] | None = None, hooks: Hooks = SYNCHRONOUS,
                       sent: Mapping[str, object] | None = None, weights: Mapping[str, float] | None = None,
                       accuracy: Mapping[str, float] | None = None) -> Planned | Release:
        """Check, rewrite and plan a query; a refusal is recorded and raised (QueryError). A repeat of a
        released request is answered instead (enclave.disclosure.replay): a request as sent before at
        once, before it is parsed; one whose checked form was released, right after the check (unless
        it gives accuracy targets: their ε is known only once it is planned, and its release is keyed by it)."""
        given = {name: dict(value) for name, value in (("weights", weights), ("accuracy", accuracy)) if value}
        record = {**self._submitted(dataset, sql), **given}
        try:
            with _stage(timings, "replay"):
                version, alias, found = self._as_sent(researcher, dataset, sent if sent is not None else {
                    "sql": sql, "epsilon": epsilon, **given})
        except QueryError as error:
            raise self._refuse(researcher, record, error, hooks) from None
        if found is not None:
            return self._replay_released(researcher, dataset, found, {**found.record, **record}, None, hooks)
        try:
            with _stage(timings, "check+rewrite+bind"):
                result = self.check(dataset, sql)
                if not result.accepted or result.query is None:
                    prepared = Prepared(result, None, None)
                else:
                    if accuracy is None:
                        key = replay.request_key(researcher, dataset, version.label, result.query.canonical_sql,
                                                 requested_epsilon(self.rules, epsilon), weights)
                        with self.audit.reading() as connection:
                            found = replay.released(connection, researcher, key)
                    if found is not None:
                        return self._replay_released(researcher, dataset, found, {**found.record, **record},
                                                     alias, hooks)
                    prepared = self._rewritten(dataset, sql, result, version)
        except QueryError as error:
            raise self._refuse(researcher, record, error, hooks) from None
        if prepared.rewritten is None or prepared.version is None:
            raise self._refuse(researcher, record, QueryError(
                "check_failed", "The query was refused by the check.", prepared.result.violations), hooks)
        try:
            with _stage(timings, "plan"):
                plan = self.plan(dataset, prepared.rewritten, epsilon, weights, accuracy)
        except PlanError as error:
            raise self._refuse(researcher, record, QueryError(error.code, error.message), hooks) from None
        return Planned(prepared, plan, record, alias)

    def admit(self, researcher: str, dataset: str, planned: Planned, *, adhoc: bool = True) -> str:
        """The request key of a planned query if its grant allows its charge now (or an identical request
        was released already, which a replay answers at no cost); else the refusal, recorded and raised.
        Charges nothing: an asynchronous query is charged when a worker starts it."""
        rewritten, version = planned.prepared.rewritten, planned.prepared.version
        assert rewritten is not None
        assert version is not None
        key = replay.request_key(researcher, dataset, version.label, rewritten.checked.canonical_sql,
                                 planned.plan.epsilon, planned.plan.weights)
        with self.audit.transaction() as tx:
            existing = replay.find(tx, key)
            if existing is not None and existing.status == "released":
                return key
            try:
                admit(tx, researcher, dataset, planned.plan.epsilon, planned.plan.delta, adhoc=adhoc)
            except BudgetError as error:
                refusal = QueryError(error.code, error.message)
                tx.append("query.refused", researcher, "deny", [f"{error.code}: {error.message}"],
                          **planned.record, code=error.code)
            else:
                return key
        raise refusal

    def run_planned(self, researcher: str, planned: Planned, timings: dict[str, float] | None = None,
                    adhoc: bool = True, hooks: Hooks = SYNCHRONOUS) -> Release:
        """Charge (or replay), execute, protect and record a planned query; the answer is not held: the
        caller waits for `answer_at` (as `query` does with `hold`)."""
        dataset = str(planned.record["dataset"])
        prepared, plan, record = planned.prepared, planned.plan, dict(planned.record)
        assert prepared.rewritten is not None
        assert prepared.version is not None
        rewritten, version = prepared.rewritten, prepared.version
        consent = None
        if self.manifest(dataset).consent_required:
            try:
                consent = self.consent_snapshot(dataset, version, self._purpose(researcher, dataset))
            except QueryError as error:
                raise self._refuse(researcher, record, error, hooks) from None
        engine = self._sandbox(version)
        record.update(data_version=version.label, engine=engine.name, canonical_sql=rewritten.checked.canonical_sql,
                      sql_executed_sha256=sha256_text(engine.sql_of(rewritten)),
                      plan=plan_summary(plan, rewritten.checked.columns, prepared.cost),
                      **({"consent": consent.summary} if consent is not None else {}))
        key = replay.request_key(researcher, dataset, version.label, rewritten.checked.canonical_sql, plan.epsilon,
                                 plan.weights)
        with _stage(timings, "reserve+audit"):
            reserved = self._reserve_or_replay(researcher, dataset, plan, key, record, adhoc, hooks, planned.alias)
        if isinstance(reserved, Release):
            return reserved
        query_id, left = reserved
        metrics.charged(dataset, plan.epsilon)
        cost = prepared.cost
        assert cost is not None  # a prepared query with a rewrite always has its cost
        answer_at = self._execution_slot(cost, timings)
        hooks.started(answer_at)
        failure: QueryError | None = None
        try:
            with _stage(timings, "execute"):
                raw = self.execute_unprotected(dataset, rewritten, consent, version, cost.deadline_seconds)
            with _stage(timings, "protect"):
                columns, rows, having_removed = protect(raw, rewritten, plan)
            if time.monotonic() > answer_at:  # an overrun: too late to answer on time, so a timeout, charged
                raise ExecutionError("execution_timeout")
        except ExecutionError as error:
            failure = QueryError(error.code, error.message, answer_at=answer_at)
        except Exception:  # never a partial release, never a trace: recorded, charge kept
            failure = QueryError("protection_failed", "The result could not be protected; nothing was released.",
                                 answer_at=answer_at)
        if failure is not None:
            hooks.hold(answer_at)
            raise self._failed(researcher, dataset, query_id, key, failure, hooks) from None
        release = Release(query_id=query_id, dataset=dataset, data_version=version.label, engine=engine.name,
                          rules_sha256=self.rules.sha256, epsilon=plan.epsilon, delta=plan.delta, alpha=plan.alpha,
                          suppression_threshold=plan.suppression_threshold, columns=columns, rows=rows,
                          having_removed=having_removed)
        payload = release.payload()
        suppressed = sum(1 for row in rows for cell in row if cell.suppressed)
        hooks.hold(answer_at)
        try:  # nothing is released unless its record is durably written first
            with _stage(timings, "record release"), self.audit.transaction() as tx:
                released = tx.append("query.released", researcher, "allow", [], query_id=query_id, dataset=dataset,
                                     data_version=version.label, engine=engine.name, groups=len(rows),
                                     cells=sum(len(row) for row in rows), suppressed_cells=suppressed,
                                     payload_sha256=sha256_text(payload))
                replay.complete(tx, key, payload, int(released["seq"]), record)
                if planned.alias is not None:
                    replay.remember(tx, planned.alias, key)
                hooks.released(tx, key)
        except Superseded:
            raise
        except Exception:
            raise QueryError("audit_unavailable", QUERY_CODES["audit_unavailable"], answer_at=answer_at) from None
        self.answers.put(key, payload)
        return release.model_copy(update={"audit_seq": released["seq"], "epsilon_remaining": left.epsilon,
                                          "delta_remaining": left.delta}).held_until(answer_at)

    def _execution_slot(self, cost: Cost, timings: dict[str, float] | None) -> float:
        """Wait for one of the engine's slots (enclave.execute.slots) and hold it until the query's answer
        time, which it returns: the deadline, when the engine stops, plus a fixed allowance
        (`base_seconds`) for protection and the release record."""
        held = cost.deadline_seconds + self.rules.execution.base_seconds
        with _stage(timings, "queue"):
            taken = self._slots.hold(held)
        return taken + held

    def replay_as_sent(self, researcher: str, dataset: str, sent: Mapping[str, object]) -> Release | None:
        """The released answer of a request sent before exactly so (`sent`: a template run's template and
        parameters; enclave.disclosure.replay), given again with the record it was first released with
        (the same SQL), recorded first; None if there is none, or no data yet."""
        try:
            _, _, found = self._as_sent(researcher, dataset, sent)
        except QueryError:
            return None
        return self._replay_released(researcher, dataset, found, found.record, None, SYNCHRONOUS) if found else None

    def _submitted(self, dataset: str, sql: str) -> dict[str, object]:
        """The audit record of a request as it arrived, before any stage has decided anything."""
        return {"dataset": dataset, "rules_sha256": self.rules.sha256, "sql_submitted": sql,
                "sql_submitted_sha256": sha256_text(sql)}

    def _as_sent(self, researcher: str, dataset: str,
                 sent: Mapping[str, object]) -> tuple[DataVersion, str, replay.Released | None]:
        """The dataset's current data version, the alias of a request as sent on it, and the release that
        alias names, if any (the version is read afresh, as `version` does). No snapshot is needed: an alias
        and a released answer never change once written, and the alias names the version it was read at."""
        self.manifest(dataset)
        with self.audit.glancing() as connection:
            version = versions.current(connection, dataset)
            if version is not None:
                alias = replay.alias_key(researcher, dataset, version.label, self.rules.sha256, sent)
                return version, alias, replay.aliased(connection, researcher, alias)
        version = self.version(dataset)  # none yet: the demo's is made now; else no_data
        return version, replay.alias_key(researcher, dataset, version.label, self.rules.sha256, sent), None

    def _replayed(self, tx: Transaction, researcher: str, dataset: str, payload: str, record: dict[str, object],
                  key: str, hooks: Hooks) -> Release:
        """Give a released answer again: its `query.replayed` record first, nothing spent."""
        answer = _release_of(payload)
        replayed = tx.append("query.replayed", researcher, "allow", [], **record, query_id=answer.query_id,
                             payload_sha256=sha256_text(payload))
        left = remaining(tx, researcher, dataset)
        hooks.replayed(tx, key)
        return answer.model_copy(update={
            "replayed": True, "audit_seq": replayed["seq"], "epsilon_remaining": left.epsilon if left else None,
            "delta_remaining": left.delta if left else None})

    def _replay_released(self, researcher: str, dataset: str, found: replay.Released, record: dict[str, object],
                         alias: str | None, hooks: Hooks) -> Release:
        """Replay a release found before the pipeline ran (one transaction), naming it by `alias` too."""
        def replayed(tx: Transaction) -> Release:
            answer = self._replayed(tx, researcher, dataset, found.payload, record, found.request_key, hooks)
            if alias is not None:
                replay.remember(tx, alias, found.request_key)
            return answer

        return self.audit.grouped(replayed)

    def _reserve_or_replay(self, researcher: str, dataset: str, plan: PrivacyPlan, key: str,
                           record: dict[str, object], adhoc: bool, hooks: Hooks = SYNCHRONOUS,
                           alias: str | None = None) -> tuple[str, Remaining] | Release:
        """Reserve the charge (recorded) or return the released answer of an identical request, from the
        shared cache (enclave.disclosure.cache) or the store, its `query.replayed` record written first.
        A job retried after its worker died re-uses the charge it recorded: one job, one charge."""
        if hooks.charged_key is not None and hooks.charged_key != key:  # retried on another data version
            assert hooks.query_id is not None
            raise self._failed(researcher, dataset, hooks.query_id, hooks.charged_key,
                               QueryError("data_changed", QUERY_CODES["data_changed"]), hooks)
        cached = self.answers.get(key)  # a released answer is final for its key: the cache holds no other
        deadline = time.monotonic() + self.rules.execution.timeout_seconds + 30
        while True:
            refusal: QueryError | None = None
            answer: Release | None = None
            with self.audit.transaction() as tx:
                payload = cached
                existing = replay.find(tx, key) if payload is None else None
                if existing is not None and existing.status == "released" and existing.payload is not None:
                    payload = existing.payload
                if payload is not None:
                    answer = self._replayed(tx, researcher, dataset, payload, record, key, hooks)
                    if alias is not None and existing is not None and existing.status == "released":
                        replay.remember(tx, alias, key)
                elif hooks.charged_key == key and hooks.query_id is not None:  # a retry: charged already
                    replay.claim(tx, key, hooks.query_id, researcher)
                    hooks.charged(tx, hooks.query_id, key, True)
                    left = remaining(tx, researcher, dataset)
                    assert left is not None  # it was charged on this grant
                    return hooks.query_id, left
                elif existing is None or not replay.is_live(existing):
                    try:
                        query_id, left, _ = reserve(tx, researcher, dataset, plan.epsilon, plan.delta, record,
                                                    adhoc=adhoc, query_id=hooks.query_id)
                    except BudgetError as error:
                        refusal = QueryError(error.code, error.message)
                        tx.append("query.refused", researcher, "deny", [f"{error.code}: {error.message}"],
                                  **record, code=error.code)
                        hooks.refused(tx, refusal)
                    else:
                        replay.claim(tx, key, query_id, researcher)
                        hooks.charged(tx, query_id, key, False)
                        return query_id, left
            if answer is not None:
                if cached is None and payload is not None:
                    self.answers.put(key, payload)
                return answer
            if refusal is not None:
                raise refusal
            if time.monotonic() > deadline:
                raise self._refuse(researcher, record, QueryError("request_in_progress", QUERY_CODES[
                    "request_in_progress"]), hooks)
            time.sleep(0.05)

    def _failed(self, researcher: str, dataset: str, query_id: str, key: str, error: QueryError,
                hooks: Hooks = SYNCHRONOUS) -> QueryError:
        with self.audit.transaction() as tx:
            tx.append("query.failed", researcher, "deny", [f"{error.code}: {error.message}"], query_id=query_id,
                      dataset=dataset, code=error.code)
            replay.fail(tx, key)
            hooks.failed(tx, error)
        return error

    def close(self) -> None:
        with self._lock:
            for sandbox in self._sandboxes.values():
                sandbox.close()
            self._sandboxes.clear()
            for store in self._identities.values():
                store.close()
            self._identities.clear()
            self.audit.close()
