from __future__ import annotations

import pytest

from enclave.pipeline import Enclave


@pytest.fixture
def rewritten(enclave: Enclave):
    """Check and rewrite a query on the demo dataset (nothing runs)."""

    def make(sql: str):
        prepared = enclave.prepare("demo", sql)
        assert prepared.rewritten is not None, [v.to_dict() for v in prepared.result.violations]
        return prepared.rewritten

    return make
