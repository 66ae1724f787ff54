"""The auditor's inclusion proof over HTTP: `GET /v1/audit/proof/{seq}` gives a record, its audit path and the
signed checkpoint, which verifies offline with the key from `GET /v1/audit/public-key` and nothing else; an
unknown record is the 404 envelope. The export it goes with is streamed (chunked), and still verifies."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from enclave.audit.verify import verify_lines, verify_proof
from tests.api.conftest import Service, assert_envelope


def test_a_proof_from_the_route_verifies_offline_and_a_tampered_one_does_not(service: Service):
    auditor = service.client("auditor")
    public = load_pem_public_key(auditor.get("/v1/audit/public-key").content)
    head = len(service.enclave.audit.records())
    for seq in sorted({1, head // 2 or 1, head}):
        response = auditor.get(f"/v1/audit/proof/{seq}")
        assert response.status_code == 200, response.text
        proof = response.json()
        assert set(proof) == {"seq", "record", "hash", "leaf_index", "tree_size", "path", "checkpoint"}
        assert (proof["seq"], proof["leaf_index"]) == (seq, seq - 1)
        assert proof["tree_size"] >= seq
        assert proof["checkpoint"] in auditor.get("/v1/audit/checkpoints").json()
        assert verify_proof(proof, public).ok, verify_proof(proof, public)  # type: ignore[arg-type]
        record = json.loads(proof["record"])
        record["actor"] = "mallory"
        tampered = {**proof, "record": json.dumps(record, sort_keys=True, separators=(",", ":"))}
        assert verify_proof(tampered, public).summary() == f"FAILED: record {seq} does not match its hash (edited)"  # type: ignore[arg-type]


def test_an_unknown_record_is_the_404_envelope_and_a_bad_seq_a_422(service: Service):
    auditor = service.client("auditor")
    error = assert_envelope(auditor.get(f"/v1/audit/proof/{2**62}"), 404, "not_found")
    assert error["message"] == f"No audit record {2**62}."
    assert_envelope(auditor.get("/v1/audit/proof/0"), 422, "invalid_request")
    assert_envelope(auditor.get("/v1/audit/proof/x"), 422, "invalid_request")
    assert_envelope(service.client("alice").get("/v1/audit/proof/1"), 403, "forbidden")


def test_the_export_is_streamed_and_verifies(service: Service):
    auditor = service.client("auditor")
    public = load_pem_public_key(auditor.get("/v1/audit/public-key").content)
    with auditor.stream("GET", "/v1/audit/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers.get("transfer-encoding") == "chunked"
        lines = list(response.iter_lines())
    assert verify_lines(lines, public).ok  # type: ignore[arg-type]
    ranged = auditor.get("/v1/audit/export", params={"start": 2})
    assert json.loads(ranged.text.splitlines()[0])["kind"] == "prefix"
    assert verify_lines(ranged.text.splitlines(), public).ok  # type: ignore[arg-type]
    assert auditor.get("/v1/audit/verify").json()["ok"] is True
