"""Probabilistic record linkage of contributors' rosters with Splink on DuckDB.

One table of every roster row (all contributors together, deduplicated as one: a pair within one
contributor is a duplicate, a pair across two is a link; both are wanted). The model is Fellegi-Sunter:
- blocking: same date of birth and surname initial, or same surname, birth year and first initial (a
  date typed wrong still meets its match through the name; a pair is missed only when its date and
  its surname or first initial are both wrong; the recall this costs is measured by the linkage test).
  Blocks stay small as rosters grow (a date of birth alone puts ~150 records in a block at 500,000
  children, 64M pairs; with the initial, 4M);
- comparisons: first name (exact, nickname of the same formal name, Jaro-Winkler), surname (exact,
  Jaro-Winkler), date of birth (exact, day and month swapped, one character off, same year), gender;
  exact name matches are weighted by how common the name is (term frequencies);
- training: u by random sampling, m by expectation maximisation on three blockings, each of which
  leaves other fields free to be learned;
- clustering: connected components of the pairs at or above the steward's threshold.

Splink's own cluster ids are record ids: they never leave the identity store (see identity.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from enclave.intake.names import FORMS

# (record_id BIGINT, first_name, last_name VARCHAR, birth_date DATE, gender VARCHAR) -> prepared columns
_PREPARE = """
CREATE OR REPLACE TEMP TABLE linkage_prepared AS
SELECT r.record_id,
       nullif(regexp_replace(upper(strip_accents(r.first_name)), '[^A-Z]', '', 'g'), '') AS first_name,
       nullif(regexp_replace(upper(strip_accents(r.last_name)), '[^A-Z]', '', 'g'), '') AS last_name,
       strftime(r.birth_date, '%Y-%m-%d') AS birth_date,
       CASE WHEN day(r.birth_date) <= 12 THEN strftime(make_date(year(r.birth_date), day(r.birth_date),
            month(r.birth_date)), '%Y-%m-%d') END AS birth_date_swapped,
       year(r.birth_date) AS birth_year,
       nullif(upper(r.gender), '') AS gender
FROM linkage_input r;
CREATE OR REPLACE TEMP TABLE linkage_records AS
SELECT p.*, coalesce(f.forms, [p.first_name]) AS first_forms
FROM linkage_prepared p LEFT JOIN linkage_forms f ON f.name = p.first_name;
DROP TABLE linkage_prepared;
"""


def _name(column: str, *extra: cll.ComparisonLevelCreator) -> cl.CustomComparison:
    """Exact (weighted by how common the name is), then any `extra` level, then two Jaro-Winkler bands."""
    return cl.CustomComparison(output_column_name=column, comparison_levels=[
        cll.NullLevel(column),
        cll.ExactMatchLevel(column, term_frequency_adjustments=True),
        *extra,
        cll.JaroWinklerLevel(column, 0.92),
        cll.JaroWinklerLevel(column, 0.80),
        cll.ElseLevel(),
    ])


def _settings() -> SettingsCreator:
    first = _name("first_name", cll.CustomLevel("list_has_any(first_forms_l, first_forms_r)",
                                                "nickname of the same name"))
    last = _name("last_name")
    born = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            cll.NullLevel("birth_date"),
            cll.ExactMatchLevel("birth_date"),
            cll.CustomLevel("birth_date_l = birth_date_swapped_r", "day and month swapped"),
            cll.DamerauLevenshteinLevel("birth_date", 1),
            cll.CustomLevel("birth_year_l = birth_year_r", "same year"),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        blocking_rules_to_generate_predictions=[
            block_on("birth_date", "substr(last_name, 1, 1)"),
            block_on("last_name", "birth_year", "substr(first_name, 1, 1)"),
        ],
        comparisons=[first, last, born, cl.ExactMatch("gender")],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


@dataclass(frozen=True)
class LinkageRun:
    """What a run produced, in tables of the connection it ran on."""

    clusters: str  # (record_id, cluster) with cluster = the smallest record_id of its cluster
    pairs: str  # (record_id_l, record_id_r, match_probability) for every scored pair above 0.01
    threshold: float


def link(con: duckdb.DuckDBPyConnection, threshold: float, *, seed: int = 1) -> LinkageRun:
    """Link the rows of `linkage_input` on `con`, leaving the clusters and scored pairs as tables."""
    forms = list(FORMS.items())
    con.execute("CREATE OR REPLACE TEMP TABLE linkage_forms AS SELECT unnest(?) AS name, unnest(?) AS forms",
                [[n for n, _ in forms], [list(f) for _, f in forms]])
    con.execute(_PREPARE)
    db_api = DuckDBAPI(connection=con)
    records = db_api.register("linkage_records", table_name="linkage_records_input")
    linker = Linker(records, _settings(), log_level=None)  # quiet: the caller reports
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "last_name", "birth_date")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=2_000_000, seed=seed)
    # each session leaves some fields free to be learned: names, then the date and gender, then surnames
    for rule in (block_on("birth_date", "substr(last_name, 1, 1)"), block_on("first_name", "last_name"),
                 block_on("birth_date", "substr(first_name, 1, 1)")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict(threshold_match_probability=0.01)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, threshold)
    con.execute(f"""CREATE OR REPLACE TABLE linkage_pairs AS
        SELECT record_id_l, record_id_r, match_probability FROM {predictions.physical_name}""")
    con.execute(f"""CREATE OR REPLACE TABLE linkage_clusters AS
        SELECT record_id, min(record_id) OVER (PARTITION BY cluster_id) AS cluster
        FROM {clusters.physical_name}""")
    return LinkageRun("linkage_clusters", "linkage_pairs", threshold)
