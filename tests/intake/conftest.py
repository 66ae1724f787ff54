"""Onboarding fixtures: a dataset that requires consent, built from real deliveries through the real path.

`consented` is the demo manifest renamed, with `consent_required: true`. Its deliveries come from the
demo generator (rosters with noise as CSV, records as Parquet) for a few thousand children, so every
test here runs validation, Splink linkage, person keys and the analysis build for real.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from enclave.catalog.demo import contributor_deliveries
from enclave.catalog.manifest import Manifest
from enclave.intake.delivery import DeliveryFile
from enclave.onboarding import ingest
from enclave.pipeline import Enclave
from enclave.settings import PROJECT_ROOT
from tests import stores

DATASET = "consented"
CHILDREN = 3_000
SEED = 7


def consented_home(root: Path) -> Path:
    """A home whose datasets/ holds the consent-requiring copy of the demo manifest."""
    manifest = yaml.safe_load((PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml").read_text())
    manifest.update(name=DATASET, consent_required=True)
    (root / "datasets" / DATASET).mkdir(parents=True)
    (root / "datasets" / DATASET / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return root


def open_enclave(home: Path) -> Enclave:
    return Enclave(stores.settings(home, datasets_dir=home / "datasets"))


@pytest.fixture(scope="session")
def consented_manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    enclave = open_enclave(consented_home(tmp_path_factory.mktemp("manifest-only")))
    try:
        return enclave.manifest(DATASET)
    finally:
        enclave.close()


@pytest.fixture(scope="session")
def deliveries(consented_manifest: Manifest) -> tuple[dict[str, list[DeliveryFile]], list[tuple[str, str, int]]]:
    """Every contributor's files for CHILDREN children, and the truth of every roster row."""
    return contributor_deliveries(consented_manifest, CHILDREN, SEED)


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[Enclave]:
    """An enclave whose consented dataset has received nothing yet."""
    enclave = open_enclave(consented_home(tmp_path))
    yield enclave
    enclave.close()


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory, deliveries) -> Iterator[Enclave]:
    """An enclave with every contributor's delivery ingested (three linkage runs), shared by a module."""
    enclave = open_enclave(consented_home(tmp_path_factory.mktemp("onboarded")))
    files, _ = deliveries
    for contributor, delivered in files.items():
        ingest(enclave, "steward", DATASET, contributor, delivered)
    yield enclave
    enclave.close()


def identity_state(enclave: Enclave) -> str:
    """A digest of everything in the identity store and of the data versions: equal means unchanged."""
    store = enclave.identity(DATASET)
    tables = [t for (t,) in store.con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                              "current_database() ORDER BY 1").fetchall()]
    content = {t: sorted(map(repr, store.con.execute(f'SELECT * FROM "{t}"').fetchall())) for t in tables}
    with enclave.audit.reading() as connection:
        content["versions"] = connection.execute("SELECT * FROM data_versions").fetchall()
    analysis = store.path.parent / "analysis"
    content["analysis_files"] = sorted(p.name for p in analysis.iterdir()) if analysis.exists() else []
    return hashlib.sha256(json.dumps(content, default=str).encode()).hexdigest()
