"""The query adapter for a run too large for one invocation or for one function's memory.

A job in stages, each resumable from the artifact store, run for a time budget per invocation
(`submit`, then every `check` of the state machine's loop):
1. embed: the run's pairs by keyset, `shard_pairs` at a time, grouped by question (all its
   chunks are positives), embedded once per run and page (`embedded_questions`: a proceed
   reuses what an earlier attempt embedded, for the same page and model), the keyset position
   in the checkpoint. The guard's pairs (`guarded.GuardPairs`) are set aside first; a question
   whose stable hash falls in the holdout share is held out while fewer than `heldout_max` are.
2. train: epochs over the shards, minibatches with `corpus_negatives` corpus rows drawn per
   batch (the loss and Adam of `adapter_maths`), a checkpoint (W, Adam, best W, position)
   after each shard. The held-out loss, after each epoch, is over a fixed candidate set (the
   held-out positives and `heldout_candidates` corpus rows drawn once): deterministic, and
   bounded whatever the corpus size. Early stopping as in `adapter_maths`.
3. done: the best map saved as the job's artifact with held-out recall before and after, and
   the guard's verdict on its pairs (the same as the in-memory path's, at most `max_pairs`).

Memory, none of it growing with the pair count: the corpus (chunks x d x 4 B), one shard
(`shard_pairs` x d x 4 B), W, Adam and the best W (4 x d^2 x 4 B), the held-out set
(`heldout_max` x d x 4 B) and a block's scores (`SCORE_BLOCK` x chunks x 4 B for recall,
`batch_size` x candidates x 4 B for the loss).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmem.adapters.dataset.corpus import Corpus
from deepmem.adapters.trainers.adapter_maths import (
    QuestionSet,
    _Adam,
    _loss_and_grad,
    _train_epoch,
    recall_at_k,
)
from deepmem.adapters.trainers.artifacts import AdapterArtifact
from deepmem.adapters.trainers.embedded_questions import EmbeddedQuestions
from deepmem.adapters.trainers.embedded_questions import load_npz as _load_npz
from deepmem.adapters.trainers.embedded_questions import npz as _npz
from deepmem.adapters.trainers.embedded_questions import pack as _pack
from deepmem.adapters.trainers.embedded_questions import pack_rows as _pack_rows
from deepmem.adapters.trainers.embedded_questions import unpack as _unpack
from deepmem.adapters.trainers.guard import GuardConfig
from deepmem.adapters.trainers.guarded import GuardPairs, guard_and_save
from deepmem.adapters.trainers.query_maps import LINEAR, QueryModel, query_map
from deepmem.domain.errors import NotEnoughPairsError
from deepmem.ports import JobState, JobStatus

if TYPE_CHECKING:
    from deepmem.adapters.trainers.artifacts import ArtifactStore
    from deepmem.domain.models import TrainingPair
    from deepmem.ports import Embedder

#: (after id, limit) -> the run's next pairs by keyset.
PairPages = Callable[[int, int], Sequence["TrainingPair"]]
SCORE_BLOCK = 64  # held-out queries scored against the whole corpus at a time (recall)
STATE, MATRICES, HELDOUT = "state.json", "matrices.npz", "heldout.npz"  # the job's files


@dataclass(frozen=True)
class StreamConfig:
    shard_pairs: int = 10_000  # the most a keyset read returns in one call (the SQL caps it)
    heldout_max: int = 2_048
    heldout_candidates: int = 4_096
    holdout: float = 0.05
    seed: int = 0
    temperature: float = 0.05
    l2_to_identity: float = 1e-2
    learning_rate: float = 2e-3
    batch_size: int = 128
    corpus_negatives: int = 512
    max_epochs: int = 10
    patience: int = 2
    min_questions: int = 10


@dataclass
class JobProgress:
    """The checkpoint: where the job is, saved after every unit of work."""

    stage: str = "embed"
    after: int = 0
    shards: int = 0
    pairs: int = 0
    pairs_dropped: int = 0
    train_questions: int = 0
    heldout_questions: int = 0
    epoch: int = 0
    next_shard: int = 0
    best_loss: float | None = None
    best_epoch: int = 0
    stale: int = 0
    adam_step: int = 0
    history: list[float] = field(default_factory=list)
    invocations: int = 0
    shards_reused: int = 0  # pages whose embeddings an earlier attempt of the run had made
    guard_pairs: int = 0


def _held_out(question: str, share: float) -> bool:
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


class StreamedAdapterJob:
    def __init__(
        self,
        job_id: str,
        run_id: str,
        artifacts: ArtifactStore,
        *,
        embedder: Embedder,
        corpus: Callable[[], Corpus],
        pairs: PairPages,
        config: StreamConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        model: QueryModel | None = None,
        guard: GuardConfig | None = None,
    ) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.artifacts = artifacts
        self.embedder = embedder
        self._corpus_loader = corpus
        self._corpus: Corpus | None = None
        self.pairs = pairs
        self.config = config or StreamConfig()
        self.clock = clock
        # The map the artifact names; one matrix is trained whatever the model (its members
        # are not: averaging is for runs small enough to train at once).
        self.model = model or QueryModel()
        self.guard = guard or GuardConfig()

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = self._corpus_loader()
        return self._corpus

    def progress(self) -> JobProgress | None:
        data = self.artifacts.get_blob(self.job_id, STATE)
        return None if data is None else JobProgress(**json.loads(data))

    def _save(self, progress: JobProgress) -> None:
        self.artifacts.put_blob(self.job_id, STATE, json.dumps(progress.__dict__).encode())

    def run(self, seconds: float) -> JobStatus:
        """Work for about `seconds` (at least one unit), checkpointing; say where it is."""
        deadline = self.clock() + seconds
        progress = self.progress() or JobProgress()
        progress.invocations += 1
        while progress.stage != "done":
            if progress.stage == "embed":
                self._embed_shard(progress)
            else:
                self._train_shard(progress)
            self._save(progress)
            if self.clock() >= deadline:
                break
        if progress.stage == "done":
            return JobStatus(state=JobState.COMPLETED, progress=progress.__dict__)
        return JobStatus(state=JobState.TRAINING, progress=progress.__dict__)

    # -- embed --------------------------------------------------------------------------

    def _embed_shard(self, progress: JobProgress) -> None:
        page = self.pairs(progress.after, self.config.shard_pairs)
        if not page:
            self._start_training(progress)
            return
        embedded = EmbeddedQuestions(
            self.run_id, self.artifacts, self.embedder, self.corpus.dimension
        ).page(page)
        row_of = {question: i for i, question in enumerate(embedded.questions)}
        rows_by_question: dict[str, list[int]] = {}
        guard_pairs = GuardPairs(self.artifacts, self.job_id, self.guard)
        train_pairs, progress.guard_pairs = guard_pairs.hold_out(
            page, progress.guard_pairs, embedded, self.corpus
        )
        for pair in train_pairs:
            row = self.corpus.index.get(pair.chunk_id)
            if row is None:
                progress.pairs_dropped += 1
                continue
            rows = rows_by_question.setdefault(pair.question.strip(), [])
            if row not in rows:
                rows.append(row)
        held = self._held_out_set()
        train_q: list[str] = []
        held_q: list[str] = []
        for question in rows_by_question:
            room = len(held) + len(held_q) < self.config.heldout_max
            if room and _held_out(question, self.config.holdout):
                held_q.append(question)
            else:
                train_q.append(question)
        if held_q:
            rows = [row_of[q] for q in held_q]
            added = QuestionSet(embedded.embeddings[rows], [rows_by_question[q] for q in held_q])
            held = _concat(held, added)
            self.artifacts.put_blob(self.job_id, HELDOUT, _pack(held))
        # The shard names its questions' rows in the run's embedded page, not a copy of them.
        shard = _pack_rows(
            embedded.key, [row_of[q] for q in train_q], [rows_by_question[q] for q in train_q]
        )
        self.artifacts.put_blob(self.job_id, f"shard-{progress.shards}.npz", shard)
        progress.shards_reused += int(embedded.reused)
        progress.shards += 1
        progress.after = page[-1].id
        progress.pairs += len(page)
        progress.train_questions += len(train_q)
        progress.heldout_questions = len(held)

    def _shard(self, index: int) -> QuestionSet:
        data = self.artifacts.get_blob(self.job_id, f"shard-{index}.npz")
        assert data is not None, f"shard {index} of job {self.job_id} is missing"
        arrays = _load_npz(data)
        questions = EmbeddedQuestions(
            self.run_id, self.artifacts, self.embedder, self.corpus.dimension
        )
        key = str(arrays["key"])
        embeddings = questions.load(key)
        assert embeddings is not None, f"embedded questions {key} of job {self.job_id} are missing"
        offsets, flat = arrays["offsets"], arrays["positives"]
        positives = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
        return QuestionSet(embeddings[arrays["rows"]], positives)

    def _held_out_set(self) -> QuestionSet:
        data = self.artifacts.get_blob(self.job_id, HELDOUT)
        if data is None:
            return QuestionSet(np.zeros((0, self.corpus.dimension), dtype=np.float32), [])
        return _unpack(data)

    def _start_training(self, progress: JobProgress) -> None:
        if progress.train_questions < self.config.min_questions or not progress.heldout_questions:
            raise NotEnoughPairsError(
                f"the query adapter needs at least {self.config.min_questions} distinct "
                f"questions whose chunks are in the dataset, some held out; got "
                f"{progress.train_questions} to train on and {progress.heldout_questions} held out"
            )
        dim = self.corpus.dimension
        identity = np.eye(dim, dtype=np.float32)
        zeros = np.zeros_like(identity)
        progress.best_loss = self._heldout_loss(identity)
        progress.history.append(round(progress.best_loss, 5))
        self._save_matrices(identity, zeros, zeros.copy(), identity.copy())
        progress.stage = "train"
        progress.epoch = 1

    # -- train --------------------------------------------------------------------------

    def _train_shard(self, progress: JobProgress) -> None:
        cfg = self.config
        matrix, m1, m2, best = self._load_matrices()
        adam = _Adam(cfg.learning_rate, m1, m2, step=progress.adam_step)
        shard = self._shard(progress.next_shard)
        corpus = self.corpus.embeddings
        rng = np.random.default_rng([cfg.seed, progress.epoch, progress.next_shard])
        matrix = _train_epoch(matrix, shard, corpus, cfg, adam=adam, rng=rng)
        progress.adam_step = adam.step
        progress.next_shard += 1
        if progress.next_shard >= progress.shards:
            best = self._end_epoch(progress, matrix, best)
        self._save_matrices(matrix, adam.m1, adam.m2, best)
        if progress.stage == "done":
            self._save_artifact(progress, best)

    def _end_epoch(self, progress: JobProgress, matrix: np.ndarray, best: np.ndarray) -> np.ndarray:
        loss = self._heldout_loss(matrix)
        progress.history.append(round(loss, 5))
        assert progress.best_loss is not None
        if loss < progress.best_loss - 1e-6:
            best, progress.best_loss, progress.best_epoch, progress.stale = (
                matrix.copy(),
                loss,
                progress.epoch,
                0,
            )
        else:
            progress.stale += 1
        if progress.stale >= self.config.patience or progress.epoch >= self.config.max_epochs:
            progress.stage = "done"
        else:
            progress.epoch += 1
            progress.next_shard = 0
        return best

    def _heldout_loss(self, matrix: np.ndarray) -> float:
        held = self._held_out_set()
        corpus = self.corpus.embeddings
        rng = np.random.default_rng([self.config.seed, 7919])
        drawn = rng.choice(
            corpus.shape[0],
            size=min(self.config.heldout_candidates, corpus.shape[0]),
            replace=False,
        )
        rows = {r for p in held.positives for r in p} | set(drawn.tolist())
        candidates = np.array(sorted(rows), dtype=np.int64)
        total = 0.0
        for start in range(0, len(held), 256):
            block = held.subset(range(start, min(len(held), start + 256)))
            loss, _ = _loss_and_grad(
                matrix,
                block.embeddings,
                block.positives,
                corpus,
                candidates=candidates,
                temperature=self.config.temperature,
                l2_to_identity=0.0,
                with_grad=False,
            )
            total += loss * len(block)
        return total / len(held)

    def _save_matrices(self, *matrices: np.ndarray) -> None:
        names = ("matrix", "m1", "m2", "best")
        arrays = dict(zip(names, matrices, strict=True))
        self.artifacts.put_blob(self.job_id, MATRICES, _npz(**arrays))

    def _load_matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        data = self.artifacts.get_blob(self.job_id, MATRICES)
        assert data is not None, f"job {self.job_id} has no matrices"
        arrays = _load_npz(data)
        return arrays["matrix"], arrays["m1"], arrays["m2"], arrays["best"]

    # -- done ---------------------------------------------------------------------------

    def _save_artifact(self, progress: JobProgress, best: np.ndarray) -> None:
        held = self._held_out_set()
        corpus = self.corpus.embeddings
        before = _blocked_recall(held.embeddings, held.positives, corpus)
        search_map = query_map(replace(self.model, members=1), best, corpus)
        mapped = np.concatenate(
            [
                search_map.apply(held.embeddings[start : start + SCORE_BLOCK])
                for start in range(0, len(held), SCORE_BLOCK)
            ]
        )
        after = _blocked_recall(mapped, held.positives, corpus)
        metrics: dict[str, Any] = {
            "trainer": "query_adapter" if self.model.kind == LINEAR else "feedback_adapter",
            "query_model": self.model.as_dict() | {"members": 1},
            "streamed": True,
            "pairs": progress.pairs,
            "pairs_dropped": progress.pairs_dropped,
            "train_questions": progress.train_questions,
            "heldout_questions": len(held),
            "corpus_size": corpus.shape[0],
            "dimension": corpus.shape[1],
            "epochs": progress.epoch,
            "best_epoch": progress.best_epoch,
            "heldout_loss_before": progress.history[0],
            "heldout_loss_after": round(progress.best_loss or 0.0, 5),
            "recall_before": {k: round(v, 4) for k, v in before.items()},
            "recall_after": {k: round(v, 4) for k, v in after.items()},
            "invocations": progress.invocations,
            "shards": progress.shards,
            "shards_reused": progress.shards_reused,
            "embedding_model": self.embedder.model_name,
            "job_id": self.job_id,
        }
        guard_pairs = GuardPairs(self.artifacts, self.job_id, self.guard)
        pairs, guard_set = guard_pairs.pairs(), guard_pairs.questions(corpus.shape[1])
        name, dim, model = self.embedder.model_name, corpus.shape[1], replace(self.model, members=1)
        artifact = AdapterArtifact(self.job_id, self.run_id, best, name, dim, metrics, model=model)
        guard_and_save(
            self.artifacts, artifact, guard_set, corpus, self.guard, held_pairs=len(pairs)
        )


def _concat(a: QuestionSet, b: QuestionSet) -> QuestionSet:
    return QuestionSet(np.concatenate([a.embeddings, b.embeddings]), a.positives + b.positives)


def _blocked_recall(
    queries: np.ndarray, positives: Sequence[Sequence[int]], corpus: np.ndarray
) -> dict[str, float]:
    """`recall_at_k` over `SCORE_BLOCK` queries at a time, so the scores stay small."""
    totals: dict[str, float] = {}
    for start in range(0, len(positives), SCORE_BLOCK):
        part = recall_at_k(
            queries[start : start + SCORE_BLOCK], positives[start : start + SCORE_BLOCK], corpus
        )
        for key, value in part.items():
            totals[key] = totals.get(key, 0.0) + value * len(positives[start : start + SCORE_BLOCK])
    return {key: value / max(1, len(positives)) for key, value in totals.items()}
