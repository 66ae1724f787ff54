"""The template workflow: propose, review (approve, reject, revoke), run. Every step is an audit event.

A template is checked when it is proposed (with example values for its parameters), so reviewers only
see shapes the rules accept. The proposer can never approve it; a dataset may require two reviewers.
An approved template never changes: there is no route to edit one, a change is a new proposal. A run
reserves its slot against the run limit in a transaction before the query executes, so concurrent runs
cannot exceed it; a run that was refused, failed or replayed gives its slot back, in the transaction that
records that outcome, and a released run's `template.run` record commits with its release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import sqlglot

from enclave.audit.state import approvals_text, template_body
from enclave.audit.store import Connection, Transaction
from enclave.disclosure.plan import PlanError
from enclave.disclosure.release import Release
from enclave.pipeline import Enclave, Hooks, QueryError
from enclave.templates.model import TemplateSpec

Status = Literal["proposed", "approved", "rejected", "revoked"]


@dataclass(frozen=True)
class Template:
    id: int
    spec: TemplateSpec
    proposer: str
    status: Status
    approvals: tuple[str, ...]


def _row(row: tuple) -> Template:
    return Template(row[0], TemplateSpec.model_validate_json(row[1]), row[2], row[3], tuple(json.loads(row[4])))


def find(connection: Connection, template_id: int) -> Template | None:
    row = connection.execute("SELECT id, body, proposer, status, approvals FROM templates WHERE id = ?",
                                (template_id,)).fetchone()
    return _row(row) if row else None


def listing(tx: Transaction) -> list[Template]:
    return [_row(r) for r in tx.connection.execute("SELECT id, body, proposer, status, approvals FROM templates "
                                                    "ORDER BY id")]


def propose(enclave: Enclave, proposer: str, spec: TemplateSpec) -> Template:
    """Record a proposal, after checking its shape with example values and planning its per-run cost."""
    try:
        example = spec.example_sql()
    except sqlglot.errors.SqlglotError:  # the check says where, with the same positioned violation
        violations = enclave.check(spec.dataset, spec.sql).violations
        raise QueryError("check_failed", "The template's SQL does not parse.", violations) from None
    prepared = enclave.prepare(spec.dataset, example)
    if prepared.rewritten is None:
        raise QueryError("check_failed", "The template was refused by the check.", prepared.result.violations)
    try:
        enclave.plan(spec.dataset, prepared.rewritten, spec.epsilon)
    except PlanError as error:
        raise QueryError(error.code, error.message) from None
    with enclave.audit.transaction() as tx:
        body = spec.model_dump(mode="json")
        template_id = int(tx.connection.execute(
            "INSERT INTO templates (id, body, proposer, status, seq) "
            "VALUES ((SELECT coalesce(max(id), 0) + 1 FROM templates), ?, ?, ?, 0) RETURNING id",
            (template_body(body), proposer, "proposed")).fetchone()[0])
        record = tx.append("template.proposed", proposer, "allow", [], template_id=template_id,
                           dataset=spec.dataset, template=body)
        tx.connection.execute("UPDATE templates SET seq = ? WHERE id = ?", (record["seq"], template_id))
        return find(tx.connection, template_id)  # type: ignore[return-value]


def review(enclave: Enclave, reviewer: str, template_id: int, action: Literal["approve", "reject", "revoke"],
           reason: str) -> Template:
    with enclave.audit.transaction() as tx:
        template = find(tx.connection, template_id)
        if template is None:
            raise QueryError("template_not_found", "No such template.")
        approvals = template.approvals
        if action == "approve":
            if template.status != "proposed" or reviewer in (template.proposer, *approvals):
                raise QueryError("review_not_allowed", "Only a proposed template can be approved, by a reviewer "
                                 "who neither proposed nor already approved it.")
            approvals = (*approvals, reviewer)
            needed = enclave.manifest(template.spec.dataset).template_approvals
            status: Status = "approved" if len(approvals) >= needed else "proposed"
        elif action == "reject":
            if template.status != "proposed":
                raise QueryError("review_not_allowed", "Only a proposed template can be rejected.")
            status = "rejected"
        else:
            if template.status != "approved":
                raise QueryError("review_not_allowed", "Only an approved template can be revoked.")
            status = "revoked"
        event = {"approve": "template.approved", "reject": "template.rejected", "revoke": "template.revoked"}[action]
        record = tx.append(event, reviewer, "allow" if action == "approve" else "deny", [reason],
                           template_id=template_id, status=status, approvals=list(approvals))
        tx.connection.execute("UPDATE templates SET status = ?, approvals = ?, seq = ? WHERE id = ?",
                              (status, approvals_text(approvals), record["seq"], template_id))
        return find(tx.connection, template_id)  # type: ignore[return-value]


def _approved(connection: Connection, template_id: int) -> Template:
    """The template if it may run, or why it cannot."""
    template = find(connection, template_id)
    if template is None:
        raise QueryError("template_not_found", "No such template.")
    if template.status != "approved":
        raise QueryError("template_not_approved", f"This template is {template.status}, not approved.")
    return template


def _bound(template: Template, values: dict[str, object]) -> str:
    """The template's SQL with the parameters bound, or why they do not fit it."""
    try:
        return template.spec.bind(values)
    except ValueError as error:
        raise QueryError("invalid_parameters", str(error)) from None


