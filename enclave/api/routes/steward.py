"""Steward routes: principals, API keys and grants. Every decision is an audit event.

The lists (`GET /v1/principals`, `GET /v1/grants`) are what the steward's pages show: a key by its id,
when it was issued and whether it is revoked (never its secret or digest), a grant with its caps and the
ε and δ its charges have used.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter
from pydantic import BaseModel, Field

from enclave.access.keys import ensure_principal, issue_key, revoke_key
from enclave.api.deps import EnclaveDep, Steward
from enclave.api.errors import ApiError
from enclave.api.schemas import Done, GrantIn, KeyIn, KeyOut, PrincipalIn, ReasonIn
from enclave.budget.ledger import DELTA_UNIT, EPSILON_UNIT, Grant, grant, revoke_grant, today

router = APIRouter(prefix="/v1", tags=["steward"])


class KeyInfo(BaseModel):
    """An API key as a steward sees it: its id and history, never its secret or digest."""

    key_id: str
    issued: str = Field(description="When it was issued (UTC, ISO 8601), from its `key.issued` record.")
    issued_seq: int = Field(description="The audit record that issued it.")
    revoked: bool


class PrincipalOut(BaseModel):
    name: str
    roles: list[str]
    keys: list[KeyInfo]


class GrantOut(BaseModel):
    researcher: str
    dataset: str
    purpose: str
    starts: date | None
    expires: date | None
    adhoc: bool = Field(description="Ad-hoc SQL allowed; false: approved templates only.")
    revoked: bool
    active: bool = Field(description="Usable today: not revoked, started and not expired.")
    epsilon_cap: float
    delta_cap: float
    epsilon_used: float
    delta_used: float
    epsilon_left: float
    delta_left: float
    granted_seq: int = Field(description="The audit record of its latest `grant.created`.")


@router.get("/principals", operation_id="steward-list-principals", response_model=list[PrincipalOut])
def list_principals(enclave: EnclaveDep, principal: Steward) -> list[PrincipalOut]:
    """Every principal with its roles and keys (id, when issued, revoked or not), by name."""
    with enclave.audit.reading() as connection:
        people = connection.execute("SELECT name, roles FROM principals ORDER BY name").fetchall()
        keys = connection.execute("SELECT key_id, principal, revoked, seq FROM api_keys ORDER BY seq").fetchall()
    issued = enclave.audit.records_at(seq for _, _, _, seq in keys)
    held: dict[str, list[KeyInfo]] = {}
    for key_id, name, revoked, seq in keys:
        held.setdefault(name, []).append(KeyInfo(key_id=key_id, issued=str(issued.get(seq, {}).get("time", "")),
                                                 issued_seq=seq, revoked=bool(revoked)))
    return [PrincipalOut(name=name, roles=sorted(roles.split(",")), keys=held.get(name, [])) for name, roles in people]


@router.get("/grants", operation_id="steward-list-grants", response_model=list[GrantOut])
def list_grants(enclave: EnclaveDep, principal: Steward) -> list[GrantOut]:
    """Every grant (revoked ones too) with its caps and the ε and δ used and left, by researcher and dataset."""
    with enclave.audit.reading() as connection:
        rows = connection.execute(
            "SELECT g.researcher, g.dataset, g.purpose, g.starts, g.expires, g.adhoc, g.revoked, g.epsilon_cap, "
            "g.delta_cap, CAST(coalesce(sum(c.epsilon), 0) AS BIGINT), CAST(coalesce(sum(c.delta), 0) AS BIGINT), "
            "g.seq FROM grants g LEFT JOIN charges c ON c.researcher = g.researcher AND c.dataset = g.dataset "
            "GROUP BY g.researcher, g.dataset, g.purpose, g.starts, g.expires, g.adhoc, g.revoked, g.epsilon_cap, "
            "g.delta_cap, g.seq ORDER BY g.researcher, g.dataset").fetchall()
    found, day = [], today()
    for researcher, dataset, purpose, starts, expires, adhoc, revoked, e_cap, d_cap, e_used, d_used, seq in rows:
        held = Grant(researcher, dataset, purpose, date.fromisoformat(starts) if starts else None,
                     date.fromisoformat(expires) if expires else None, e_cap / EPSILON_UNIT, d_cap / DELTA_UNIT,
                     bool(adhoc), bool(revoked))
        found.append(GrantOut(
            researcher=researcher, dataset=dataset, purpose=purpose, starts=held.starts, expires=held.expires,
            adhoc=held.adhoc, revoked=held.revoked, active=held.refusal(day) is None, epsilon_cap=held.epsilon_cap,
            delta_cap=held.delta_cap,
            epsilon_used=int(e_used) / EPSILON_UNIT, delta_used=int(d_used) / DELTA_UNIT,
            epsilon_left=max(e_cap - int(e_used), 0) / EPSILON_UNIT,
            delta_left=max(d_cap - int(d_used), 0) / DELTA_UNIT,
            granted_seq=seq))
    return found


@router.post("/principals", operation_id="steward-create-principal", response_model=Done)
def create_principal(body: PrincipalIn, enclave: EnclaveDep, principal: Steward) -> Done:
    with enclave.audit.transaction() as tx:
        ensure_principal(tx, principal.name, body.name, set(body.roles))
    return Done()


@router.post("/keys", operation_id="steward-issue-key", response_model=KeyOut, status_code=201)
def create_key(body: KeyIn, enclave: EnclaveDep, principal: Steward) -> KeyOut:
    """Issue an API key. The response is the only time the key is ever shown."""
    try:
        with enclave.audit.transaction() as tx:
            key = issue_key(tx, enclave.settings.pepper, principal.name, body.principal)
    except LookupError:
        raise ApiError(404, "not_found", f"No principal named {body.principal!r}.") from None
    return KeyOut(key_id=key.split("_")[1], principal=body.principal, key=key)


@router.post("/keys/{key_id}/revoke", operation_id="steward-revoke-key", response_model=Done)
def delete_key(key_id: str, enclave: EnclaveDep, principal: Steward) -> Done:
    with enclave.audit.transaction() as tx:
        if not revoke_key(tx, principal.name, key_id):
            raise ApiError(404, "not_found", "No active key with that id.")
    return Done()


@router.post("/grants", operation_id="steward-create-grant", response_model=Done, status_code=201)
def create_grant(body: GrantIn, enclave: EnclaveDep, principal: Steward) -> Done:
    """Grant (or change) a researcher's access to a dataset; takes effect at once."""
    if body.dataset not in enclave.manifests:
        raise ApiError(404, "not_found", f"No dataset named {body.dataset!r}.")
    if body.starts and body.expires and body.expires < body.starts:
        raise ApiError(422, "invalid_request", "A grant must expire after it starts.")
    with enclave.audit.transaction() as tx:
        grant(tx, principal.name, body.researcher, body.dataset, body.epsilon_cap, body.delta_cap,
              purpose=body.purpose, starts=body.starts, expires=body.expires, adhoc=body.adhoc)
    return Done()


@router.post("/grants/{researcher}/{dataset}/revoke", operation_id="steward-revoke-grant", response_model=Done)
def delete_grant(researcher: str, dataset: str, body: ReasonIn, enclave: EnclaveDep, principal: Steward) -> Done:
    with enclave.audit.transaction() as tx:
        if not revoke_grant(tx, principal.name, researcher, dataset, body.reason):
            raise ApiError(404, "not_found", "No such grant.")
    return Done()
