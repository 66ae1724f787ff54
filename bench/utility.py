"""Utility of releases for 10 realistic queries, against OpenDP used directly and SmartNoise SQL, in one run.

    .venv/bin/python bench/utility.py [--children N] [--releases R] [--epsilon E] [--query N]
        [--smartnoise-venv DIR] [--no-smartnoise] [--tiny]

Issue 14: a fixed set of queries on the demo (counts by two keys, COUNT with AVG, a join, a rate, a mean, a
median, a quantile, a standard deviation, a HAVING, a ratio), each at ε = 1. The truth is plain DuckDB on
a copy of the same data version (nothing of it leaves this script but the errors). For R releases it
prints, per output column, the mean absolute error (MAE) over the cells released (suppressed ones left
out) and how often the 95% interval held the truth, for:
- the enclave: checked, rewritten and executed once (the true aggregates of a fixed query on a fixed data
  version never change), then protected R times by the enclave's own `protect` (`enclave_releases`);
  a query the enclave refuses prints `refused (<code>)` and its baselines still run;
- OpenDP directly, with the same bounds and ε, every public key, no suppression: counts and sums through
  OpenDP's Laplace with L1 sensitivity from R rows per person (a person's COUNT(DISTINCT) adds one to at
  most min(R, G) groups), sums centred on their bounds' midpoint, ε split evenly over the quantities the
  query needs; a median or quantile through OpenDP's quantile score over the integer grid of the bounds
  and noisy max, at d_in = R per group (its map is linear in d_in, so groups compose to ε); a standard
  deviation from a noisy count, sum and sum of squares;
- SmartNoise SQL (`smartnoise-sql`, in a venv of its own made on first use; bench/_smartnoise_runner.py)
  with max_ids = R and the same bounds, at the same total ε split over the mechanisms it counts, where it
  runs the query; `skipped: <why>` where it cannot (always at --tiny, which installs nothing). It
  gives no intervals (smartnoise-sql 1.0 removed them), so its coverage is `—`.
Ratios are enclave / OpenDP and enclave / SmartNoise (MAE). It ends with each query's worst ratio and
whether query 2 meets issue 14's targets (count MAE ≤ 30, AVG MAE ≤ 0.6 days), printed, not asserted.
Defaults: 50,000 children, 200 releases (a few minutes); tiny: 2,000 children, 3 releases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import opendp.prelude as dp
import sqlglot

from enclave.catalog.manifest import Manifest
from enclave.disclosure.plan import PlanError
from enclave.disclosure.protect import protect
from enclave.disclosure.release import Cell, ReleaseColumn
from enclave.execute.sandbox import ExecutionError
from enclave.pipeline import Enclave
from enclave.settings import Settings

dp.enable_features("contrib")
ALPHA = 0.05
DATASET = "demo"
RUNNER = Path(__file__).with_name("_smartnoise_runner.py")
DEFAULT_VENV = Path.home() / ".cache" / "enclave-bench" / "smartnoise"

Key = tuple[str, ...]
Interval = tuple[float, float] | None


@dataclass(frozen=True)
class Measure:
    """One output column: what it estimates, of which value (SQL over the query's FROM), in which bounds."""

    column: str
    kind: str  # count | distinct | mean | quantile | sd | ratio
    value: str | None = None  # the measured value, for the OpenDP baseline's exact aggregates
    bounds: tuple[float, float] = (0.0, 0.0)
    quantile: float = 0.5
    scale: float = 1.0  # ratio only: the constant the query multiplies SUM / COUNT by


@dataclass(frozen=True)
class Query:
    number: int
    sql: str
    keys: tuple[str, ...]  # the grouping keys as the baseline's SQL spells them, in output order
    source: str  # the FROM clause, for the baseline's exact aggregates
    measures: tuple[Measure, ...]
    smartnoise: str | None  # SmartNoise's spelling of the query (its tables schema-qualified)
    having: float | None = None  # a group is kept when its count is above this (HAVING COUNT(*) > x)
    person: str = "person_id"  # the privacy unit as the source spells it


def queries(manifest: Manifest) -> tuple[Query, ...]:
    """The 10 queries, their bounds read from the manifest (so a bound changed there changes here)."""
    def bounds(table: str, column: str) -> tuple[float, float]:
        low, high = manifest.tables[table].columns[column].bounds  # type: ignore[misc]
        return float(low), float(high)

    absent, score = bounds("enrollments", "days_absent"), bounds("assessments", "scale_score")
    suspensions, sessions = bounds("enrollments", "suspensions"), bounds("program_sessions", "sessions_attended")
    return (
        Query(1, "SELECT school_year, grade, COUNT(*) AS n FROM enrollments GROUP BY school_year, grade",
              ("school_year", "grade"), "enrollments", (Measure("n", "count"),),
              "SELECT school_year, grade, COUNT(*) AS n FROM main.enrollments GROUP BY school_year, grade"),
        Query(2, "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school",
              ("school",), "enrollments", (Measure("n", "count"), Measure("absent", "mean", "days_absent", absent)),
              "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM main.enrollments GROUP BY school"),
        Query(3, "SELECT c.gender, COUNT(DISTINCT c.person_id) AS children, AVG(p.sessions_attended) AS sessions "
              "FROM children c JOIN program_sessions p ON c.person_id = p.person_id GROUP BY c.gender",
              ("c.gender",), "children c JOIN program_sessions p ON c.person_id = p.person_id",
              (Measure("children", "distinct"), Measure("sessions", "mean", "p.sessions_attended", sessions)),
              "SELECT gender, COUNT(DISTINCT person_id) AS children, AVG(sessions_attended) AS sessions "
              "FROM main.children JOIN main.program_sessions USING (person_id) GROUP BY gender",
              person="c.person_id"),
        Query(4, "SELECT school_year, AVG(CASE WHEN suspensions > 0 THEN 1 ELSE 0 END) AS suspended FROM enrollments "
              "GROUP BY school_year", ("school_year",), "enrollments",
              (Measure("suspended", "mean", "CASE WHEN suspensions > 0 THEN 1 ELSE 0 END", (0.0, 1.0)),),
              "SELECT school_year, AVG(CASE WHEN suspensions > 0 THEN 1 ELSE 0 END) AS suspended "
              "FROM main.enrollments GROUP BY school_year"),
        Query(5, "SELECT subject, school_year, AVG(scale_score) AS score FROM assessments "
              "GROUP BY subject, school_year",
              ("subject", "school_year"), "assessments", (Measure("score", "mean", "scale_score", score),),
              "SELECT subject, school_year, AVG(scale_score) AS score FROM main.assessments "
              "GROUP BY subject, school_year"),
        Query(6, "SELECT school_year, MEDIAN(days_absent) AS absent FROM enrollments GROUP BY school_year",
              ("school_year",), "enrollments", (Measure("absent", "quantile", "days_absent", absent, 0.5),),
              "SELECT school_year, MEDIAN(days_absent) AS absent FROM main.enrollments GROUP BY school_year"),
        Query(7, "SELECT subject, QUANTILE_CONT(scale_score, 0.9) AS p90 FROM assessments GROUP BY subject",
              ("subject",), "assessments", (Measure("p90", "quantile", "scale_score", score, 0.9),),
              "SELECT subject, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY scale_score) AS p90 "
              "FROM main.assessments GROUP BY subject"),
        Query(8, "SELECT subject, STDDEV_SAMP(scale_score) AS sd FROM assessments GROUP BY subject",
              ("subject",), "assessments", (Measure("sd", "sd", "scale_score", score),),
              "SELECT subject, STDDEV(scale_score) AS sd FROM main.assessments GROUP BY subject"),
        Query(9, "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school HAVING COUNT(*) > 2500",
              ("school",), "enrollments", (Measure("n", "count"),),
              "SELECT school, COUNT(*) AS n FROM main.enrollments GROUP BY school HAVING COUNT(*) > 2500",
              having=2500),
        Query(10, "SELECT school_year, 100.0 * SUM(suspensions) / COUNT(*) AS per_100 FROM enrollments "
              "GROUP BY school_year", ("school_year",), "enrollments",
              (Measure("per_100", "ratio", "suspensions", suspensions, scale=100.0),),
              "SELECT school_year, 100.0 * SUM(suspensions) / COUNT(*) AS per_100 FROM main.enrollments "
              "GROUP BY school_year"),
    )


# --- what a mechanism released, scored against the truth ------------------------------------------------

@dataclass
class Score:
    """Errors and interval hits of one column under one mechanism, and (for HAVING) its in/out decisions."""

    errors: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)
    decisions: list[bool] = field(default_factory=list)  # True where the group's in/out differs from the truth's
    note: str | None = None  # refused (code) / skipped: why

    def add(self, value: float | None, interval: Interval, truth: float) -> None:
        if value is None or math.isnan(value):
            return
        self.errors.append(abs(value - truth))
        if interval is not None:
            self.hits.append(interval[0] <= truth <= interval[1])

    @property
    def mae(self) -> float:
        return statistics.fmean(self.errors) if self.errors else math.nan

    @property
    def coverage(self) -> float:
        return sum(self.hits) / len(self.hits) if self.hits else math.nan


