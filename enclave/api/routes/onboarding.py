"""Steward routes for data onboarding: deliveries, linkage, re-keying, the quality report and consent.

Each change is validated whole, recorded in the audit log and made a new data version before it is
answered (see enclave.onboarding). The quality report holds identifiers (its borderline pairs), so it
is for stewards only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import HTMLResponse

from enclave.api.deps import EnclaveDep, Steward
from enclave.api.errors import TEXT_ROUTE_ERRORS, ApiError
from enclave.api.schemas import ConsentsIn, LinkIn, OnboardedOut, RevokeConsentIn, VersionOut
from enclave.intake.delivery import DeliveryFile, DeliveryRefused
from enclave.intake.quality import render_html, report
from enclave.onboarding import (
    ConsentChange,
    ConsentRefused,
    Onboarded,
    import_consents,
    ingest,
    record_consent,
    rekey,
    relink,
)
from enclave.pipeline import Enclave

router = APIRouter(prefix="/v1/datasets/{dataset}", tags=["steward"])


def _onboarded(dataset: str, enclave: Enclave) -> None:
    manifest = enclave.manifests.get(dataset)
    if manifest is None or manifest.intake is None:
        raise ApiError(404, "not_found", f"No dataset named {dataset!r} that is built from deliveries.")


def _out(done: Onboarded) -> OnboardedOut:
    linkage = None
    if done.linked is not None:
        linkage = {"threshold": done.linked.threshold, "records": done.linked.records,
                   "persons": done.linked.persons, "keys_kept": done.linked.kept,
                   "seconds": round(done.linked.seconds, 1)}
    files = [f.__dict__ for f in done.receipt.files] if done.receipt else []
    return OnboardedOut.model_validate({"data_version": done.version.label, "files": files, "linkage": linkage})


def _refused(error: DeliveryRefused | ConsentRefused, code: str) -> ApiError:
    total = getattr(error, "total", len(error.problems))
    return ApiError(400, code, f"Refused with {total} problem(s); nothing was changed.", problems=error.problems)


@router.post("/deliveries", operation_id="steward-deliver", response_model=OnboardedOut, status_code=201)
def deliver(dataset: str, enclave: EnclaveDep, principal: Steward, contributor: Annotated[str, Form(max_length=64)],
            kinds: Annotated[list[str], Form(description="What each file holds: roster or a table name, in order.")],
            files: Annotated[list[UploadFile], File(description="CSV (UTF-8, header row) or Parquet.")],
            sha256: Annotated[list[str] | None, Form(description="Declared SHA-256 of each file, in order.")] = None,
            threshold: Annotated[float | None, Form(gt=0, lt=1)] = None) -> OnboardedOut:
    """Validate, load and link one contributor's delivery; all or nothing. Answers with the new version."""
    _onboarded(dataset, enclave)
    if len(kinds) != len(files) or (sha256 and len(sha256) != len(files)):
        raise ApiError(422, "invalid_request", "Give one kind (and, if any, one sha256) per file, in order.")
    delivered = [DeliveryFile(kind, upload.filename or kind, upload.file.read(), sha256=sha256[i] if sha256 else None)
                 for i, (kind, upload) in enumerate(zip(kinds, files, strict=True))]
    try:
        return _out(ingest(enclave, principal.name, dataset, contributor, delivered, threshold))
    except DeliveryRefused as error:
        raise _refused(error, "delivery_refused") from None


@router.post("/linkage", operation_id="steward-relink", response_model=OnboardedOut)
def link_again(dataset: str, body: LinkIn, enclave: EnclaveDep, principal: Steward) -> OnboardedOut:
    """Link every roster again at another threshold: a new data version."""
    _onboarded(dataset, enclave)
    return _out(relink(enclave, principal.name, dataset, body.threshold))


@router.post("/rekey", operation_id="steward-rekey", response_model=OnboardedOut)
def rotate_key(dataset: str, enclave: EnclaveDep, principal: Steward) -> OnboardedOut:
    """Rotate the person key: every person key changes, the linkage does not; a new data version."""
    _onboarded(dataset, enclave)
    return _out(rekey(enclave, principal.name, dataset))


@router.get("/quality", operation_id="steward-quality", response_model=dict[str, Any])
def quality(dataset: str, enclave: EnclaveDep, principal: Steward) -> dict[str, Any]:
    """The linkage and data-quality report, with borderline pairs for clerical review."""
    _onboarded(dataset, enclave)
    return report(enclave.identity(dataset))


@router.get("/quality.html", operation_id="steward-quality-page", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}}}, **TEXT_ROUTE_ERRORS})
def quality_page(dataset: str, enclave: EnclaveDep, principal: Steward) -> HTMLResponse:
    """The same report as a page."""
    _onboarded(dataset, enclave)
    return HTMLResponse(render_html(report(enclave.identity(dataset))))


@router.post("/consents", operation_id="steward-give-consent", response_model=VersionOut, status_code=201)
def give_consent(dataset: str, body: ConsentsIn, enclave: EnclaveDep, principal: Steward) -> VersionOut:
    """Record consent (by contributor and local ID) for a purpose; all statements or none."""
    _onboarded(dataset, enclave)
    changes = [ConsentChange(s.contributor, s.local_id, s.purpose, "give", s.given, s.expires) for s in body.statements]
    try:
        version = record_consent(enclave, principal.name, dataset, changes)
    except ConsentRefused as error:
        raise _refused(error, "consent_refused") from None
    return VersionOut(data_version=version.label)


@router.post("/consents/revoke", operation_id="steward-revoke-consent", response_model=VersionOut)
def revoke_consent(dataset: str, body: RevokeConsentIn, enclave: EnclaveDep, principal: Steward) -> VersionOut:
    """Revoke consent for a purpose; every later query leaves the person out."""
    _onboarded(dataset, enclave)
    try:
        version = record_consent(enclave, principal.name, dataset,
                                 [ConsentChange(body.contributor, body.local_id, body.purpose, "revoke")])
    except ConsentRefused as error:
        raise _refused(error, "consent_refused") from None
    return VersionOut(data_version=version.label)


@router.post("/consents/import", operation_id="steward-import-consents", response_model=VersionOut, status_code=201)
def import_consent_file(dataset: str, enclave: EnclaveDep, principal: Steward,
                        contributor: Annotated[str, Form(max_length=64)],
                        file: Annotated[UploadFile, File(description="local_id, purpose, action, given, expires")],
                        ) -> VersionOut:
    """Import a contributor's consent file (CSV or Parquet); all statements or none."""
    _onboarded(dataset, enclave)
    try:
        version = import_consents(enclave, principal.name, dataset, contributor,
                                  DeliveryFile("consent", file.filename or "consent.csv", file.file.read()))
    except (DeliveryRefused, ConsentRefused) as error:
        raise _refused(error, "consent_refused") from None
    return VersionOut(data_version=version.label)
