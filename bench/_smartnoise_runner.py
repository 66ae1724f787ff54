"""SmartNoise SQL releases for bench/utility.py, run in SmartNoise's own venv (not the enclave's).

    <smartnoise venv>/bin/python bench/_smartnoise_runner.py REQUEST.json

bench/utility.py writes REQUEST.json and starts it (never at --tiny); there is nothing to run by hand.

It has a venv of its own because smartnoise-sql pins an older OpenDP than the enclave's. REQUEST.json names
a folder of CSV tables (one per table, with a header), a SmartNoise metadata file (YAML) with the same
bounds as the enclave's manifest, the total ε and δ for each query, the number of releases and the
queries. It prints one JSON object to stdout: per query, either its releases (the column names and R lists
of rows) and what SmartNoise says the query spent, or the error SmartNoise raised.

Per its docs (`PrivateReader.get_privacy_cost`), SmartNoise spends the ε of its `Privacy` on each mechanism
a query needs, so a query's per-mechanism ε is the total over the number of mechanisms it counts; the
spend SmartNoise reports at that ε is returned with the releases. Like the enclave's side of the bench,
each query's exact aggregates (SmartNoise's own rewritten subquery, with its reservoir sample of
`max_ids` rows per person) are computed once and noised R times (`execute(pre_aggregated=...)`): the
releases differ by their noise, not by the sample.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from snsql import Privacy, from_connection


def load(folder: Path) -> sqlite3.Connection:
    """Every CSV of the folder as a table of an in-memory SQLite database, which SmartNoise reads."""
    connection = sqlite3.connect(":memory:")
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            connection.execute(f"CREATE TABLE {path.stem} ({', '.join(header)})")
            connection.executemany(f"INSERT INTO {path.stem} VALUES ({', '.join('?' * len(header))})",
                                   ([None if v == "" else _number(v) for v in row] for row in reader))
    connection.commit()
    return connection


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def releases(connection: sqlite3.Connection, metadata: str, sql: str, epsilon: float, delta: float,
             count: int) -> dict[str, Any]:
    """R releases of one query at a total ε (split over its mechanisms, as SmartNoise counts them)."""
    probe = from_connection(connection, engine="sqlite", metadata=metadata, privacy=Privacy(epsilon=1.0, delta=delta))
    per_unit, _ = probe.get_privacy_cost(sql)
    mechanisms = max(1, round(per_unit))
    reader = from_connection(connection, engine="sqlite", metadata=metadata,
                             privacy=Privacy(epsilon=epsilon / mechanisms, delta=delta))
    spent = reader.get_privacy_cost(sql)
    subquery, _ = reader._rewrite(sql)  # SmartNoise's own exact aggregates, computed once (see the docstring)
    exact = reader._get_reader(subquery)._execute_ast(subquery)
    runs = []
    for _ in range(count):
        result = reader.execute(sql, pre_aggregated=exact)
        runs.append([list(row) for row in result[1:]])
    return {"columns": list(result[0]) if count else [], "releases": runs, "mechanisms": mechanisms,
            "epsilon_per_mechanism": epsilon / mechanisms, "spent": list(spent)}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    connection = load(Path(request["data"]))
    answers: dict[str, Any] = {}
    for name, sql in request["queries"].items():
        try:
            answers[name] = releases(connection, request["metadata"], sql, request["epsilon"], request["delta"],
                                     request["releases"])
        except Exception as error:  # any refusal of SmartNoise's is reported, not raised
            answers[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    json.dump(answers, sys.stdout, default=str)


if __name__ == "__main__":
    main()