Released = dict[Key, dict[str, tuple[float | None, Interval]]]  # one release: group -> column -> value, interval


def score_releases(query: Query, truth: dict[Key, dict[str, float]], releases: Sequence[Released]) -> dict[str, Score]:
    """Per column, the errors over the released cells of groups the truth has, and HAVING's decisions."""
    scores = {m.column: Score() for m in query.measures}
    for release in releases:
        for key, true_row in truth.items():
            cells = release.get(key)
            for measure in query.measures:
                value, interval = cells.get(measure.column, (None, None)) if cells else (None, None)
                scores[measure.column].add(value, interval, true_row[measure.column])
                if query.having is not None:
                    scores[measure.column].decisions.append((value is not None) != (true_row["n"] > query.having))
    return scores


def key_of(values: Sequence[object]) -> Key:
    return tuple("" if v is None else str(v) for v in values)


# --- the truth: plain DuckDB ----------------------------------------------------------------------------

def truth_of(con: duckdb.DuckDBPyConnection, query: Query) -> dict[Key, dict[str, float]]:
    """The query's true answer per group (HAVING removed: every group, so a decision can be scored)."""
    tree = sqlglot.parse_one(query.sql, read="duckdb")
    tree.set("having", None)
    if query.having is not None and not any(m.column == "n" for m in query.measures):
        raise ValueError("a HAVING query's decision is scored on its column n")
    columns = [m.column for m in query.measures]
    found = con.execute(tree.sql("duckdb")).fetchall()
    width = len(query.keys)
    return {key_of(row[:width]): {c: float(v) for c, v in zip(columns, row[width:], strict=True)}
            for row in found if None not in row[:width] and None not in row[width:]}