def run(enclave: Enclave, researcher: str, template_id: int, values: dict[str, object], *,
        hold: bool = True) -> Release:
    """Run an approved template with validated parameters through the whole pipeline; `hold` as in
    `Enclave.query` (the answer comes at the query's deadline). A repeat of a released run (the same
    template and parameters) is answered at once, spending nothing and taking no run of the limit."""
    with enclave.audit.glancing() as connection:  # one statement
        template = _approved(connection, template_id)
    sent = {"template": template_id, "parameters": values}
    early = enclave.replay_as_sent(researcher, template.spec.dataset, sent)  # parameters released before
    if early is not None:
        return early
    sql = _bound(template, values)
    with enclave.audit.transaction() as tx:
        template = _approved(tx.connection, template_id)  # again, under the write lock
        runs = tx.connection.execute("SELECT count(*) FROM template_runs WHERE template_id = ? AND researcher = ?",
                                     (template_id, researcher)).fetchone()[0]
        if runs >= template.spec.run_limit:
            raise QueryError("run_limit_reached", f"This template allows {template.spec.run_limit} runs each.")
        slot = int(tx.connection.execute(
            "INSERT INTO template_runs (id, template_id, researcher, query_id, seq) VALUES "
            "((SELECT coalesce(max(id), 0) + 1 FROM template_runs), ?, ?, '', 0) RETURNING id",
            (template_id, researcher)).fetchone()[0])
    run = _Run(slot, template_id, researcher, values)
    try:
        return enclave.query(researcher, template.spec.dataset, sql, template.spec.epsilon, adhoc=False, hold=hold,
                             sent=sent, hooks=run)
    except QueryError:
        if not run.settled:  # refused or failed where no transaction of the pipeline could settle it
            with enclave.audit.transaction() as tx:
                _release_slot(tx, slot)
        raise


class _Run(Hooks):
    """A run's slot against the run limit, settled inside the pipeline's own transactions: given back by a
    refusal, a failure or a replay (the limit counts runs that released), and named, with the run's
    `template.run` record, in the transaction that records its release."""

    def __init__(self, slot: int, template_id: int, researcher: str, values: dict[str, object]) -> None:
        self.slot, self.template_id, self.researcher, self.values = slot, template_id, researcher, values
        self.charged_as: str | None = None
        self.settled = False

    def _give_back(self, tx: Transaction) -> None:
        _release_slot(tx, self.slot)
        self.settled = True

    def refused(self, tx: Transaction, error: QueryError) -> None:
        self._give_back(tx)

    def failed(self, tx: Transaction, error: QueryError) -> None:
        self._give_back(tx)

    def replayed(self, tx: Transaction, key: str) -> None:
        self._give_back(tx)

    def charged(self, tx: Transaction, query_id: str, key: str, retried: bool) -> None:
        self.charged_as = query_id

    def released(self, tx: Transaction, key: str) -> None:
        record = tx.append("template.run", self.researcher, "allow", [], template_id=self.template_id,
                           parameters=self.values, query_id=self.charged_as)
        tx.connection.execute("UPDATE template_runs SET query_id = ?, seq = ? WHERE id = ?",
                              (self.charged_as, record["seq"], self.slot))
        self.settled = True


def _release_slot(tx: Transaction, slot: int) -> None:
    tx.connection.execute("DELETE FROM template_runs WHERE id = ?", (slot,))
