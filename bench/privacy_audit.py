"""Empirical privacy audit of every mechanism the enclave releases numbers with, at a size CI cannot afford.

    .venv/bin/python bench/privacy_audit.py [--trials N] [--tiny]

For real plans of demo queries (each quantity's noise scale, sensitivity and the ε OpenDP's map gives),
the real OpenDP measurement runs N times on neighbours that differ by one maximal person (12 rows, 6
groups), and a 95% Clopper-Pearson lower bound on ε is computed from the counts of an event
(tests/privacy/audit.py says which and why). Per mechanism and quantity it prints the claimed ε, the
lower bound, the trials and lower / claimed: at most 1x for a mechanism that keeps its claim, and above
1x for the same mechanism at half its scale (twice the ε claimed), which shows the audit has the power
to catch it. For the Laplace threshold's δ (a person's new keys released) it prints the δ the counts
prove against the δ claimed: the enclave's, and OpenDP 0.16's own map at the threshold applied, which
under-charges (opendp/opendp#2922, tests/disclosure/test_selection.py). Exit status 1 if a claim the
enclave makes is exceeded. Default 200,000 trials (about 5 minutes here); tiny: 2,000.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

from enclave.disclosure import noise
from enclave.disclosure.plan import PrivacyPlan
from enclave.pipeline import Enclave
from enclave.rewrite.rules import UNITS
from enclave.settings import Settings
from tests.privacy.audit import Audit, audit_laplace, audit_selection, audit_threshold

QUERIES = [  # (SQL, ε): a COUNT with a SUM, an AVG (a sum and a count), a threshold selection
    ("SELECT school, COUNT(*) AS n, SUM(days_absent) AS days FROM enrollments GROUP BY school", 2.0),
    ("SELECT school, COUNT(*) AS n, SUM(days_absent) AS days FROM enrollments GROUP BY school", 1.0),
    ("SELECT school, AVG(days_absent) AS absent FROM enrollments GROUP BY school", 1.0),
    ("SELECT scale_score, COUNT(DISTINCT person_id) AS children FROM assessments GROUP BY 1", 2.0),
    ("SELECT scale_score, COUNT(*) AS n FROM assessments GROUP BY 1", 1.0),
]
SELECTION_DELTA = 0.01  # the δ the selection audit's threshold is chosen for (a plan's 1e-7 is unseeable)


def plans(home: Path) -> list[tuple[str, PrivacyPlan]]:
    enclave = Enclave(Settings(home=home, demo_children=300))  # a plan reads no data: a tiny demo will do
    try:
        made = []
        for sql, epsilon in QUERIES:
            prepared = enclave.prepare("demo", sql)
            assert prepared.rewritten is not None, sql
            made.append((f"{sql.split(' FROM ')[0][7:]} (ε {epsilon:g})", enclave.plan("demo", prepared.rewritten,
                                                                                    epsilon)))
        return made
    finally:
        enclave.close()


def audits(plan: PrivacyPlan, label: str, trials: int, groups: int) -> list[tuple[Audit, bool]]:
    """(audit, whether its mechanism is the enclave's own) for each quantity, and at half its scale."""
    done: list[tuple[Audit, bool]] = []
    for quantity in plan.quantities:
        name = f"{quantity.mechanism} {quantity.function}: {label}"
        for honest in (True, False):
            scale = None if honest else quantity.noise_scale / 2
            tag = name if honest else f"  at half the scale: {quantity.mechanism} {quantity.function}"
            if quantity.mechanism == "discrete_laplace":
                done.append((audit_laplace(tag, quantity, trials, scale), honest))
            elif quantity.mechanism == "laplace_threshold":
                done.append((audit_threshold(tag, plan, quantity, trials // groups, scale), honest))
            else:
                raise SystemExit(f"no audit for the mechanism {quantity.mechanism!r}: add one to this bench")
    return done


def selection(plan: PrivacyPlan, label: str, trials: int, groups: int) -> list[tuple[Audit, bool]]:
    """The threshold's δ at the plan's scale, the enclave's claim and OpenDP's map at the same threshold."""
    quantity = plan.quantity(UNITS)
    threshold = next(t for t in range(2, (plan.selection_threshold or 2) + 1)
                     if noise.selection_privacy(quantity.noise_scale, t, groups)[1] <= SELECTION_DELTA)
    audit = audit_selection(f"laplace_threshold δ, T {threshold}: {label}", quantity, groups, threshold,
                            trials // groups)
    opendp_delta = noise.threshold_measurement(quantity.noise_scale, threshold).map((groups, groups, 1))[1]
    old = dataclasses.replace(audit, name="  OpenDP's map at the threshold applied", delta=opendp_delta)
    return [(audit, True), (old, False)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200_000,
                        help="noised cells per side and audit (keys for the threshold: trials / 6 persons)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    trials = 2_000 if args.tiny else args.trials
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        made = plans(Path(scratch))
    groups = 6  # the demo manifest's groups per person
    results = [(plan, audits(plan, label, trials, groups),
                selection(plan, label, trials, groups) if plan.selection_threshold is not None else [])
               for label, plan in made]
    width = max(len(audit.name) for _, rows, chosen in results for audit, _ in rows + chosen)
    print(f"{'mechanism / quantity: query':<{width}} {'trials':>9} {'claimed':>9} {'lower':>9} {'lower/claimed':>14}")
    exceeded = False
    for _, rows, chosen in results:
        for audit, honest in rows:
            lower = audit.epsilon_lower
            ratio = f"{max(lower, 0.0) / audit.claimed_epsilon:.2f}x" if math.isfinite(lower) else "none"
            print(f"{audit.name:<{width}} {audit.trials:>9,} {audit.claimed_epsilon:>9.4f} {lower:>9.4f} {ratio:>14}")
            exceeded |= honest and lower > audit.claimed_epsilon
        for audit, honest in chosen:
            lower = max(audit.delta_lower, 0.0)
            print(f"{audit.name:<{width}} {audit.trials:>9,} {'δ ' + format(audit.delta, '.5f'):>9} "
                  f"{lower:>9.5f} {lower / audit.delta:>13.2f}x")
            exceeded |= honest and lower > audit.delta
    print(f"({time.perf_counter() - started:.0f} s; lower: 95% Clopper-Pearson; at most 1x keeps the claim)")
    if exceeded:
        print("a claim of the enclave was exceeded", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