# --- the enclave: check + rewrite + execute once, protect R times -----------------------------------------

@dataclass(frozen=True)
class Refused:
    code: str


def enclave_releases(enclave: Enclave, sql: str, epsilon: float, count: int) -> list[Released] | Refused:
    """R releases of one query through the enclave's own stages, without its budget, audit and padding.

    The enclave's coupling lives here alone: `prepare` checks, rewrites and binds (as `Enclave.query` does
    through `_rewritten`), `plan` sets the mechanisms at ε, `execute_unprotected` gives the true
    aggregates of the fixed query on the fixed data version once, and `protect` adds fresh noise, then
    suppression, on each of the R calls: the same code every release goes through, minus the
    per-release ledger, audit record and execution slot (which would cost ~0.65 s each).
    """
    prepared = enclave.prepare(DATASET, sql)
    if prepared.rewritten is None or prepared.cost is None:
        return Refused(",".join(dict.fromkeys(v.code for v in prepared.result.violations)) or "check_failed")
    try:
        plan = enclave.plan(DATASET, prepared.rewritten, epsilon)
        raw = enclave.execute_unprotected(DATASET, prepared.rewritten, None, prepared.version,
                                          prepared.cost.deadline_seconds)
    except (PlanError, ExecutionError) as error:
        return Refused(error.code)
    return [as_released(*protect(raw, prepared.rewritten, plan)[:2]) for _ in range(count)]


def as_released(columns: Sequence[ReleaseColumn], rows: Sequence[Sequence[Cell]]) -> Released:
    """A released table as group -> column -> (value, interval), its suppressed cells left out."""
    keys = [c.kind == "key" for c in columns]
    release: Released = {}
    for row in rows:
        group = key_of([cell.value for cell, is_key in zip(row, keys, strict=True) if is_key])
        release[group] = {column.name: (None if cell.value is None else float(cell.value), cell.interval)
                          for cell, column, is_key in zip(row, columns, keys, strict=True)
                          if not is_key and not cell.suppressed}
    return release


