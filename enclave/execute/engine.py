"""The engine seam: what the pipeline needs of whatever runs the rewritten query.

Two implementations, tested alike: `enclave.execute.sandbox.Sandbox` (DuckDB, the default) and
`enclave.execute.spark.SparkEngine`. The pipeline only ever talks to this protocol. Each engine renders
the engine-neutral rewritten tree in its own dialect (`sql_of`), and may refuse a construct it cannot
compute with the same meaning as DuckDB (`ExecutionError("engine_unsupported")`), before anything is spent.
Noise, suppression and audit stay in the enclave process, on the engine's aggregated result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from enclave.catalog.bounding import Layout
    from enclave.execute.sandbox import RawResult
    from enclave.rewrite import RewrittenQuery


class Engine(Protocol):
    """Runs regenerated SQL on one data version, locked down, and returns true aggregates."""

    name: str  # "duckdb" or "spark": goes into the audit records and the released answer

    def sql_of(self, rewritten: RewrittenQuery) -> str:
        """The SQL this engine executes for a rewritten query, rendered from its checked tree; raises
        ExecutionError("engine_unsupported") for a construct this engine cannot compute identically."""

    def bind(self, sql: str, consented: Sequence[str] | None = None) -> None:
        """Plan without reading data; raises ExecutionError("type_mismatch") if the query does not bind."""

    def execute(self, sql: str, consented: Sequence[str] | None = None,
                deadline_seconds: float | None = None) -> RawResult:
        """Run one SELECT, interrupted at the deadline; raises only ExecutionError."""

    def table_rows(self) -> dict[str, int]:
        """Each table's rows, rounded up (public metadata the worst case is computed from)."""

    def layout(self) -> Layout | None:
        """The contribution bounding the version's build prepared (enclave.catalog.bounding), or None."""

    def close(self) -> None:
        """Release what this engine holds (idempotent)."""
