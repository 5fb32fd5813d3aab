"""The Trainer port over the query adapters (`adapter_maths`, `adapter_models`): a learned
linear map W applied to query embeddings before search, alone (`linear`) or averaged over
cross-fitted members and followed by a feedback step against the corpus (`feedback`,
`query_maps`).

The same idea as Deep Memory, trained here with numpy only, so it works for any dataset (local
ones included). Chunk embeddings are left untouched: only the query side moves, so the dataset
never has to be re-embedded and the adapter can be dropped at any time.

A bounded, seeded share of the pairs is held out of training for the guard (`guard.py`): the
new adapter is saved either way, but search uses it only when the guard applied it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepmem.adapters.dataset.corpus import Corpus, embed_questions, load_corpus
from deepmem.adapters.trainers.adapter_maths import (
    AdapterConfig,
    AdapterResult,
    QuestionSet,
    group_pairs,
)
from deepmem.adapters.trainers.adapter_models import train_query_model
from deepmem.adapters.trainers.guard import GuardConfig, split_pairs
from deepmem.adapters.trainers.guarded import held_questions
from deepmem.adapters.trainers.query_maps import FEEDBACK, FEEDBACK_MODEL, QueryModel
from deepmem.domain.errors import DatasetError, NotEnoughPairsError
from deepmem.domain.models import TrainerKind
from deepmem.domain.trainers import adapter_job_id, run_of_adapter_job
from deepmem.ports import JobState, JobStatus

if TYPE_CHECKING:
    from deepmem.adapters.trainers.adapter_job import PairPages, StreamConfig, StreamedAdapterJob
    from deepmem.adapters.trainers.artifacts import ArtifactStore
    from deepmem.domain.models import TrainingPair, TrainingRun
    from deepmem.ports import Embedder


def query_model_for(kind: TrainerKind) -> QueryModel:
    """The query model a trainer setting trains: linear, or the feedback model's defaults."""
    return FEEDBACK_MODEL if kind is TrainerKind.FEEDBACK_ADAPTER else QueryModel()


@dataclass(frozen=True)
class GuardedResult:
    """A trained adapter and the held-out questions the guard scores it on (never trained on)."""

    result: AdapterResult
    held: QuestionSet
    held_pairs: int


def train_on_pairs(
    pairs: Sequence[tuple[str, str]],
    corpus: Corpus,
    embedder: Embedder,
    config: AdapterConfig | None = None,
    *,
    model: QueryModel | None = None,
    guard: GuardConfig | None = None,
) -> GuardedResult:
    """(question, chunk id) pairs in pair order → the guard's held-out pairs (`split_pairs`)
    and an adapter (`model`: linear by default) trained on the others, with pair bookkeeping
    in the metrics."""
    config = config or AdapterConfig()
    train_pairs, held_pairs = split_pairs(pairs, guard or GuardConfig())
    questions, positives, dropped = group_pairs(train_pairs, corpus.index)
    if len(questions) < config.min_questions:
        raise NotEnoughPairsError(
            f"the query adapter needs at least {config.min_questions} distinct questions whose "
            f"chunks are in the dataset; got {len(questions)} from {len(pairs)} pairs "
            f"({dropped} pairs name chunks the dataset does not have)"
        )
    if embedder.dimension != corpus.dimension:
        raise DatasetError(
            f"the embedder {embedder.model_name} gives {embedder.dimension} dimensions, the "
            f"dataset {corpus.path} {corpus.dimension}: train with the model that built it"
        )
    embedded = QuestionSet(embed_questions(embedder, questions), positives)
    result = train_query_model(embedded, corpus.embeddings, config, model)
    held, held_dropped = held_questions(embedder, held_pairs, corpus)
    metrics = result.metrics | {
        "pairs": len(pairs),
        "pairs_dropped": dropped + held_dropped,
        "embedding_model": embedder.model_name,
    }
    return GuardedResult(AdapterResult(result.matrix, metrics), held, len(held_pairs))


_CORPUS_CACHE: dict[str, Corpus] = {}


# --- the Trainer port --------------------------------------------------------------------