# --- OpenDP used directly -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exact:
    """A group's exact aggregates for the baseline: rows, persons, and per measured value its centred sum,
    centred sum of squares and (for quantiles) the clamped values themselves."""

    rows: int
    persons: int
    sums: dict[str, float]
    squares: dict[str, float]
    values: dict[str, list[int]]


def exact_of(con: duckdb.DuckDBPyConnection, query: Query) -> dict[Key, Exact]:
    """The baseline's inputs per group, each value clamped to its bounds, from plain DuckDB."""
    parts = ["COUNT(*)", f"COUNT(DISTINCT {query.person})"]
    valued = [m for m in query.measures if m.value is not None]
    for m in valued:
        low, high = m.bounds
        clamped = f"LEAST(GREATEST(({m.value}), {low}), {high})"
        middle = (low + high) / 2
        parts += [f"SUM({clamped} - {middle})", f"SUM(POWER({clamped} - {middle}, 2))",
                  f"LIST(CAST({clamped} AS BIGINT))" if m.kind == "quantile" else "NULL"]
    keys = ", ".join(query.keys)
    found = con.execute(f"SELECT {keys}, {', '.join(parts)} FROM {query.source} GROUP BY {keys}").fetchall()
    width = len(query.keys)
    exact = {}
    for row in found:
        if None in row[:width]:
            continue
        rest = row[width + 2:]
        exact[key_of(row[:width])] = Exact(
            int(row[width]), int(row[width + 1]),
            {m.column: float(rest[3 * i] or 0) for i, m in enumerate(valued)},
            {m.column: float(rest[3 * i + 1] or 0) for i, m in enumerate(valued)},
            {m.column: list(rest[3 * i + 2] or []) for i, m in enumerate(valued)})
    return exact


@dataclass(frozen=True)
class Noisy:
    """One quantity's vector of Laplace noise over the groups: a fresh draw per call, and its accuracy."""

    draw: Callable[[], list[float]]
    scale: float
    integer: bool

    def accuracy(self, parts: int) -> float:
        """The half-width that holds at confidence 1 - alpha / parts (parts: the quantities an interval uses)."""
        to_accuracy = dp.discrete_laplacian_scale_to_accuracy if self.integer else dp.laplacian_scale_to_accuracy
        return to_accuracy(self.scale, ALPHA / parts)


def laplace(vector: list[float], sensitivity: float, epsilon: float, integer: bool) -> Noisy:
    """OpenDP's vector Laplace (discrete for integers) at ε for an L1 sensitivity, the scale found from
    OpenDP's own privacy map."""
    atom = dp.atom_domain(T=int) if integer else dp.atom_domain(T=float, nan=False)
    space = dp.vector_domain(atom), dp.l1_distance(T=int if integer else float)
    d_in = int(sensitivity) if integer else float(sensitivity)
    scale = dp.binary_search_param(lambda s: space >> dp.m.then_laplace(s), d_in=d_in, d_out=epsilon)
    measurement = space >> dp.m.then_laplace(scale)
    values = [int(v) for v in vector] if integer else [float(v) for v in vector]
    return Noisy(lambda: [float(x) for x in measurement(values)], scale, integer)


def quantile(values: list[int], bounds: tuple[float, float], q: float, rows: int, epsilon: float
             ) -> Callable[[], float]:
    """One group's quantile through OpenDP: scores over the integer candidates of the bounds, noisy max.
    The scores are a deterministic transformation of the group's values, computed once; each call draws
    a fresh noisy max at d_in = R (the privacy map of the chain, transformation then measurement)."""
    candidates = list(range(int(bounds[0]), int(bounds[1]) + 1))
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance()
    score = space >> dp.t.then_quantile_score_candidates(candidates, alpha=q)
    scale = dp.binary_search_param(lambda s: score >> dp.m.then_noisy_max(dp.max_divergence(), s, negate=True),
                                   d_in=rows, d_out=epsilon)
    pick = dp.m.make_noisy_max(score.output_domain, score.output_metric, dp.max_divergence(), scale, negate=True)
    scores = score(values)
    return lambda: float(candidates[pick(scores)])


def corners(function: Callable[..., float], intervals: Sequence[tuple[float, float]],
            bounds: tuple[float, float]) -> tuple[float, float]:
    """An interval of f(x, y, ...) from the corners of the inputs' intervals, clamped to the bounds."""
    values = [function(*point) for point in _product(intervals)]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return bounds
    return (min(max(min(values), bounds[0]), bounds[1]), min(max(max(values), bounds[0]), bounds[1]))


