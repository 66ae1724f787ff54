"""Steward routes for data onboarding: deliveries, linkage, re-keying, the quality report and consent.

Each change is validated whole, recorded in the audit log and made a new data version before it is
answered (see enclave.onboarding). The quality report holds identifiers (its borderline pairs), so it
is for stewards only.

The histories (`GET .../deliveries`, `GET .../consents/history`) read the data versions and, for each, the
audit records that made it: a delivery's contributor, files (kind, name, SHA-256, rows) and linkage
counts; a consent change's purposes and counts. Never a local ID or a person's pseudonym.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from enclave.api.deps import EnclaveDep, Steward
from enclave.api.errors import TEXT_ROUTE_ERRORS, ApiError
from enclave.api.schemas import ConsentsIn, DeliveredFileOut, LinkIn, OnboardedOut, RevokeConsentIn, VersionOut
from enclave.catalog import versions
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
# the reasons enclave.onboarding.record_consent gives the data versions consent changes make
CONSENT_REASONS = frozenset({"consent given", "consent revoked", "consent imported"})
CAUSES = ("data.delivered", "data.linked", "data.rekeyed")


class DataVersionEntry(BaseModel):
    version: int
    data_version: str = Field(description="Its label, `v<n>-<build>`, as queries record it.")
    reason: str
    time: str
    actor: str
    seq: int = Field(description="Its `data.version` audit record.")
    rows: dict[str, int] | None = Field(None, description="Rows per table of a new analysis build.")


class DeliveryEntry(BaseModel):
    """A delivery that was validated, loaded and linked (its `data.delivered` record; never its contents)."""

    seq: int
    time: str
    actor: str
    contributor: str
    files: list[DeliveredFileOut]
    data_version: str
    linkage: dict[str, float] | None = None


class DeliveriesOut(BaseModel):
    dataset: str
    data_version: str | None = Field(description="The current data version; null before the first delivery.")
    versions_total: int
    versions: list[DataVersionEntry] = Field(description="The latest versions, newest first.")
    deliveries: list[DeliveryEntry] = Field(description="The deliveries that made those versions, newest first.")


class ConsentEventOut(BaseModel):
    """A consent change as a steward reviews it: what, for which purposes, how many, when and by whom."""

    seq: int
    time: str
    actor: str
    event: str
    contributor: str | None = None
    source: str | None = Field(None, description="`api`, or the name of an imported file.")
    purposes: list[str]
    statements: int
    revocations: int
    data_version: str


def _versions(enclave: Enclave, dataset: str, limit: int, consent: bool
              ) -> tuple[int, list[tuple[dict[str, object], list[dict[str, object]]]]]:
    """How many data versions there are of this kind (consent changes, or the others), and the latest
    `limit` of them: each version's `data.version` record and the records that made it (a consent change
    just before it; a delivery, re-link or re-key just after, with its label)."""
    with enclave.audit.reading() as connection:
        rows = [(seq, reason in CONSENT_REASONS) for reason, seq in connection.execute(
            "SELECT reason, seq FROM data_versions WHERE dataset = ? ORDER BY version DESC", (dataset,)).fetchall()]
    chosen = [int(seq) for seq, of_consent in rows if of_consent == consent]
    after = max(1, len(enclave.manifest(dataset).contributors))  # the demo's first version: one per contributor
    records = enclave.audit.records_at(s for seq in chosen[:limit] for s in range(seq - 1, seq + after + 1))
    found = []
    for seq in chosen[:limit]:
        version = records[seq]
        if consent:
            causes = [r for r in (records.get(seq - 1),) if r and str(r["event"]).startswith("consent.")]
        else:
            causes = [r for s in range(seq + 1, seq + after + 1) if (r := records.get(s)) and r["event"] in CAUSES
                      and r.get("data_version") == version["data_version"] and r.get("dataset") == dataset]
        found.append((version, causes))
    return len(chosen), found


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


@router.get("/deliveries", operation_id="steward-list-deliveries", response_model=DeliveriesOut)
def list_deliveries(dataset: str, enclave: EnclaveDep, principal: Steward,
                    limit: int = Query(100, ge=1, le=1000)) -> DeliveriesOut:
    """The dataset's data versions other than consent changes (deliveries, re-links, re-keys), newest first,
    and the deliveries among them: contributor, files (kind, name, SHA-256, rows), linkage counts."""
    _onboarded(dataset, enclave)
    with enclave.audit.reading() as connection:
        current = versions.current(connection, dataset)
    total, found = _versions(enclave, dataset, limit, consent=False)
    entries = [DataVersionEntry(version=int(v["version"]), data_version=str(v["data_version"]), reason=str(v["reason"]),
                                time=str(v["time"]), actor=str(v["actor"]), seq=int(v["seq"]),
                                rows=v.get("rows")) for v, _ in found]  # type: ignore[arg-type]
    deliveries = [DeliveryEntry.model_validate({**{k: r[k] for k in ("seq", "time", "actor", "contributor", "files",
                                                                   "data_version")}, "linkage": r.get("linkage")})
                  for _, causes in found for r in causes if r["event"] == "data.delivered"]
    return DeliveriesOut(dataset=dataset, data_version=current.label if current else None, versions_total=total,
                         versions=entries, deliveries=deliveries)


@router.get("/consents/history", operation_id="steward-consent-history", response_model=list[ConsentEventOut])
def consent_history(dataset: str, enclave: EnclaveDep, principal: Steward,
                    limit: int = Query(100, ge=1, le=1000)) -> list[ConsentEventOut]:
    """The latest consent changes, newest first: event, purposes, how many statements and revocations, when,
    by whom, and the data version each made. No local ID and no pseudonym of a person."""
    _onboarded(dataset, enclave)
    out = []
    for version, causes in _versions(enclave, dataset, limit, consent=True)[1]:
        for r in causes:
            entries = r.get("entries") or []
            single = r["event"] != "consent.imported"
            out.append(ConsentEventOut(
                seq=int(r["seq"]), time=str(r["time"]), actor=str(r["actor"]), event=str(r["event"]),
                contributor=r.get("contributor"), source=r.get("source"),  # type: ignore[arg-type]
                purposes=[str(r["purpose"])] if single else sorted({str(e[1]) for e in entries}),  # type: ignore[index, union-attr]
                statements=1 if single else int(r["statements"]),  # type: ignore[call-overload]
                revocations=int(r["event"] == "consent.revoked") if single else int(r["revocations"]),  # type: ignore[call-overload]
                data_version=str(version["data_version"])))
    return out
