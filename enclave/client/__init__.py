"""The researcher's Python client: an enclave's datasets, checks, queries and templates from Python.

    from enclave.client import Enclave

    with Enclave() as enclave:                     # ENCLAVE_URL and ENCLAVE_TOKEN, or Enclave(url, token)
        report = enclave.check(sql, epsilon=0.5)  # cost, deadline and accuracy; spends nothing
        result = enclave.query(sql, epsilon=0.5)  # the protected release
        result.df                                  # pandas, suppressed cells are pd.NA
        result.protection                          # per cell: mechanism, scale, interval, suppressed, reason

It imports nothing of the enclave's server side (no DuckDB, sqlglot, OpenDP or FastAPI): installed with
the `client` extra it needs httpx, pandas and tqdm only (pandas and tqdm are loaded when first used).
"""

from enclave.client.errors import (
    BudgetExhausted,
    Conflict,
    EnclaveError,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueryFailed,
    QueryRejected,
    QueryTimeout,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
    Violation,
)
from enclave.client.models import (
    AccuracyTarget,
    Budget,
    Cell,
    CheckReport,
    Column,
    Dataset,
    DatasetSummary,
    Output,
    Parameter,
    Plan,
    Quantity,
    QueryStatus,
    QuerySummary,
    Result,
    Rules,
    Table,
    Template,
)
from enclave.client.session import DEFAULT_DATASET, Enclave

__all__ = [
    "DEFAULT_DATASET", "AccuracyTarget", "Budget", "BudgetExhausted", "Cell", "CheckReport", "Column", "Conflict",
    "Dataset", "DatasetSummary", "Enclave", "EnclaveError", "Forbidden", "InvalidRequest", "NotFound", "Output",
    "Parameter", "Plan", "Quantity", "QueryFailed", "QueryRejected", "QueryStatus", "QuerySummary", "QueryTimeout",
    "RateLimited", "Result", "Rules", "ServerError", "Table", "Template", "Unauthenticated", "Unavailable",
    "Violation",
]
