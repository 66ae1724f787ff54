"""A template's review report: what a reviewer decides on, built from the template, the rules and the manifest.

The report says where each parameter slot is in the SQL, whether the check accepts the template (with
example values) and which rule decides each part of it, the SQL the enclave will execute (with its keyed
row-order salt hidden: it is a secret), the tables and columns it touches, its cost per run and in total,
and warnings where a setting weakens protection:

- `epsilon_above_default`: the per-run ε is above the rules' default ε per query;
- `total_above_grant_cap`: ε per run times the run limit exceeds the ε cap of some grant on the dataset, so the
  template alone could use up that researcher's whole budget;
- `narrow_filter`: a parameter is compared in WHERE, so each run can look at one slice of the data (a single
  value of a column for `=`); slices can hold few persons (their groups are then suppressed), and different
  runs can be compared with each other, up to the run limit;
- `noisy_group_selection`: a grouping key has no public key set, so groups are chosen by a noisy threshold
  that costs δ per run (a group may be missing from one run and present in another).

Nothing in it comes from data: only the template, the rules, the manifest and the tables' public sizes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from enclave.check.query import DerivedColumn, KeyColumn
from enclave.check.violations import Violation, position
from enclave.disclosure.plan import PlanError, PrivacyPlan
from enclave.pipeline import Enclave, UnknownDataset
from enclave.rewrite import RewrittenQuery
from enclave.templates.model import TemplateSpec

SALT_SLOT = "row_order_key"
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Like, exp.ILike)


@dataclass(frozen=True)
class Slot:
    """Where a parameter is written in the template's SQL (1-based line and column), as written."""

    name: str
    line: int
    col: int
    text: str


@dataclass(frozen=True)
class Decision:
    """One part of the template, what the enclave does with it, and the rule that decides it."""

    subject: str
    decision: str
    rule: str


@dataclass(frozen=True)
class Warning:
    code: str
    message: str


@dataclass
class Report:
    accepted: bool
    slots: list[Slot]
    violations: list[Violation] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rewritten_sql: str | None = None
    tables: dict[str, list[str]] = field(default_factory=dict)
    plan: PrivacyPlan | None = None
    worst_case_rows: int | None = None
    deadline_seconds: float | None = None
    warnings: list[Warning] = field(default_factory=list)


def slots(spec: TemplateSpec) -> list[Slot]:
    """Every `$name` or `:name` of a declared parameter in the SQL, in order, with its position."""
    declared = {p.name for p in spec.parameters}
    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(spec.sql)
    except sqlglot.errors.SqlglotError:
        return []
    found = []
    for sign, name in itertools.pairwise(tokens):
        if (sign.token_type in (TokenType.PARAMETER, TokenType.COLON) and name.start == sign.end + 1
                and name.text in declared):
            line, col = position(spec.sql, sign.start)
            found.append(Slot(name.text, line, col, spec.sql[sign.start:name.end + 1]))
    return found


def hidden_salt(sql: str) -> str:
    """The executed SQL with the keyed salt of HASH(salt, ...) shown as a named slot, never its value."""
    tree = sqlglot.parse_one(sql, read="duckdb")

    def hide(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Anonymous) and str(node.this).upper() == "HASH" and node.expressions and (
                isinstance(node.expressions[0], exp.Literal)):
            node.expressions[0].replace(exp.Placeholder(this=SALT_SLOT))
        return node

    return tree.transform(hide, copy=False).sql("duckdb", pretty=True)


def _touched(rewritten: RewrittenQuery) -> dict[str, list[str]]:
    tree = rewritten.checked.tree
    names = {table.alias_or_name: table.name for table in tree.find_all(exp.Table)}
    touched: dict[str, set[str]] = {name: set() for name in names.values()}
    for column in tree.find_all(exp.Column):
        if column.table in names:
            touched[names[column.table]].add(column.name)
    return {table: sorted(columns) for table, columns in sorted(touched.items())}