def _product(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, ...]]:
    points: list[tuple[float, ...]] = [()]
    for low, high in intervals:
        points = [(*p, x) for p in points for x in (low, high)]
    return points


def opendp_releases(query: Query, exact: dict[Key, Exact], rows: int, groups: int, epsilon: float,
                    count: int) -> tuple[list[Released], int]:
    """R releases of the query by OpenDP directly (every group of the truth's, no suppression), and the
    number of quantities ε was split over."""
    keys = sorted(exact)
    needs: list[str] = []
    for m in query.measures:
        needs += {"count": ["rows"], "distinct": ["persons"], "mean": ["rows", f"sum:{m.column}"],
                  "ratio": ["rows", f"sum:{m.column}"], "sd": ["rows", f"sum:{m.column}", f"square:{m.column}"],
                  "quantile": [f"quantile:{m.column}"]}[m.kind]
    needs = list(dict.fromkeys(needs))
    share = epsilon / len(needs)
    measures = {m.column: m for m in query.measures}

    def half(m: Measure) -> float:
        return (m.bounds[1] - m.bounds[0]) / 2

    vectors: dict[str, Noisy] = {}
    quantiles: dict[str, list[Callable[[], float]]] = {}
    for need in needs:
        kind, _, column = need.partition(":")
        if kind == "rows":
            vectors[need] = laplace([exact[k].rows for k in keys], rows, share, True)
        elif kind == "persons":
            vectors[need] = laplace([exact[k].persons for k in keys], min(rows, groups), share, True)
        elif kind == "sum":
            vectors[need] = laplace([exact[k].sums[column] for k in keys], rows * half(measures[column]), share, False)
        elif kind == "square":  # (x - mid)² lies in [0, h²]: centred on h² / 2
            h2 = half(measures[column]) ** 2
            vectors[need] = laplace([exact[k].squares[column] - exact[k].rows * h2 / 2 for k in keys],
                                    rows * h2 / 2, share, False)
        else:
            m = measures[column]
            quantiles[column] = [quantile(exact[k].values[column], m.bounds, m.quantile, rows, share) for k in keys]

    releases = []
    for _ in range(count):
        drawn = {need: (noisy.draw(), noisy) for need, noisy in vectors.items()}
        picked = {column: [pick() for pick in picks] for column, picks in quantiles.items()}
        release: Released = {}
        for i, key in enumerate(keys):
            release[key] = {m.column: _estimate(m, i, drawn, picked, half(m)) for m in query.measures}
            if query.having is not None and drawn["rows"][0][i] <= query.having:
                del release[key]
        releases.append(release)
    return releases, len(needs)


def _estimate(m: Measure, i: int, drawn: dict[str, tuple[list[float], Noisy]], picked: dict[str, list[float]],
              half: float) -> tuple[float | None, Interval]:
    """One released cell of the baseline, post-processed from its noisy quantities; its interval from the
    quantities' intervals (alpha split evenly over them), clamped to the statistic's range."""
    if m.kind in ("count", "distinct"):
        values, noisy = drawn["rows" if m.kind == "count" else "persons"]
        accuracy = noisy.accuracy(1)
        return values[i], (values[i] - accuracy, values[i] + accuracy)
    if m.kind == "quantile":
        return picked[m.column][i], None
    middle = (m.bounds[0] + m.bounds[1]) / 2
    (counts, count_noise), (sums, sum_noise) = drawn["rows"], drawn[f"sum:{m.column}"]
    parts = 3 if m.kind == "sd" else 2
    a_count, a_sum = count_noise.accuracy(parts), sum_noise.accuracy(parts)
    n, total = counts[i], sums[i]
    if m.kind in ("mean", "ratio"):
        scale = m.scale if m.kind == "ratio" else 1.0

        def mean(c: float, s: float) -> float:
            return scale * (s / c + middle) if c > 0 else math.nan

        bounds = (scale * m.bounds[0], scale * m.bounds[1])
        value = mean(n, total)
        if math.isnan(value):
            return None, None
        interval = corners(mean, [(max(n - a_count, 1.0), n + a_count), (total - a_sum, total + a_sum)], bounds)
        return min(max(value, bounds[0]), bounds[1]), interval
    squares, square_noise = drawn[f"square:{m.column}"]
    a_square = square_noise.accuracy(parts)
    shift = half * half / 2  # the squares were noised centred on h² / 2

    def sd(c: float, s: float, q: float) -> float:
        if c <= 1:
            return math.nan
        return math.sqrt(max(0.0, (q + c * shift - s * s / c) / (c - 1)))

    range_ = (0.0, half * 2)
    value = sd(n, total, squares[i])
    if math.isnan(value):
        return None, None
    interval = corners(sd, [(max(n - a_count, 2.0), n + a_count), (total - a_sum, total + a_sum),
                            (squares[i] - a_square, squares[i] + a_square)], range_)
    return min(value, range_[1]), interval


