"""The linkage and data-quality report, for stewards: what was delivered, how it linked, what is missing.

Per contributor: roster rows, the share linked to a person some other contributor also knows (match
rate), duplicates found inside its own roster, missing-value rates of every delivered column, values
outside a measure's bounds (the rewrite clamps them; a steward should know how many). Overall: persons,
clusters by size, and a sample of borderline pairs (match probability near the threshold) for clerical
review. The sample shows names and dates of birth, so the report is for stewards only: it never goes
to a researcher, and the audit log holds none of it.
"""

from __future__ import annotations

import html
from typing import Any

import duckdb

from enclave.intake.identity import IdentityStore

BORDERLINE_WINDOW = 0.25
BORDERLINE_SAMPLE = 25


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def report(store: IdentityStore, *, clerical: bool = True) -> dict[str, Any]:
    """The report as a JSON-able dict; `clerical` adds the borderline pairs (identifiers: stewards only)."""
    manifest, intake = store.manifest, store.intake
    with store.lock:
        con = store.con.cursor()
        try:
            threshold = float((con.execute("SELECT value FROM state WHERE name = 'threshold'").fetchall()
                               or [(intake.link_threshold,)])[0][0])
            con.execute("""CREATE OR REPLACE TEMP TABLE linked AS
                SELECT r.*, l.surrogate, count(*) OVER (PARTITION BY l.surrogate) AS size,
                       count(DISTINCT r.contributor) OVER (PARTITION BY l.surrogate) AS contributors,
                       count(*) OVER (PARTITION BY l.surrogate, r.contributor) AS same
                FROM roster r JOIN links l USING (contributor, local_id)""")
            contributors = {}
            for contributor in manifest.contributors:
                rows, matched, duplicates = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE contributors > 1), count(*) FILTER (WHERE same > 1) "
                    "- count(DISTINCT surrogate) FILTER (WHERE same > 1) FROM linked WHERE contributor = ?",
                    [contributor]).fetchall()[0]
                if not rows:
                    continue
                columns = ["gender", *intake.person_attributes]
                missing = {c: _rate(*con.execute(f'SELECT count(*) FILTER (WHERE "{c}" IS NULL), count(*) '
                                                 "FROM roster WHERE contributor = ?", [contributor]).fetchall()[0])
                           for c in columns}
                tables = {}
                for name, table in store.record_tables().items():
                    if manifest.tables[name].contributor != contributor:
                        continue
                    total = con.execute(f'SELECT count(*) FROM "records_{name}"').fetchall()[0][0]
                    tables[name] = {
                        "rows": total,
                        "missing": {c: _rate(con.execute(f'SELECT count(*) FROM "records_{name}" WHERE "{c}" IS NULL'
                                                         ).fetchall()[0][0], total) for c in table},
                        "out_of_bounds": {
                            c: con.execute(f'SELECT count(*) FROM "records_{name}" WHERE "{c}" NOT BETWEEN '
                                           f'{spec.bounds[0]} AND {spec.bounds[1]}').fetchall()[0][0]
                            for c, spec in table.items() if spec.bounds is not None},
                    }
                contributors[contributor] = {"roster_rows": rows, "match_rate": _rate(matched, rows),
                                             "duplicates_found": duplicates, "missing": missing, "records": tables}
            sizes = dict(con.execute("SELECT size, count(*) FROM (SELECT surrogate, any_value(size) AS size "
                                     "FROM linked GROUP BY surrogate) GROUP BY size ORDER BY size").fetchall())
            scored, above = con.execute("SELECT count(*), count(*) FILTER (WHERE match_probability >= ?) "
                                        "FROM linkage_pairs", [threshold]).fetchall()[0]
            result: dict[str, Any] = {
                "dataset": manifest.name, "threshold": threshold,
                "persons": sum(sizes.values()), "records": sum(size * n for size, n in sizes.items()),
                "pairs_scored": scored, "pairs_at_or_above_threshold": above,
                "clusters_by_size": {str(size): n for size, n in sizes.items()},
                "contributors": contributors,
            }
            if clerical:
                result["borderline_pairs"] = [dict(zip(
                    ("match_probability", "left", "right"), (round(p, 4), left, right), strict=True))
                    for p, left, right in con.execute(f"""
                        SELECT p.match_probability,
                               {{'contributor': a.contributor, 'local_id': a.local_id, 'first_name': a.first_name,
                                 'last_name': a.last_name, 'birth_date': a.birth_date::VARCHAR, 'gender': a.gender}},
                               {{'contributor': b.contributor, 'local_id': b.local_id, 'first_name': b.first_name,
                                 'last_name': b.last_name, 'birth_date': b.birth_date::VARCHAR, 'gender': b.gender}}
                        FROM linkage_pairs p
                        JOIN roster a ON a.contributor = p.contributor_l AND a.local_id = p.local_id_l
                        JOIN roster b ON b.contributor = p.contributor_r AND b.local_id = p.local_id_r
                        WHERE abs(p.match_probability - ?) <= {BORDERLINE_WINDOW}
                        ORDER BY hash(p.local_id_l, p.local_id_r) LIMIT {BORDERLINE_SAMPLE}""",
                        [threshold]).fetchall()]
            con.execute("DROP TABLE linked")
        finally:
            con.close()
    return result