def _decisions(enclave: Enclave, spec: TemplateSpec, rewritten: RewrittenQuery, plan: PrivacyPlan,
               tables: dict[str, list[str]]) -> list[Decision]:
    manifest, rules = enclave.manifest(spec.dataset), enclave.rules
    out = [Decision(f"table {name}", f"read, from {manifest.tables[name].contributor}'s data; columns "
                    f"{', '.join(columns) or 'none'}", "manifest tables and column roles (unknown_table, "
                    "unknown_column, restricted_column)") for name, columns in tables.items()]
    checked = rewritten.checked
    for column in (*checked.columns, *checked.hidden):
        if isinstance(column, KeyColumn):
            decision = ("grouping key; every key of its public key set is released, zeros included"
                        if plan.groups is not None else
                        f"grouping key without a public key set; a group is released only if its noisy count "
                        f"of persons reaches {plan.selection_threshold} (costs δ)")
            rule = "manifest keys" if plan.groups is not None else "privacy.selection_delta"
        elif isinstance(column, DerivedColumn):
            decision = (f"derived: {column.expr.sql('duckdb', comments=False)}, computed from the noisy aggregates "
                        "after protection (never from true values); the arithmetic itself costs nothing")
            rule = "post_processing (arithmetic)"
        else:
            low_high = f", clamped to [{column.bounds[0]:g}, {column.bounds[1]:g}]" if column.bounds else ""
            decision = f"{column.function.upper()}{low_high}, noised with OpenDP's discrete Laplace"
            rule = "aggregates" + (" and the bounds of its columns (unbounded_aggregate)" if low_high else "")
            if column.hidden:
                decision += "; used only by derived columns or HAVING, not released"
        out.append(Decision(f"{'hidden' if getattr(column, 'hidden', False) else 'output'} {column.name}", decision,
                            rule))
    if checked.having is not None:
        out.append(Decision("having", f"{checked.having.sql('duckdb', comments=False)}: drops groups by their noisy "
                            "values after protection (never by true values)", "post_processing (having)"))
    bounds = manifest.contribution_bounds
    out += [
        Decision("each person", f"at most {bounds.max_rows_per_unit} rows and {bounds.max_groups_per_unit} groups "
                 "per run, chosen by a keyed hash", "manifest contribution_bounds"),
        Decision("small groups", f"a group whose noisy count of persons is below {plan.suppression_threshold} "
                 "has every statistic suppressed", "suppression_threshold (the dataset's, if higher)"),
        Decision("cost", f"ε {plan.epsilon:g} per run, split equally over {len(plan.quantities)} noised "
                 f"quantities; δ {plan.delta:g}", f"privacy.max_epsilon ({rules.privacy.max_epsilon:g})"),
    ]
    if manifest.consent_required:
        out.append(Decision("consent", "only persons with valid consent for the grant's purpose",
                            "manifest consent_required"))
    return out


def _filtered_parameters(spec: TemplateSpec) -> list[str]:
    try:
        tree = sqlglot.parse_one(spec.sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return []
    where = tree.args.get("where")
    if where is None:
        return []
    names = []
    for comparison in where.find_all(*_COMPARISONS):
        names += [p.name for p in comparison.find_all(exp.Placeholder) if p.name not in names]
    return names


def _warnings(enclave: Enclave, spec: TemplateSpec, plan: PrivacyPlan | None, largest_cap: float | None
              ) -> list[Warning]:
    rules = enclave.rules
    out = []
    if spec.epsilon > rules.privacy.default_epsilon:
        out.append(Warning("epsilon_above_default", f"Each run spends ε {spec.epsilon:g}, above the rules' "
                           f"default of {rules.privacy.default_epsilon:g} per query."))
    total = spec.epsilon * spec.run_limit
    if largest_cap is not None and total > largest_cap:
        out.append(Warning("total_above_grant_cap", f"{spec.run_limit} runs at ε {spec.epsilon:g} spend ε "
                           f"{total:g}, more than a grant's cap on {spec.dataset} (ε {largest_cap:g}): this "
                           "template alone could use up a researcher's budget."))
    for name in _filtered_parameters(spec):
        out.append(Warning("narrow_filter", f"Parameter {name} filters rows: each run can look at one slice of the "
                           f"data, and up to {spec.run_limit} runs can be compared. A slice can hold few persons "
                           "(its groups are then suppressed)."))
    if plan is not None and plan.groups is None:
        out.append(Warning("noisy_group_selection", "A grouping key has no public key set: groups are chosen by "
                           f"a noisy threshold, at δ {plan.delta:g} per run, and may differ between runs."))
    return out


def report(enclave: Enclave, spec: TemplateSpec, largest_cap: float | None) -> Report:
    """The review report of a template, checked now with example values for its parameters."""
    found = slots(spec)
    try:
        prepared = enclave.prepare(spec.dataset, spec.example_sql())
    except UnknownDataset:
        return Report(False, found, [], warnings=_warnings(enclave, spec, None, largest_cap))
    except (sqlglot.errors.SqlglotError, ValueError):
        violations = list(enclave.check(spec.dataset, spec.sql).violations)
        return Report(False, found, violations, warnings=_warnings(enclave, spec, None, largest_cap))
    if prepared.rewritten is None or prepared.cost is None:
        return Report(False, found, list(prepared.result.violations),
                      warnings=_warnings(enclave, spec, None, largest_cap))
    try:
        plan = enclave.plan(spec.dataset, prepared.rewritten, spec.epsilon)
    except PlanError as error:
        return Report(False, found, [], [Decision("cost", error.message, error.code)],
                      warnings=_warnings(enclave, spec, None, largest_cap))
    tables = _touched(prepared.rewritten)
    return Report(True, found, [], _decisions(enclave, spec, prepared.rewritten, plan, tables),
                  hidden_salt(prepared.rewritten.sql), tables, plan, prepared.cost.worst_case_rows,
                  prepared.cost.deadline_seconds, _warnings(enclave, spec, plan, largest_cap))
