"""Steward routes: principals, API keys and grants. Every decision is an audit event."""

from __future__ import annotations

from fastapi import APIRouter

from enclave.access.keys import ensure_principal, issue_key, revoke_key
from enclave.api.deps import EnclaveDep, Steward
from enclave.api.errors import ApiError
from enclave.api.schemas import Done, GrantIn, KeyIn, KeyOut, PrincipalIn, ReasonIn
from enclave.budget.ledger import grant, revoke_grant

router = APIRouter(prefix="/v1", tags=["steward"])


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
