"""Long queries through the client: asynchronous over a real Redis and real `enclave worker` processes.

The service, rules and worker are tests/jobs/test_async.py's: a cost model of 200,000 rows a second gives
the self-join SLOW a deadline of about 4.4 s, above the rules' `async_after_seconds` (3), so `mode="auto"`
queues it and the client polls it with a progress bar.
"""

from __future__ import annotations

import time

import pytest

from enclave.client import Enclave, QueryStatus, QueryTimeout, Result
from tests.api.conftest import Service
from tests.jobs.test_async import FAST, SLOW, rules_file, service, worker  # noqa: F401 - fixtures reused


@pytest.fixture
def alice(service: Service):  # noqa: F811 - tests/jobs' service, imported above
    with Enclave(service.base_url, service.keys["alice"]) as client:
        yield client


def test_a_timeout_while_queued_cancels_the_query_and_spends_nothing(alice: Enclave) -> None:
    """No worker runs: the query stays queued, and at the timeout the client cancels it."""
    with pytest.raises(QueryTimeout) as late:
        alice.query(FAST, epsilon=0.3, mode="async", timeout=0.5, progress=False)
    assert late.value.charged is False
    assert "cancelled; nothing was spent" in str(late.value)
    status = alice.query_result(late.value.query_id)  # type: ignore[arg-type]
    assert isinstance(status, QueryStatus)
    assert (status.state, status.charged) == ("cancelled", False)
    assert alice.budget()[0].epsilon_remaining == 5.0


@pytest.mark.slow
def test_a_long_query_shows_its_progress_and_honours_a_timeout(service: Service, alice: Enclave,  # noqa: F811
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with worker(service):
        result = alice.query(SLOW, epsilon=0.2)  # auto: queued by the enclave, polled here
        err = capsys.readouterr().err
        assert isinstance(result, Result)
        assert f"query {result.query_id[:8]}: 100%" in err  # tqdm's bar, completed
        assert "executing" in err
        assert result.epsilon_remaining == alice.budget()[0].epsilon_remaining == 4.8  # as GET /v1/queries/{id} says
        assert result.audit_seq is not None
        released = service.enclave.audit.records(result.audit_seq, limit=1)[0]
        assert (released["event"], released["query_id"]) == ("query.released", result.query_id)

        started = time.monotonic()
        with pytest.raises(QueryTimeout) as late:  # started by the worker, then the timeout: the charge stays
            alice.query(SLOW.replace("COUNT(*) AS n", "COUNT(*) AS pairs"), epsilon=0.2, timeout=2.5, progress=False)
        assert time.monotonic() - started < 4
        assert late.value.charged is True
        assert "charge stays spent" in str(late.value)
        deadline = time.monotonic() + 30
        while not isinstance(answer := alice.query_result(late.value.query_id), Result):  # type: ignore[arg-type]
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert [c.name for c in answer.columns] == ["pairs"]
