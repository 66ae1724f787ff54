"""`Enclave`: a researcher's connection to an enclave over its HTTP API.

    with Enclave("https://enclave.example.org", "enc_...") as enclave:   # or ENCLAVE_URL / ENCLAVE_TOKEN
        enclave.check("SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school", epsilon=0.5)
        result = enclave.query("SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school", epsilon=0.5)
        result.df, result.protection

Every call is one or a few requests to the routes under /v1; nothing is cached on this side, and an
identical query asked again is answered by the enclave with the release it already made (nothing spent).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Literal

import httpx

from enclave.client.errors import Conflict, EnclaveError, QueryTimeout, Unavailable, error_from, error_of
from enclave.client.models import (
    Budget,
    CheckReport,
    Dataset,
    DatasetSummary,
    QueryStatus,
    QuerySummary,
    Result,
    Rules,
    Template,
)

DEFAULT_DATASET = "demo"  # the dataset `enclave demo` serves; the `enclave` command defaults to it too
POLL_SECONDS = (0.1, 1.0)  # an asynchronous query is polled from every 0.1 s, backing off to every 1 s
Mode = Literal["auto", "sync", "async"]


class Enclave:
    """A connection to an enclave as one principal (the API key's).

    `url` and `token` default to the environment's ENCLAVE_URL and ENCLAVE_TOKEN. `timeout` bounds each
    HTTP request; a synchronous query's request waits at least until its deadline (at most the rules'
    `execution.timeout_seconds`, a few seconds), so keep it above that. `dataset` is the dataset that
    `check`, `query` and `budget` use when none is named.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 dataset: str = DEFAULT_DATASET) -> None:
        url = url or os.environ.get("ENCLAVE_URL")
        token = token or os.environ.get("ENCLAVE_TOKEN")
        if not url:
            raise EnclaveError("no_url", "No enclave URL: pass url= or set ENCLAVE_URL (http://127.0.0.1:8000 "
                               "for `enclave demo`).")
        if not token:
            raise EnclaveError("no_token", "No API key: pass token= or set ENCLAVE_TOKEN (a steward issues keys; "
                               "`enclave demo` prints one per role).")
        self.url = url.rstrip("/")
        self.dataset_name = dataset
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def __enter__(self) -> Enclave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Enclave({self.url!r})"  # never the key

    # --- requests -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json: object = None, sql: str | None = None,
                 timeout: float | None = None) -> httpx.Response:
        """One request; an error response raised as its exception (with the SQL its violations point into)."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, path, json=json, **extra)
        except httpx.TimeoutException:
            raise  # the caller says what a timeout means for its request
        except httpx.TransportError as error:
            raise Unavailable("unavailable", f"Cannot reach the enclave at {self.url}: {error}") from None
        if response.is_success:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        raise error_from(response.status_code, body, sql, response.headers.get("Retry-After"))

    def _get(self, path: str) -> Any:
        return self._request("GET", path).json()

    def _dataset(self, dataset: str | None) -> str:
        return dataset or self.dataset_name

    # --- metadata -------------------------------------------------------------------------------------

    def datasets(self) -> list[DatasetSummary]:
        """The datasets this enclave holds (their public names and descriptions)."""
        return [DatasetSummary.from_json(d) for d in self._get("/v1/datasets")]

    def dataset(self, name: str | None = None) -> Dataset:
        """A dataset's public metadata: tables, columns, roles, public keys, bounds, contribution bounds."""
        return Dataset.from_json(self._get(f"/v1/datasets/{self._dataset(name)}"))

    def rules(self) -> Rules:
        """The query rules in force: what the check allows, ε per query, thresholds, limits."""
        data = self._get("/v1/rules")
        return Rules(data["sha256"], data["rules"])

    def budget(self, dataset: str | None = None) -> list[Budget]:
        """Your grants and the ε and δ left on each; only `dataset`'s if named."""
        grants = [Budget.from_json(b) for b in self._get("/v1/budget")]
        return [b for b in grants if dataset is None or b.dataset == dataset]

    # --- queries --------------------------------------------------------------------------------------

    def check(self, sql: str, dataset: str | None = None, epsilon: float | None = None, *,
              weights: Mapping[str, float] | None = None, accuracy: Mapping[str, float] | None = None) -> CheckReport:
        """Check `sql` and plan it at `epsilon` (default: the rules'): accepted or not, every violation at
        its token, and the cost, deadline and interval half-width of each output. Spends nothing.

        `weights` ({output column: w}, 0 < w <= 100, 1 unless named) split ε towards the columns that
        matter most. `accuracy` ({COUNT, COUNT(DISTINCT) or SUM column: half-width}) instead of `epsilon`
        plans at the least ε whose 1 - alpha intervals are that narrow: `plan.epsilon` is what it costs,
        `plan.accuracy_targets` each target and the half-width met. A refusal of the plan itself (ε out of
        range, unbounded group keys, an unknown column, a target above the rules' ε) raises `QueryRejected`."""
        body = self._body(sql, dataset, epsilon, weights, accuracy)
        return CheckReport.from_json(self._request("POST", "/v1/queries/check", json=body, sql=sql).json(), sql)

    def query(self, sql: str, dataset: str | None = None, epsilon: float | None = None, *, mode: Mode = "auto",
              timeout: float | None = None, progress: bool = True, weights: Mapping[str, float] | None = None,
              accuracy: Mapping[str, float] | None = None) -> Result:
        """Run `sql` at `epsilon` (default: the rules') and return its protected release.

        `weights` and `accuracy` are as for `check`: a query with targets spends exactly the ε its check
        showed. The same query at other weights is another release (a repeat at the same ones is replayed).
        Either runs synchronously (a queued job keeps its SQL and ε only).

        `mode`: "auto" lets the enclave decide (asynchronous when the query's deadline is long and the
        enclave has a query queue); "async" queues it (falling back to a synchronous request where the
        enclave has no queue); "sync" waits for the answer in one request. While a queued query runs, a
        progress bar shows its state (`progress=False` hides it).

        `timeout` (seconds, default none) bounds the whole call and raises `QueryTimeout`. A query still
        queued then is cancelled: nothing is spent. One that already started executing keeps running and
        its charge stays spent (it may have run): fetch it later with `query_result(error.query_id)`.
        A synchronous request cut off by the timeout may have been charged too.

        Raises `QueryRejected` (with each violation at its token) when refused before spending anything,
        `BudgetExhausted`, `Forbidden` (no grant), `QueryFailed` (charged, then failed), and so on.
        """
        started = time.monotonic()
        body = {**self._body(sql, dataset, epsilon, weights, accuracy), "mode": mode}
        try:
            response = self._submit(body, sql, timeout, started)
        except EnclaveError as error:
            if error.code not in ("async_unavailable", "async_not_allocated"):
                raise
            body["mode"] = "sync"  # this enclave has no query queue: ask again, waiting for the answer
            response = self._submit(body, sql, timeout, started)
        if response.status_code == 202:
            return self._await(QueryStatus.from_json(response.json()), sql, timeout, started, progress)
        return Result.from_json(response.json())

    def _body(self, sql: str, dataset: str | None, epsilon: float | None, weights: Mapping[str, float] | None,
              accuracy: Mapping[str, float] | None) -> dict[str, Any]:
        """A check or query request; weights and targets only when given, as the API's defaults are none."""
        body: dict[str, Any] = {"dataset": self._dataset(dataset), "sql": sql, "epsilon": epsilon}
        body.update({name: dict(value) for name, value in (("weights", weights), ("accuracy", accuracy))
                     if value is not None})
        return body

    def _submit(self, body: dict[str, Any], sql: str, timeout: float | None, started: float) -> httpx.Response:
        """POST the query, within what is left of the call's timeout (else the client's per-request one)."""
        left = None if timeout is None else max(0.001, timeout - (time.monotonic() - started))
        try:
            return self._request("POST", "/v1/queries", json=body, sql=sql, timeout=left)
        except httpx.TimeoutException:
            waited = timeout if timeout is not None else self._http.timeout.read
            raise QueryTimeout(f"No answer within {waited:g} s. The query may have started; then its charge "
                               "stays spent and queries() lists it once answered.") from None

    def _await(self, status: QueryStatus, sql: str, timeout: float | None, started: float,
               progress: bool) -> Result:
        """Poll an asynchronous query until it is released, failed or cancelled, or the timeout passes."""
        with _progress_bar(progress, status) as show:
            delay = POLL_SECONDS[0]
            while True:
                show(status)
                if status.state == "failed":
                    raise error_of(status.error or {"code": "internal_error", "message": "failed"}, sql=sql)
                if status.state == "cancelled":
                    raise EnclaveError("cancelled", f"Query {status.query_id} was cancelled.")
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise self._timed_out(status, timeout)
                time.sleep(delay if timeout is None else max(0.0, min(delay, timeout - (time.monotonic() - started))))
                delay = min(POLL_SECONDS[1], delay * 1.5)
                answer = self.query_result(status.query_id)
                if isinstance(answer, Result):
                    show(None)
                    return answer
                status = answer

    def _timed_out(self, status: QueryStatus, timeout: float) -> QueryTimeout:
        """The timeout's exception; a query still queued is cancelled first (DELETE), so nothing is spent."""
        query_id = status.query_id
        if status.state == "queued":
            with suppress(Conflict):  # answered in the meantime: it is there to fetch
                status = self.cancel(query_id)
        if status.state == "cancelled":
            spent = ("it had just started: its charge stays spent, and nothing is released" if status.charged
                     else "nothing was spent")
            return QueryTimeout(f"Query {query_id} was still queued after {timeout:g} s and was cancelled; {spent}.",
                                query_id=query_id, charged=status.charged)
        return QueryTimeout(f"Query {query_id} is still running after {timeout:g} s; its charge stays spent. Fetch "
                            f"its answer later with query_result({query_id!r}).", query_id=query_id, charged=True)

    def queries(self) -> list[QuerySummary]:
        """Your queries, newest last: id, status, dataset, ε."""
        return [QuerySummary(q["query_id"], q["status"], q.get("dataset"), q.get("epsilon"))
                for q in self._get("/v1/queries")]

    def query_result(self, query_id: str) -> Result | QueryStatus:
        """A released answer by id, or an asynchronous query's state and progress while it has none."""
        data = self._get(f"/v1/queries/{query_id}")
        return Result.from_json(data) if "rows" in data else QueryStatus.from_json(data)

    def cancel(self, query_id: str) -> QueryStatus:
        """Cancel an asynchronous query: queued, nothing is spent; executing, its charge stays spent."""
        return QueryStatus.from_json(self._request("DELETE", f"/v1/queries/{query_id}").json())

    # --- templates ------------------------------------------------------------------------------------

    def templates(self) -> list[Template]:
        """The approved templates (and your own proposals), with their parameters, ε per run and run limit."""
        return [Template.from_json(t) for t in self._get("/v1/templates")]

    def template(self, template_id: int) -> Template:
        return Template.from_json(self._get(f"/v1/templates/{template_id}"))

    def run_template(self, template_id: int, **parameters: str | int | float | bool) -> Result:
        """Run an approved template with its parameters (by name); spends the template's ε per run."""
        response = self._request("POST", f"/v1/templates/{template_id}/runs", json={"parameters": parameters})
        return Result.from_json(response.json())


@contextmanager
def _progress_bar(enabled: bool, status: QueryStatus) -> Iterator[Any]:
    """A tqdm bar of the query's progress (a share of the time to its answer), labelled with its state;
    `show(None)` completes it. Imported here: only a queued query needs tqdm."""
    if not enabled:
        yield lambda _status: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=f"query {status.query_id[:8]}", unit="%", leave=False,
               bar_format="{desc}: {percentage:3.0f}% |{bar}| {postfix}")

    def show(current: QueryStatus | None) -> None:
        done = 100 if current is None else round(100 * current.progress)
        bar.update(max(0, done - bar.n))
        bar.set_postfix_str("released" if current is None else current.state)

    try:
        yield show
    finally:
        bar.close()

