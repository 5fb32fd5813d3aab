"""Deep Memory (Activeloop's managed service, deeplake 3.9, `hub://` datasets) as a Trainer.

Sharp edges of the library worked around here (a streamed submit: `deep_memory_upload.py`):
- `VectorStore(...)` and `deep_memory.train(...)` call the Activeloop API, and some of those
  calls retry forever when the network is down. Every library call runs in a daemon worker
  thread with a deadline; past it we raise `TransientTrainingError` (the state machine retries)
  and abandon the thread (a daemon thread never keeps the process from exiting).
- `deep_memory.status(job_id)` prints a table, returns None and raises on some states. The
  status is read from the REST endpoint it uses, `GET {api}/api/deepmemory/v1/jobs/{id}/status`,
  with httpx and a bounded timeout.
- `deep_memory.train()` creates **or overwrites** the dataset `<dataset>_queries` (the
  questions, their embeddings and relevance) before starting the job. Starting a second job
  while one is running replaces the data the running job reads. So:
  * the training service resubmits only when the run's earlier job is failed or unknown
    (`deepmem.services.training.needs_resubmit`); a job still pending/training is polled
    again, a completed one is reused;
  * `submit` first asks the service for the dataset's jobs and refuses (transiently) to start
    while any is pending or training, which also covers a job whose id never reached the run
    (e.g. a submit that timed out after the library had started the job).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from deepmem.adapters.trainers.deep_memory_metrics import completed_metrics
from deepmem.adapters.trainers.deep_memory_upload import (
    DeepLakeQueriesUpload,
    PairPages,
    QueriesUpload,
    Relevance,
    build_training_data,
    write_pairs,
)
from deepmem.domain.datasets import CLOUD_PREFIX, is_cloud_dataset
from deepmem.domain.errors import NotEnoughPairsError, TrainingError, TransientTrainingError
from deepmem.domain.trainers import DEEP_MEMORY_MAX_PAIRS, deep_memory_refusal
from deepmem.ports import JobState, JobStatus

if TYPE_CHECKING:
    from deepmem.domain.models import TrainingPair, TrainingRun
    from deepmem.ports import Embedder

DEFAULT_API_URL = "https://app.activeloop.ai"
MIN_QUESTIONS = 10

#: (queries, relevance) -> job id. The default calls deeplake; tests inject their own.
TrainFunction = Callable[[list[str], Relevance], str]

_STATES: dict[str, JobState] = {
    "queued": JobState.PENDING,
    "pending": JobState.PENDING,
    "training": JobState.TRAINING,
    "running": JobState.TRAINING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.FAILED,
    "canceled": JobState.FAILED,
}
_ACTIVE = frozenset({JobState.PENDING, JobState.TRAINING})


_worker = threading.local()


def call_with_deadline[T](fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run `fn` in a daemon thread; raise TransientTrainingError if it has not returned in
    `timeout` seconds. Python cannot kill a thread: past the deadline the thread is marked
    cancelled (see `_GuardedRequests`) and abandoned; as a daemon it never blocks exit."""
    outcome: dict[str, Any] = {}
    done = threading.Event()
    cancel = threading.Event()

    def run() -> None:
        _worker.cancel = cancel
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"deepmem-{what}", daemon=True).start()
    if not done.wait(timeout):
        cancel.set()
        raise TransientTrainingError(f"{what} did not answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _cancelled() -> bool:
    cancel = getattr(_worker, "cancel", None)
    return cancel is not None and cancel.is_set()


class _GuardedRequests:
    """Stands in for `requests` inside deeplake's REST client, whose `request()` retries a
    connection error forever in a tight loop. A worker abandoned at its deadline would spin
    (and might start a job long after we gave up); here its next request raises instead, an
    error the library does not catch, so the thread unwinds."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if _cancelled():
            raise TransientTrainingError("Deep Memory call abandoned after its deadline")
        return self._inner.request(*args, **kwargs)


def parse_status(payload: dict[str, Any], job_id: str) -> JobStatus:
    """Map the service's job JSON to a JobStatus."""
    raw = str(payload.get("status", "")).lower()
    progress = payload.get("progress") or {}
    if not isinstance(progress, dict):
        progress = {"raw": progress}
    # An unknown status is treated as still running: polling again is harmless.
    state = _STATES.get(raw, JobState.PENDING)
    error = progress.get("error")
    if state is JobState.FAILED and not error:
        error = f"Deep Memory job {job_id} ended '{raw}' without an error message"
    metrics: dict[str, Any] = {}
    if state is JobState.COMPLETED:
        metrics = completed_metrics(progress, job_id)
    return JobStatus(
        state=state,
        progress=dict(progress) | {"status": raw},
        error=str(error) if error else None,
        metrics=metrics,
    )


def point_library_at(api_url: str | None) -> None:
    """Make deeplake's own REST client use `api_url` (it has no parameter for it, only this
    module global), so the library and our status calls talk to one backend: Activeloop's,
    a staging one, or a loopback fake in tests. Also guard its requests (`_GuardedRequests`)."""
    from deepmem.adapters.dataset.deeplake import import_deeplake

    import_deeplake()  # first: no update check at import
    import deeplake.client.client as library_client

    if api_url is not None:
        library_client.HUB_REST_ENDPOINT = api_url.rstrip("/")
    if not isinstance(library_client.requests, _GuardedRequests):
        library_client.requests = _GuardedRequests(library_client.requests)


def deeplake_train_function(
    dataset_path: str, token: str | None, embedder: Embedder, api_url: str | None = None
) -> TrainFunction:
    """The real thing: `VectorStore(path).deep_memory.train(...)` with our embedder."""

    def embedding_function(texts: str | Sequence[str]) -> Any:
        # deeplake calls it with a list of texts, and with one string for a single query.
        if isinstance(texts, str):
            return embedder.embed([texts])[0]
        return embedder.embed(list(texts))

    def train(queries: list[str], relevance: Relevance) -> str:
        from deeplake.core.vectorstore import VectorStore

        point_library_at(api_url)
        # read_only: train() writes only `<dataset>_queries`, never the corpus.
        store = VectorStore(path=dataset_path, token=token, read_only=True, verbose=False)
        return str(
            store.deep_memory.train(
                queries=queries,
                relevance=relevance,
                embedding_function=embedding_function,
                token=token,
            )
        )

    return train


def _library_error(exc: Exception) -> TrainingError:
    """Classify an error of the deeplake library (or of an injected train function)."""
    if isinstance(exc, TrainingError):
        return exc
    name = type(exc).__name__
    transient = {
        "ConnectionError",
        "Timeout",
        "ReadTimeout",
        "ConnectTimeout",
        "ServerException",
        "BadGatewayException",
        "GatewayTimeoutException",
        "OverLimitException",
        "TimeoutError",
    }
    message = str(exc) or name
    if name in transient or isinstance(exc, ConnectionError | TimeoutError):
        return TransientTrainingError(f"Deep Memory is unreachable for now: {message}")
    if name == "DeepMemoryAccessError":
        return TrainingError(f"Deep Memory is not available to this token: {message}")
    if name in {"AuthenticationException", "AuthorizationException"}:
        return TrainingError(f"Activeloop refused the token: {message}")
    return TrainingError(f"Deep Memory training could not start: {name}: {message}")


class DeepMemoryTrainer:
    """Trainer port over Deep Memory. See the module doc for the `_queries` overwrite rule."""

    def __init__(
        self,
        dataset_path: str,
        token: str | None,
        embedder: Embedder | None = None,
        *,
        api_url: str = DEFAULT_API_URL,
        http_client: httpx.Client | None = None,
        train_function: TrainFunction | None = None,
        submit_timeout: float = 600.0,
        status_timeout: float = 15.0,
        min_questions: int = MIN_QUESTIONS,
        pairs: PairPages | None = None,
        upload: QueriesUpload | None = None,
        max_pairs: int = DEEP_MEMORY_MAX_PAIRS,
    ) -> None:
        """Given `pairs` (a keyset reader), submit streams them (`deep_memory_upload`); else
        every query goes to `train()` in one call."""
        if not is_cloud_dataset(dataset_path):
            raise TrainingError(
                f"Deep Memory trains only hub:// datasets, not {dataset_path!r}: "
                "use the query adapter for this dataset"
            )
        if train_function is None:
            if embedder is None:
                raise ValueError("Deep Memory needs an embedder (or an injected train function)")
            train_function = deeplake_train_function(dataset_path, token, embedder, api_url)
        self.dataset_path = dataset_path
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.http = http_client or httpx.Client(timeout=httpx.Timeout(status_timeout))
        self.train_function = train_function
        self.submit_timeout = submit_timeout
        self.status_timeout = status_timeout
        self.min_questions = min_questions
        self.pairs = pairs
        self.upload = upload or DeepLakeQueriesUpload(dataset_path, token, api_url)
        self.embedder = embedder
        self.max_pairs = max_pairs

    # -- REST ----------------------------------------------------------------------------

    def _get(self, path: str, what: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.http.get(
                f"{self.api_url}{path}", headers=headers, timeout=self.status_timeout
            )
        except httpx.TimeoutException as exc:
            raise TransientTrainingError(
                f"{what}: Activeloop did not answer in {self.status_timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientTrainingError(f"{what}: Activeloop is unreachable: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientTrainingError(f"{what}: Activeloop answered {response.status_code}")
        if response.status_code in (401, 403):
            raise TrainingError(
                f"{what}: Activeloop refused the token ({response.status_code}): "
                f"{_description(response)}"
            )
        return response

    def check(self, job_id: str) -> JobStatus:
        response = self._get(f"/api/deepmemory/v1/jobs/{job_id}/status", "job status")
        if response.status_code == 404:
            # Unknown to the service: as good as failed, and safe to resubmit.
            return JobStatus(
                state=JobState.FAILED,
                error=f"Deep Memory job {job_id} is unknown to Activeloop",
                progress={"status": "unknown"},
            )
        if response.status_code >= 400:
            raise TrainingError(
                f"job status of {job_id}: Activeloop answered {response.status_code}: "
                f"{_description(response)}"
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise TransientTrainingError(f"job status of {job_id}: not JSON") from exc
        if isinstance(payload, list):  # the endpoint may answer a one-element list
            matching = [p for p in payload if isinstance(p, dict) and p.get("id") == job_id]
            payload = matching[0] if matching else {}
        if not isinstance(payload, dict):
            raise TransientTrainingError(f"job status of {job_id}: unexpected answer {payload!r}")
        return parse_status(payload, job_id)

    def active_jobs(self) -> list[str]:
        """Ids of this dataset's jobs still pending or training."""
        dataset_id = self.dataset_path[len(CLOUD_PREFIX) :]
        response = self._get(f"/api/deepmemory/v1/{dataset_id}/jobs", "list jobs")
        if response.status_code >= 400:
            # No list to check (unknown dataset, an API that changed): nothing known to be
            # running. A refused token was raised above; train() itself would fail on it too.
            return []
        try:
            jobs = response.json()
        except ValueError as exc:
            raise TransientTrainingError("list jobs: not JSON") from exc
        if isinstance(jobs, dict):
            jobs = [jobs]
        return [
            str(job.get("id"))
            for job in jobs or []
            if isinstance(job, dict) and _STATES.get(str(job.get("status", "")).lower()) in _ACTIVE
        ]

    # -- Trainer ---------------------------------------------------------------------------

    def submit(self, run: TrainingRun, pairs: Iterable[TrainingPair]) -> str:
        if self.pairs is not None:
            return self._submit_streamed(run, self.pairs)
        pairs = list(pairs)  # Deep Memory's train() takes every query in one call
        queries, relevance = build_training_data(pairs)
        if len(queries) < self.min_questions:
            raise NotEnoughPairsError(
                f"Deep Memory training needs at least {self.min_questions} distinct questions; "
                f"run {run.id} has {len(queries)} (from {len(pairs)} pairs)"
            )
        self._refuse_running()
        return self._library_call(lambda: self.train_function(queries, relevance))

    def _library_call(self, call: Callable[[], str]) -> str:
        try:
            return call_with_deadline(call, self.submit_timeout, "Deep Memory train")
        except TrainingError:
            raise
        except Exception as exc:
            raise _library_error(exc) from exc

    def _refuse_running(self) -> None:
        running = self.active_jobs()
        if running:
            # Starting now would overwrite <dataset>_queries under a running job.
            raise TransientTrainingError(
                f"Deep Memory job {running[0]} is still running on {self.dataset_path}; "
                "a new job starts only after it ends"
            )

    def _submit_streamed(self, run: TrainingRun, pages: PairPages) -> str:
        if refusal := deep_memory_refusal(run.pair_count, self.max_pairs):  # (the API's first)
            raise TrainingError(refusal)
        if self.embedder is None:
            raise ValueError("a streamed Deep Memory submit needs the embedder")
        embedder, least = self.embedder, self.min_questions
        if run.pair_count < least:  # fewer pairs than that cannot hold enough questions
            raise NotEnoughPairsError(f"Deep Memory training needs at least {least} questions")
        self._refuse_running()

        def upload_then_start() -> str:
            pairs, queries = write_pairs(pages, embedder, self.upload)
            if queries < least:
                raise NotEnoughPairsError(
                    f"Deep Memory training needs at least {least} distinct questions; run "
                    f"{run.id} has {queries} (from {pairs} pairs)"
                )
            return self.upload.start()

        return self._library_call(upload_then_start)


def _description(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("description") or body.get("detail") or body)
    except ValueError:
        pass
    return response.text[:200]