class QueryAdapterTrainer:
    """Trainer port over the query adapter: `submit` trains synchronously (seconds) and
    stores the artifact; `check` reads it back. The job id is `adapter-<run id>-<attempt>`,
    so a proceed (a new attempt) trains afresh while a retried submit of the same attempt
    finds its artifact and does nothing twice.

    A run of more than `stream_above` pairs, given a keyset reader of its pairs (`pairs`),
    trains as a `StreamedAdapterJob` instead: `submit` and then every `check` work for
    `seconds_per_call` and checkpoint in the artifact store, and `check` answers `training`
    until the job is done, so the state machine's submit → wait → check loop carries it
    across as many invocations as it needs, in memory independent of the pair count."""

    def __init__(
        self,
        dataset_path: str,
        embedder: Embedder,
        artifacts: ArtifactStore,
        *,
        token: str | None = None,
        config: AdapterConfig | None = None,
        pairs: PairPages | None = None,
        stream_above: int = 200_000,
        seconds_per_call: float = 600.0,
        stream_config: StreamConfig | None = None,
        model: QueryModel | None = None,
        guard: GuardConfig | None = None,
    ) -> None:
        self.dataset_path = dataset_path
        self.embedder = embedder
        self.artifacts = artifacts
        self.token = token
        self.config = config or AdapterConfig()
        self.pairs = pairs
        self.stream_above = stream_above
        self.seconds_per_call = seconds_per_call
        self.stream_config = stream_config
        self.model = model or QueryModel()
        self.kind = (
            TrainerKind.FEEDBACK_ADAPTER
            if self.model.kind == FEEDBACK
            else TrainerKind.QUERY_ADAPTER
        )
        self.guard = guard or GuardConfig()

    def _corpus(self) -> Corpus:
        """The dataset's corpus, kept for the next invocation of a warm function: a streamed
        job reads it on every call, and only the latest dataset is kept."""
        cached = _CORPUS_CACHE.get(self.dataset_path)
        if cached is None:
            _CORPUS_CACHE.clear()
            cached = _CORPUS_CACHE[self.dataset_path] = load_corpus(self.dataset_path, self.token)
        return cached

    def _job(self, job_id: str, run_id: str) -> StreamedAdapterJob:
        from deepmem.adapters.trainers.adapter_job import StreamedAdapterJob

        assert self.pairs is not None
        return StreamedAdapterJob(
            job_id,
            run_id,
            self.artifacts,
            embedder=self.embedder,
            corpus=self._corpus,
            pairs=self.pairs,
            config=self.stream_config,
            model=self.model,
            guard=self.guard,
        )

    def submit(self, run: TrainingRun, pairs: Iterable[TrainingPair]) -> str:
        from deepmem.adapters.trainers.artifacts import AdapterArtifact, ArtifactNotFoundError
        from deepmem.adapters.trainers.guarded import guard_and_save

        job_id = adapter_job_id(run.id, run.attempt, self.kind)
        try:
            self.artifacts.load(job_id)
            return job_id  # this attempt already trained: a retried call must not redo it
        except ArtifactNotFoundError:
            pass
        if self.pairs is not None and run.pair_count > self.stream_above:
            self._job(job_id, str(run.id)).run(self.seconds_per_call)
            return job_id
        corpus = load_corpus(self.dataset_path, self.token)
        trained = train_on_pairs(
            [(p.question, p.chunk_id) for p in pairs],
            corpus,
            self.embedder,
            self.config,
            model=self.model,
            guard=self.guard,
        )
        artifact = AdapterArtifact(
            job_id=job_id,
            run_id=str(run.id),
            matrix=trained.result.matrix,
            embedding_model=self.embedder.model_name,
            dimension=corpus.dimension,
            metrics=trained.result.metrics | {"job_id": job_id, "dataset": self.dataset_path},
            model=self.model,
        )
        guard_and_save(
            self.artifacts,
            artifact,
            trained.held,
            corpus.embeddings,
            self.guard,
            held_pairs=trained.held_pairs,
        )
        return job_id

    def check(self, job_id: str) -> JobStatus:
        from deepmem.adapters.trainers.artifacts import ArtifactNotFoundError
        from deepmem.adapters.trainers.guarded import ensure_active

        try:
            artifact = self.artifacts.load(job_id)
        except ArtifactNotFoundError:
            status = self._continue(job_id)
            if status is not None:
                return status
            # submit is synchronous: no artifact and no streamed job: it never finished.
            return JobStatus(
                state=JobState.FAILED,
                error=f"no query adapter artifact for job {job_id}: it never completed",
            )
        ensure_active(self.artifacts, artifact)
        return JobStatus(
            state=JobState.COMPLETED,
            progress={"epochs": artifact.metrics.get("epochs")},
            metrics=artifact.metrics,
        )

    def _continue(self, job_id: str) -> JobStatus | None:
        """A streamed job's next slice of work; None when there is no such job."""
        if self.pairs is None:
            return None
        run_id = run_of_adapter_job(job_id)
        job = self._job(job_id, run_id)
        if job.progress() is None:
            return None
        status = job.run(self.seconds_per_call)
        if status.state is JobState.COMPLETED:
            return self.check(job_id)
        return status
