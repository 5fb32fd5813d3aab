"""The query adapter's training maths: pure numpy, no I/O.

Training (unit-testable on synthetic embeddings):
- scores are cosine similarities between the adapted query `normalize(W q)` and the chunk
  embeddings, divided by a temperature;
- the loss is a softmax cross-entropy whose candidates are the batch's own positive chunks
  (in-batch negatives) plus chunks drawn from the whole corpus; other positives of the same
  question are masked out, never counted as negatives;
- a small L2 pull of W toward the identity keeps the map close to "do nothing" unless the
  data argues otherwise (measured on this kind of machine: corpus negatives and this pull
  were consistently better);
- Adam by hand; a deterministic share of the *questions* is held out and training stops
  early when the held-out loss (over the whole corpus) stops improving. The identity is
  evaluated first, so a map that never beats it on held-out questions is never returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from deepmem.domain.errors import DatasetError, NotEnoughPairsError

RECALL_KS: tuple[int, ...] = (1, 5, 10)
_EVAL_BLOCK = 1024  # queries scored against the corpus at a time, to bound memory
_REPORTED_CONFIG = (  # the settings a training's metrics record
    "holdout", "seed", "temperature", "l2_to_identity", "learning_rate", "batch_size",
    "corpus_negatives",
)  # fmt: skip


@dataclass(frozen=True)
class AdapterConfig:
    holdout: float = 0.2
    seed: int = 0
    temperature: float = 0.05
    l2_to_identity: float = 1e-2
    learning_rate: float = 2e-3
    batch_size: int = 128
    corpus_negatives: int = 512
    max_epochs: int = 40
    patience: int = 4
    min_questions: int = 10


@dataclass(frozen=True)
class AdapterResult:
    matrix: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuestionSet:
    """Questions as embeddings, each with the corpus rows that answer it."""

    embeddings: np.ndarray  # (n, d), L2-normalised
    positives: list[list[int]]  # per question, indices into the corpus

    def subset(self, rows: Sequence[int]) -> QuestionSet:
        idx = list(rows)
        return QuestionSet(self.embeddings[idx], [self.positives[i] for i in idx])

    def __len__(self) -> int:
        return len(self.positives)


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def apply_adapter(matrix: np.ndarray, queries: np.ndarray | Sequence[float]) -> np.ndarray:
    """Adapted, L2-normalised query embedding(s): one vector (d,) or a matrix (n, d)."""
    q = np.asarray(queries, dtype=np.float32)
    return normalize(q @ np.asarray(matrix, dtype=np.float32).T)


def group_pairs(
    pairs: Sequence[tuple[str, str]], corpus_index: Mapping[str, int]
) -> tuple[list[str], list[list[int]], int]:
    """(question, chunk id) pairs → unique questions, their corpus rows, pairs dropped.

    A question asked of several chunks becomes one question with several positives, so no
    positive ever serves as another copy's negative. Pairs whose chunk is not in the corpus
    are dropped and counted.
    """
    rows_by_question: dict[str, list[int]] = {}
    dropped = 0
    for question, chunk_id in pairs:
        row = corpus_index.get(chunk_id)
        if row is None:
            dropped += 1
            continue
        rows = rows_by_question.setdefault(question.strip(), [])
        if row not in rows:
            rows.append(row)
    questions = list(rows_by_question)
    return questions, [rows_by_question[q] for q in questions], dropped


def split_holdout(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train rows, held-out rows): the same seed always holds out the same."""
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * holdout)) if holdout > 0 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def top_k(query_vectors: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k most similar chunks per query, best first."""
    k = min(k, corpus.shape[0])
    out = np.empty((query_vectors.shape[0], k), dtype=np.int64)
    for start in range(0, query_vectors.shape[0], _EVAL_BLOCK):
        scores = query_vectors[start : start + _EVAL_BLOCK] @ corpus.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + _EVAL_BLOCK] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(
    query_vectors: np.ndarray,
    positives: Sequence[Sequence[int]],
    corpus: np.ndarray,
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, float]:
    """Share of each question's relevant chunks found in its top k, averaged over questions."""
    if len(positives) == 0:
        return {f"recall@{k}": 0.0 for k in ks}
    ranked = top_k(query_vectors, corpus, max(ks))
    result: dict[str, float] = {}
    for k in ks:
        total = 0.0
        for row, pos in zip(ranked[:, :k], positives, strict=True):
            total += len(set(row.tolist()) & set(pos)) / len(pos)
        result[f"recall@{k}"] = total / len(positives)
    return result


def _loss_and_grad(
    matrix: np.ndarray,
    queries: np.ndarray,
    positives: Sequence[Sequence[int]],
    corpus: np.ndarray,
    *,
    candidates: np.ndarray,
    temperature: float,
    l2_to_identity: float,
    with_grad: bool = True,
) -> tuple[float, np.ndarray | None]:
    """Mean softmax cross-entropy of each question's first positive among `candidates`.

    Each question's target is its first positive (every positive is made a candidate); its
    other positives are masked out of the softmax.
    """
    cand = corpus[candidates]  # (m, d)
    col_of = {int(c): j for j, c in enumerate(candidates.tolist())}
    raw = queries @ matrix.T  # (b, d)
    norms = np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    adapted = raw / norms
    logits = adapted @ cand.T / temperature  # (b, m)
    targets = np.array([col_of[pos[0]] for pos in positives])
    for i, pos in enumerate(positives):
        for other in pos[1:]:
            j = col_of.get(other)
            if j is not None:
                logits[i, j] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    b = len(positives)
    rows = np.arange(b)
    nll = -np.log(np.maximum(probs[rows, targets], 1e-30))
    delta = matrix - np.eye(matrix.shape[0], dtype=matrix.dtype)
    loss = float(nll.mean() + l2_to_identity * np.sum(delta * delta))
    if not with_grad:
        return loss, None
    d_logits = probs
    d_logits[rows, targets] -= 1.0
    d_logits /= b * temperature
    d_adapted = d_logits @ cand  # (b, d)
    # Back through the normalisation: d raw = (I - u u^T) d u / |raw|
    d_raw = (d_adapted - adapted * np.sum(d_adapted * adapted, axis=1, keepdims=True)) / norms
    grad = d_raw.T @ queries + 2.0 * l2_to_identity * delta
    return loss, grad


def heldout_loss(
    matrix: np.ndarray, questions: QuestionSet, corpus: np.ndarray, config: AdapterConfig
) -> float:
    """Loss over the whole corpus (no sampling), so it is deterministic across epochs."""
    n = len(questions)
    all_rows = np.arange(corpus.shape[0])
    total = 0.0
    for start in range(0, n, _EVAL_BLOCK):
        block = questions.subset(range(start, min(n, start + _EVAL_BLOCK)))
        loss, _ = _loss_and_grad(
            matrix,
            block.embeddings,
            block.positives,
            corpus,
            candidates=all_rows,
            temperature=config.temperature,
            l2_to_identity=0.0,
            with_grad=False,
        )
        total += loss * len(block)
    return total / n


@dataclass
class _Adam:
    """Adam by hand, on one matrix: the first and second moment estimates and the step."""

    learning_rate: float
    m1: np.ndarray
    m2: np.ndarray
    step: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def for_matrix(cls, matrix: np.ndarray, learning_rate: float) -> _Adam:
        return cls(learning_rate, np.zeros_like(matrix), np.zeros_like(matrix))

    def update(self, matrix: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """`matrix` after one step down `grad`, bias-corrected."""
        self.step += 1
        self.m1 = self.beta1 * self.m1 + (1 - self.beta1) * grad
        self.m2 = self.beta2 * self.m2 + (1 - self.beta2) * grad * grad
        m1_hat = self.m1 / (1 - self.beta1**self.step)
        m2_hat = self.m2 / (1 - self.beta2**self.step)
        return (matrix - self.learning_rate * m1_hat / (np.sqrt(m2_hat) + self.eps)).astype(
            np.float32
        )


@dataclass
class _Fit:
    """How training went: the best map so far by held-out loss, its epoch, the epochs run
    and the held-out loss after each (the identity's first)."""

    best: np.ndarray
    best_loss: float
    best_epoch: int = 0
    epochs: int = 0
    history: list[float] = field(default_factory=list)


def _checked_corpus(
    questions: QuestionSet, corpus: np.ndarray, config: AdapterConfig
) -> np.ndarray:
    """The corpus as float32, once the questions are enough and of the corpus's dimension."""
    n = len(questions)
    if n < config.min_questions:
        raise NotEnoughPairsError(
            f"the query adapter needs at least {config.min_questions} distinct questions "
            f"whose chunks are in the dataset; this run has {n}"
        )
    corpus = np.asarray(corpus, dtype=np.float32)
    dim = corpus.shape[1]
    if questions.embeddings.shape[1] != dim:
        raise DatasetError(
            f"question embeddings have {questions.embeddings.shape[1]} dimensions, "
            f"the dataset's chunk embeddings {dim}: they must come from the same model"
        )
    return corpus


def _negative_candidates(
    batch: QuestionSet, n_corpus: int, negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """The softmax's candidates for a batch: its own positives (each question's in-batch
    negatives) and `negatives` corpus rows drawn at random, sorted, without repeats."""
    in_batch = {row for pos in batch.positives for row in pos}
    drawn = rng.choice(n_corpus, size=min(negatives, n_corpus), replace=False)
    return np.array(sorted(in_batch | set(drawn.tolist())), dtype=np.int64)


class StepSettings(Protocol):
    """What one pass of Adam steps reads from a config (AdapterConfig, or the streamed job's)."""

    @property
    def batch_size(self) -> int: ...
    @property
    def corpus_negatives(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def l2_to_identity(self) -> float: ...


def _train_epoch(
    matrix: np.ndarray,
    train: QuestionSet,
    corpus: np.ndarray,
    config: StepSettings,
    *,
    adam: _Adam,
    rng: np.random.Generator,
) -> np.ndarray:
    """One pass over the training questions in a random order, one Adam step per batch."""
    order = rng.permutation(len(train))
    for start in range(0, len(train), config.batch_size):
        batch = train.subset(order[start : start + config.batch_size].tolist())
        candidates = _negative_candidates(batch, corpus.shape[0], config.corpus_negatives, rng)
        _, grad = _loss_and_grad(
            matrix,
            batch.embeddings,
            batch.positives,
            corpus,
            candidates=candidates,
            temperature=config.temperature,
            l2_to_identity=config.l2_to_identity,
        )
        assert grad is not None
        matrix = adam.update(matrix, grad)
    return matrix


def _fit(train: QuestionSet, held: QuestionSet, corpus: np.ndarray, config: AdapterConfig) -> _Fit:
    """Epochs from the identity until the held-out loss stops improving for `patience`
    epochs (or `max_epochs`); the identity itself is the first candidate for best."""
    rng = np.random.default_rng(config.seed + 1)
    identity = np.eye(corpus.shape[1], dtype=np.float32)
    matrix: np.ndarray = identity.copy()
    adam = _Adam.for_matrix(matrix, config.learning_rate)
    fit = _Fit(best=identity.copy(), best_loss=heldout_loss(identity, held, corpus, config))
    fit.history.append(round(fit.best_loss, 5))
    stale = 0
    for epoch in range(1, config.max_epochs + 1):
        fit.epochs = epoch
        matrix = _train_epoch(matrix, train, corpus, config, adam=adam, rng=rng)
        loss = heldout_loss(matrix, held, corpus, config)
        fit.history.append(round(loss, 5))
        if loss < fit.best_loss - 1e-6:
            fit.best, fit.best_loss, fit.best_epoch, stale = matrix.copy(), loss, epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    return fit


def _metrics(
    fit: _Fit,
    corpus: np.ndarray,
    config: AdapterConfig,
    *,
    questions: int,
    train: QuestionSet,
    held: QuestionSet,
) -> dict[str, Any]:
    """What training did, with held-out recall before (identity) and after (best map)."""
    before = recall_at_k(held.embeddings, held.positives, corpus)
    after = recall_at_k(apply_adapter(fit.best, held.embeddings), held.positives, corpus)
    return {
        "trainer": "query_adapter",
        "questions": questions,
        "train_questions": len(train),
        "heldout_questions": len(held),
        "corpus_size": corpus.shape[0],
        "dimension": corpus.shape[1],
        "epochs": fit.epochs,
        "best_epoch": fit.best_epoch,
        "heldout_loss_before": fit.history[0],
        "heldout_loss_after": round(fit.best_loss, 5),
        "recall_before": {k: round(v, 4) for k, v in before.items()},
        "recall_after": {k: round(v, 4) for k, v in after.items()},
        "config": reported_config(config),
    }


def reported_config(config: AdapterConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in _REPORTED_CONFIG}


def train_adapter(
    questions: QuestionSet, corpus: np.ndarray, config: AdapterConfig | None = None
) -> AdapterResult:
    """Train W on `questions` against `corpus` (rows L2-normalised); see the module doc."""
    config = config or AdapterConfig()
    corpus = _checked_corpus(questions, corpus, config)
    train_rows, held_rows = split_holdout(len(questions), config.holdout, config.seed)
    train = questions.subset(train_rows.tolist())
    held = questions.subset(held_rows.tolist())
    fit = _fit(train, held, corpus, config)
    metrics = _metrics(fit, corpus, config, questions=len(questions), train=train, held=held)
    return AdapterResult(matrix=fit.best, metrics=metrics)


# --- reading the dataset --------------------------------------------------------------------


def relative_gain(before: float, after: float) -> float:
    return (after - before) / before if before > 0 else math.inf if after > 0 else 0.0