# --- SmartNoise SQL, in its own venv ----------------------------------------------------------------------

def smartnoise_python(venv: Path) -> Path | str:
    """The interpreter of a venv with smartnoise-sql, made on first use; else why there is none."""
    python = venv / "bin" / "python"
    if python.exists() and _imports(python):
        return python
    print(f"installing smartnoise-sql into {venv} (first use) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    for command in ([base, "-m", "venv", "--clear", str(venv)],
                    [str(python), "-m", "pip", "install", "--quiet", "smartnoise-sql"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return f"{command[2]} timed out"
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return f"{' '.join(command[1:4])} failed: {lines[-1] if lines else done.returncode}"
    return python if _imports(python) else "smartnoise-sql installed but `import snsql` fails"


def _imports(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import snsql"], capture_output=True, timeout=120,
                          check=False).returncode == 0


def smartnoise_metadata(manifest: Manifest, tables: Sequence[str]) -> dict[str, object]:
    """SmartNoise's metadata for the demo's tables: max_ids = R, the manifest's bounds, the person key."""
    rows = manifest.contribution_bounds.max_rows_per_unit
    types = {"INTEGER": "int", "BIGINT": "int", "DOUBLE": "float", "BOOLEAN": "boolean"}
    described: dict[str, object] = {}
    for name in tables:
        table: dict[str, object] = {"max_ids": rows, "row_privacy": False}
        for column, spec in manifest.tables[name].columns.items():
            entry: dict[str, object] = {"name": column, "type": types.get(spec.type, "string")}
            if spec.role == "privacy_unit":
                entry["private_id"] = True
            if spec.bounds is not None:
                entry["lower"], entry["upper"] = spec.bounds
            table[column] = entry
        described[name] = table
    return {"demo": {"main": described}}


def smartnoise_run(python: Path, con: duckdb.DuckDBPyConnection, manifest: Manifest, chosen: Sequence[Query],
                   scratch: Path, epsilon: float, delta: float, count: int) -> dict[str, dict[str, object]] | str:
    """R SmartNoise releases of each query (or its error), through bench/_smartnoise_runner.py."""
    folder = scratch / "smartnoise"
    folder.mkdir()
    tables = sorted(manifest.tables)
    for table in tables:
        con.execute(f"COPY {table} TO '{folder / (table + '.csv')}' (HEADER)")
    metadata = folder / "metadata.yaml"  # JSON is YAML
    metadata.write_text(json.dumps(smartnoise_metadata(manifest, tables)))
    request = folder / "request.json"
    request.write_text(json.dumps({"data": str(folder), "metadata": str(metadata), "epsilon": epsilon,
                                   "delta": delta, "releases": count,
                                   "queries": {str(q.number): q.smartnoise for q in chosen if q.smartnoise}}))
    try:
        done = subprocess.run([str(python), str(RUNNER), str(request)], capture_output=True, text=True, timeout=1800,
                              check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return "its runner timed out"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"its runner failed: {lines[-1] if lines else done.returncode}"
    return json.loads(done.stdout)


def smartnoise_releases(query: Query, answer: dict[str, object]) -> list[Released]:
    """SmartNoise's rows as releases: the groups it released, by key (it gives no intervals)."""
    columns = list(answer["columns"])  # type: ignore[call-overload]
    width = len(query.keys)
    releases = []
    for rows in answer["releases"]:  # type: ignore[attr-defined]
        release: Released = {}
        for row in rows:
            release[key_of(row[:width])] = {c: (None if v is None else float(v), None)
                                             for c, v in zip(columns[width:], row[width:], strict=True)}
        releases.append(release)
    return releases


# --- the report -----------------------------------------------------------------------------------------

MECHANISMS = ("enclave", "opendp", "smartnoise")


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def cell(score: Score, width: int) -> str:
    """MAE and coverage, or why there are none, in `width` characters."""
    if score.note is not None:
        return f"{score.note:>{width}}"
    if not score.errors:
        return f"{'none released':>{width}}"
    coverage = "—" if math.isnan(score.coverage) else f"{score.coverage:.1%}"
    return f"{score.mae:>{width - 10}.3f}{coverage:>10}"


def report(query: Query, truth: dict[Key, dict[str, float]], scores: dict[str, dict[str, Score]],
           notes: list[str]) -> float | None:
    """One query's table: per column, MAE and coverage of each mechanism and the ratios; returns the
    worst ratio (None when the enclave did not release)."""
    print(f"\n[{query.number}] {query.sql}")
    for note in notes:
        print(f"    {note}")
    print(f"    {'column':<10}{'enclave MAE':>24}{'cover':>10}{'OpenDP MAE':>14}{'cover':>10}"
          f"{'SmartNoise MAE':>16}{'cover':>10}{'enc/OpenDP':>12}{'enc/SN':>10}")
    worst: float | None = None
    groups = len(truth)
    for m in query.measures:
        s = {name: scores[name][m.column] for name in MECHANISMS}
        line = f"    {m.column:<10}{cell(s['enclave'], 34)}{cell(s['opendp'], 24)}{cell(s['smartnoise'], 26)}"
        line += f"{ratio(s['enclave'].mae, s['opendp'].mae):>12}{ratio(s['enclave'].mae, s['smartnoise'].mae):>10}"
        print(line)
        for base in ("opendp", "smartnoise"):
            if s["enclave"].errors and s[base].errors and s[base].mae > 0:
                worst = max(worst or 0.0, s["enclave"].mae / s[base].mae)
    if query.having is not None:
        counts = sorted(row["n"] for row in truth.values())
        above = sum(1 for n in counts if n > query.having)
        kept = (f"the truth keeps {above} of {groups} (n from {counts[0]:,.0f} to {counts[-1]:,.0f})" if counts
                else "the truth has no group")
        shares = {name: (f"{sum(sc.decisions) / len(sc.decisions):.1%}" if sc.decisions and sc.note is None else "—")
                  for name, sc in ((n, scores[n]["n"]) for n in MECHANISMS)}
        print(f"    in/out (HAVING) differs from the truth's in: enclave {shares['enclave']}, "
              f"OpenDP {shares['opendp']}, SmartNoise {shares['smartnoise']} of {groups} groups x releases; "
              f"{kept}")
    return worst


def measure(scratch: Path, children: int, count: int, epsilon: float, chosen_numbers: list[int] | None,
            smartnoise: Path | str) -> None:
    started = time.perf_counter()
    enclave = Enclave(Settings(home=scratch / "home", demo_children=children))
    try:
        version = enclave.version(DATASET)
        database = scratch / "truth.duckdb"  # DuckDB shares one instance per file, and the sandbox's is locked
        shutil.copyfile(version.database, database)
        manifest = enclave.manifest(DATASET)
        bounds = manifest.contribution_bounds
        rows, groups = bounds.max_rows_per_unit, bounds.max_groups_per_unit
        chosen = [q for q in queries(manifest) if chosen_numbers is None or q.number in chosen_numbers]
        print(f"demo: {children} children, ε = {epsilon:g} per query, {count} releases each; R = {rows} rows and "
              f"G = {groups} groups per person; 95% intervals; MAE over released cells")
        with duckdb.connect(str(database), read_only=True) as con:
            sn_answers = (smartnoise if isinstance(smartnoise, str) else
                          smartnoise_run(smartnoise, con, manifest, chosen, scratch, epsilon,
                                         enclave.rules.privacy.selection_delta, count))
            outcomes = [run_one(enclave, con, q, rows, groups, epsilon, count, sn_answers) for q in chosen]
    finally:
        enclave.close()
    summarise(outcomes)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


def run_one(enclave: Enclave, con: duckdb.DuckDBPyConnection, query: Query, rows: int, groups: int,
            epsilon: float, count: int, smartnoise: dict[str, dict[str, object]] | str) -> Outcome:
    """Measure one query under every mechanism and print its table; its worst ratio and refusal, if any."""
    truth = truth_of(con, query)
    exact = exact_of(con, query)
    scores: dict[str, dict[str, Score]] = {}
    notes: list[str] = []
    released = enclave_releases(enclave, query.sql, epsilon, count)
    refusal = released.code if isinstance(released, Refused) else None
    scores["enclave"] = (score_releases(query, truth, released) if not isinstance(released, Refused)
                         else {m.column: Score(note=f"refused ({released.code})") for m in query.measures})
    baseline, quantities = opendp_releases(query, exact, rows, groups, epsilon, count)
    scores["opendp"] = score_releases(query, truth, baseline)
    notes.append(f"{len(truth)} groups; OpenDP: ε/{quantities} on each of {quantities} quantit"
                 f"{'y' if quantities == 1 else 'ies'}")
    answer = smartnoise if isinstance(smartnoise, str) else smartnoise.get(str(query.number), {"error": "not asked"})
    if isinstance(answer, str) or "error" in answer:
        why = answer if isinstance(answer, str) else str(answer["error"])
        scores["smartnoise"] = {m.column: Score(note="skipped") for m in query.measures}
        notes.append(f"SmartNoise skipped: {why[:150]}")
    else:
        scores["smartnoise"] = score_releases(query, truth, smartnoise_releases(query, answer))
        spent = answer["spent"]
        notes.append(f"SmartNoise: {answer['mechanisms']} mechanisms at ε {answer['epsilon_per_mechanism']:.3g} each; "
                     f"it reports spending ε {spent[0]:.3g}, δ {spent[1]:.2g}")  # type: ignore[index]
    worst = report(query, truth, scores, notes)
    return Outcome(query, worst, refusal, issue_14(scores) if query.number == 2 else None)


def issue_14(scores: dict[str, dict[str, Score]]) -> str:
    """Query 2's headline as issue 14 states it (printed), and its targets' verdict (for the summary)."""
    enclave, opendp = scores["enclave"], scores["opendp"]
    count, mean = enclave["n"].mae, enclave["absent"].mae
    print(f"    issue 14: enclave count MAE {count:.2f}, AVG MAE {mean:.3f} days; OpenDP (centred) "
          f"{opendp['n'].mae:.2f} and {opendp['absent'].mae:.3f}; enclave / OpenDP: count MAE "
          f"{ratio(count, opendp['n'].mae)}, AVG MAE {ratio(mean, opendp['absent'].mae)}")
    if math.isnan(count) or math.isnan(mean):
        return "query 2 against issue 14's targets: not measured (the enclave released nothing)"
    return (f"query 2 against issue 14's targets: count MAE {count:.2f} ≤ 30: {'yes' if count <= 30 else 'NO'}; "
            f"AVG MAE {mean:.3f} ≤ 0.6: {'yes' if mean <= 0.6 else 'NO'}")


@dataclass(frozen=True)
class Outcome:
    query: Query
    worst: float | None  # the worst enclave / baseline MAE ratio
    refusal: str | None
    targets: str | None = None  # query 2 only


def summarise(outcomes: list[Outcome]) -> None:
    print("\nsummary: the worst enclave MAE ratio per query (against OpenDP and SmartNoise, where they ran)")
    for outcome in outcomes:
        if outcome.refusal:
            verdict = f"refused ({outcome.refusal}); baselines measured"
        else:
            verdict = f"{outcome.worst:.2f}x" if outcome.worst is not None else "no ratio (nothing released)"
        print(f"  {outcome.query.number:>2}  {verdict}")
    for outcome in outcomes:
        if outcome.targets:
            print(outcome.targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--children", type=int, default=50_000)
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--query", type=int, action="append", choices=range(1, 11), metavar="N",
                        help="run only query N (1-10; may be repeated)")
    parser.add_argument("--smartnoise-venv", type=Path, default=DEFAULT_VENV,
                        help=f"SmartNoise SQL's venv, made on first use (default {DEFAULT_VENV})")
    parser.add_argument("--no-smartnoise", action="store_true", help="skip SmartNoise SQL")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    if args.tiny:
        args.children, args.releases = 2_000, 3
    if args.no_smartnoise or args.tiny:
        smartnoise: Path | str = "--tiny installs and runs nothing of it" if args.tiny else "--no-smartnoise"
    else:
        smartnoise = smartnoise_python(args.smartnoise_venv)
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        measure(Path(scratch), args.children, args.releases, args.epsilon, args.query, smartnoise)


if __name__ == "__main__":
    main()