def pairwise(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, float]:
    """Pairwise precision and recall of a clustering against the truth, both in `table`: one row per
    record with columns (record, person, cluster), `person` the true one."""
    found = con.execute(f"""
        WITH linked AS (SELECT count(*) AS n, count(*) FILTER (WHERE a.person = b.person) AS right
                        FROM "{table}" a JOIN "{table}" b ON a.cluster = b.cluster AND a.record < b.record),
             true_pairs AS (SELECT count(*) AS n FROM "{table}" a JOIN "{table}" b
                            ON a.person = b.person AND a.record < b.record)
        SELECT linked.right / greatest(linked.n, 1), linked.right / greatest(true_pairs.n, 1), linked.n,
               true_pairs.n FROM linked, true_pairs""").fetchall()[0]
    return {"precision": round(found[0], 4), "recall": round(found[1], 4), "linked_pairs": found[2],
            "true_pairs": found[3]}


def against_truth(store: IdentityStore, truth: list[tuple[str, str, int]]) -> dict[str, float]:
    """Pairwise precision and recall of the store's links against known truth: (contributor, local_id,
    true person) for every roster row. For synthetic data (the demo, tests, bench/), where truth exists."""
    with store.lock:
        cursor = store.con.cursor()
        try:
            cursor.execute("""CREATE OR REPLACE TEMP TABLE truth_links AS
                SELECT t.contributor || chr(31) || t.local_id AS record, t.person, l.surrogate AS cluster
                FROM (SELECT unnest(?) AS contributor, unnest(?) AS local_id, unnest(?) AS person) t
                JOIN links l USING (contributor, local_id)""", [list(c) for c in zip(*truth, strict=True)])
            found = pairwise(cursor, "truth_links")
            cursor.execute("DROP TABLE truth_links")
        finally:
            cursor.close()
    return found


def render_html(found: dict[str, Any]) -> str:
    """The report as a self-contained page (no scripts, no external resources)."""
    e = html.escape

    def table(header: list[str], rows: list[list[object]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [f"<h1>Linkage and data quality: {e(found['dataset'])}</h1>",
             f"<p>{found['records']} roster rows linked into {found['persons']} persons at threshold "
             f"{found['threshold']}; {found['pairs_scored']} pairs scored, {found['pairs_at_or_above_threshold']} "
             "at or above the threshold.</p>",
             "<h2>Contributors</h2>",
             table(["contributor", "roster rows", "match rate", "duplicates found", "missing values"],
                   [[name, c["roster_rows"], c["match_rate"], c["duplicates_found"],
                     ", ".join(f"{k} {v:.1%}" for k, v in c["missing"].items())]
                    for name, c in found["contributors"].items()]),
             "<h2>Records</h2>",
             table(["contributor", "table", "rows", "missing values", "outside bounds"],
                   [[name, t, r["rows"], ", ".join(f"{k} {v:.1%}" for k, v in r["missing"].items() if v),
                     ", ".join(f"{k} {v}" for k, v in r["out_of_bounds"].items() if v)]
                    for name, c in found["contributors"].items() for t, r in c["records"].items()]),
             "<h2>Clusters by size</h2>",
             table(["records in the cluster", "persons"], [[k, v] for k, v in found["clusters_by_size"].items()])]
    if "borderline_pairs" in found:
        parts += ["<h2>Borderline pairs for clerical review (stewards only)</h2>",
                  table(["probability", "left", "right"],
                        [[p["match_probability"], " ".join(str(v) for v in p["left"].values()),
                          " ".join(str(v) for v in p["right"].values())] for p in found["borderline_pairs"]])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Data quality: {e(found['dataset'])}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
