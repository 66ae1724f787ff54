"""The enclave's pipeline, in the order a query goes through it.

    parse + check (enclave.check)  ->  rewrite (enclave.rewrite)  ->  execute (enclave.execute)
    -> protect: noise, then suppression (next: enclave.disclosure)  ->  audit  ->  release

`Enclave` wires the stages to one configuration: the loaded rules, the dataset manifests and, per
dataset, a sandbox on its data version. `check` and `prepare` touch no data. `execute_unprotected`
returns true aggregates and exists for the protection stage and the enclave's own tests: no CLI command
or API route may return its result.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from enclave.catalog.demo import ensure_demo
from enclave.catalog.manifest import Manifest, load_manifest
from enclave.check import CheckResult, check
from enclave.execute.sandbox import RawResult, Sandbox
from enclave.policy import Rules, load_rules
from enclave.rewrite import RewrittenQuery, rewrite, sampling_salt
from enclave.settings import Settings


class UnknownDataset(LookupError):
    """The named dataset is not registered."""


@dataclass(frozen=True)
class Prepared:
    """A query checked and rewritten against one data version: ready to execute, or refused."""

    result: CheckResult
    rewritten: RewrittenQuery | None
    data_version: str | None


def load_manifests(datasets_dir: Path, rules: Rules) -> dict[str, Manifest]:
    """Every `datasets/<name>/manifest.yaml`; a manifest may tighten the rules, never loosen them."""
    manifests = {}
    for path in sorted(datasets_dir.glob("*/manifest.yaml")):
        manifest = load_manifest(path)
        threshold = manifest.suppression_threshold
        if threshold is not None and threshold < rules.suppression_threshold:
            raise ValueError(f"{path}: suppression_threshold {threshold} is below the rules' "
                             f"{rules.suppression_threshold}; a dataset may raise it, never lower it")
        manifests[manifest.name] = manifest
    return manifests


class Enclave:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = load_rules(settings.rules_file)
        self.manifests = load_manifests(settings.datasets_dir, self.rules)
        self._sandboxes: dict[str, tuple[Sandbox, str]] = {}
        self._lock = threading.Lock()

    def manifest(self, dataset: str) -> Manifest:
        try:
            return self.manifests[dataset]
        except KeyError:
            raise UnknownDataset(dataset) from None

    def check(self, dataset: str, sql: str) -> CheckResult:
        """Check only: no data touched, nothing spent."""
        return check(sql, self.rules, self.manifest(dataset))

    def _sandbox(self, dataset: str) -> tuple[Sandbox, str]:
        with self._lock:
            if dataset not in self._sandboxes:
                if dataset != "demo":
                    raise UnknownDataset(dataset)  # registered datasets arrive with data onboarding
                data = ensure_demo(self.manifest(dataset), self.settings.data_dir,
                                   children=self.settings.demo_children)
                sandbox = Sandbox(data.database, self.rules.execution, self.rules.limits.max_output_groups)
                self._sandboxes[dataset] = (sandbox, data.data_version)
            return self._sandboxes[dataset]

    def data_version(self, dataset: str) -> str:
        return self._sandbox(dataset)[1]

    def prepare(self, dataset: str, sql: str) -> Prepared:
        """Check, then rewrite against the dataset's current data version."""
        result = self.check(dataset, sql)
        if not result.accepted or result.query is None:
            return Prepared(result, None, None)
        version = self.data_version(dataset)
        salt = sampling_salt(self.settings.secret("sampling"), version)
        return Prepared(result, rewrite(result.query, self.manifest(dataset), salt), version)

    def execute_unprotected(self, dataset: str, rewritten: RewrittenQuery) -> RawResult:
        """True aggregates of a rewritten query. Internal: the protection stage's input, never a release."""
        return self._sandbox(dataset)[0].execute(rewritten.sql)

    def close(self) -> None:
        with self._lock:
            for sandbox, _ in self._sandboxes.values():
                sandbox.close()
            self._sandboxes.clear()
