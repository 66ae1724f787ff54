from __future__ import annotations

import duckdb
import pytest
import yaml
from pydantic import ValidationError

from enclave.catalog import bounding
from enclave.catalog.demo import ANALYSIS_TABLES, ensure_demo
from enclave.catalog.manifest import Manifest
from enclave.pipeline import load_manifests
from enclave.settings import PROJECT_ROOT

DEMO = yaml.safe_load((PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml").read_text())


def _with(path: list[str], value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(DEMO))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value"), [
    (["tables", "enrollments", "columns", "days_absent", "bounds"], None),           # a measure needs bounds
    (["tables", "enrollments", "columns", "days_absent", "bounds"], [10, 1]),        # bounds in order
    (["tables", "enrollments", "columns", "school", "bounds"], [0, 1]),              # bounds need numbers
    (["tables", "enrollments", "columns", "grade", "keys"], ["0", "1"]),             # key type = column type
    (["tables", "enrollments", "columns", "days_absent", "keys"], [1, 2]),           # keys only on dimensions
    (["tables", "children", "columns", "person_id", "role"], "dimension"),           # unit in every table
    (["tables", "children", "contributor"], "nobody"),                               # known contributor
    (["tables", "children", "columns", "gender", "role"], "secret"),                 # known role
    (["contribution_bounds", "max_rows_per_unit"], 0),
    (["name"], "Bad Name"),
])
def test_invalid_manifests_are_refused(path, value):
    with pytest.raises(ValidationError):
        Manifest.model_validate(_with(path, value))


def test_a_dataset_cannot_lower_the_suppression_threshold(tmp_path, rules):
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "manifest.yaml").write_text(yaml.safe_dump(_with(["suppression_threshold"], 5)))
    with pytest.raises(ValueError, match="never lower"):
        load_manifests(tmp_path, rules)


def test_demo_data_matches_its_manifest(manifest, demo_data):
    with duckdb.connect(str(demo_data.database), read_only=True) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == {*ANALYSIS_TABLES, bounding.BOUNDING_TABLE} == {*manifest.tables, bounding.BOUNDING_TABLE}
        for name, table in manifest.tables.items():
            described = {row[0]: row[1] for row in con.execute(f"DESCRIBE {name}").fetchall()
                         if not bounding.is_bounding(row[0])}  # the bound's columns: tests/rewrite/test_prepared.py
            assert described == {c: spec.type for c, spec in table.columns.items()}, name
            for column, spec in table.columns.items():
                if spec.public_keys is not None:
                    values = {r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {name}").fetchall()} - {None}
                    assert values <= set(spec.public_keys), (name, column)
                if spec.bounds is not None:
                    low, high = con.execute(f"SELECT min({column}), max({column}) FROM {name}").fetchone()
                    assert spec.bounds[0] <= low, (name, column)
                    assert high <= spec.bounds[1], (name, column)
        assert con.execute("SELECT count(*) FROM children").fetchone()[0] == demo_data.summary["linkage"]["persons"]


def test_demo_generation_is_deterministic(manifest, tmp_path, demo_data):
    again = ensure_demo(manifest, tmp_path, children=20_000)
    assert again.data_version == demo_data.data_version
    query = "SELECT person_id, school_year, school, days_absent FROM enrollments ORDER BY ALL"
    with duckdb.connect(str(again.database), read_only=True) as a, \
            duckdb.connect(str(demo_data.database), read_only=True) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
