"""The guard: a new query map is applied only when it beats what search would use otherwise.

Pure numpy, no I/O. The trainer keeps a bounded, seeded share of the run's generated pairs
out of training (`GuardSplit`: by a hash of the chunk id, in pair order, so the in-memory and
the streamed path hold out exactly the same pairs), then scores every held-out question with
the base (identity) map, the new map and, when there is one, the previous active map.

The decision (`decide`): the new map wins against a reference when the lower end of a
seeded paired-bootstrap percentile interval (`confidence`, two-sided) of the mean
per-question difference in recall@10 is above zero, and the same interval for nDCG@10 is not
wholly below zero (a map that finds more in the top 10 but ranks it clearly worse is not a
win). It must win against the base and against the previous active map; with fewer than
`min_questions` held-out questions it is never applied (too few to tell). Relevance is binary
(a generated question's own chunk(s)), so nDCG@10 here is binary nDCG.

A map is a *query map*: a callable from query embeddings (n, d) to mapped, L2-normalised
embeddings (n, d), so any query model (the linear adapter is `linear_map(W)`) plugs in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepmem.adapters.trainers.adapter_maths import apply_adapter, normalize, top_k

#: query embeddings (n, d) -> mapped, L2-normalised query embeddings (n, d)
QueryMap = Callable[[np.ndarray], np.ndarray]

KS: tuple[int, ...] = (1, 5, 10)
DECIDING = "recall@10"
RANKING = "ndcg@10"  # must not be confidently worse
SCORE_BLOCK = 64  # held-out questions scored against the whole corpus at a time


@dataclass(frozen=True)
class GuardConfig:
    share: float = 0.1  # of the chunks whose pairs are held out
    max_pairs: int = 2_048
    min_questions: int = 20
    resamples: int = 2_000
    confidence: float = 0.95
    seed: int = 0


def identity_map(queries: np.ndarray) -> np.ndarray:
    return normalize(np.asarray(queries, dtype=np.float32))


def linear_map(matrix: np.ndarray) -> QueryMap:
    """The linear query adapter W as a query map: q -> normalise(W q)."""
    return lambda queries: apply_adapter(matrix, queries)


def is_guard_chunk(chunk_id: str, config: GuardConfig) -> bool:
    digest = hashlib.sha256(f"{config.seed}:{chunk_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < config.share


class GuardSplit:
    """Admits pairs to the held-out set in pair order: a pair whose chunk hashes into the
    share, while fewer than `max_pairs` are held. Deterministic for the seed and the order."""

    def __init__(self, config: GuardConfig, held: int = 0) -> None:
        self.config = config
        self.held = held

    def admit(self, chunk_id: str) -> bool:
        if self.held >= self.config.max_pairs or not is_guard_chunk(chunk_id, self.config):
            return False
        self.held += 1
        return True


def split_pairs(
    pairs: Iterable[tuple[str, str]], config: GuardConfig
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(question, chunk id) pairs in order -> (pairs to train on, held-out pairs)."""
    split = GuardSplit(config)
    train: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for pair in pairs:
        (held if split.admit(pair[1]) else train).append(pair)
    return train, held


def per_question(
    mapped: np.ndarray, positives: Sequence[Sequence[int]], corpus: np.ndarray
) -> dict[str, np.ndarray]:
    """Per question: recall@1/5/10 and binary nDCG@10 of mapped queries against the corpus."""
    n = len(positives)
    out = {f"recall@{k}": np.zeros(n) for k in KS} | {"ndcg@10": np.zeros(n)}
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for start in range(0, n, SCORE_BLOCK):
        ranked = top_k(mapped[start : start + SCORE_BLOCK], corpus, max(KS))
        for offset, row in enumerate(ranked):
            i = start + offset
            relevant = set(positives[i])
            hits = np.array([r in relevant for r in row.tolist()], dtype=np.float64)
            for k in KS:
                out[f"recall@{k}"][i] = hits[:k].sum() / len(relevant)
            ideal = discounts[: min(len(relevant), 10)].sum()
            out["ndcg@10"][i] = float(hits[:10] @ discounts[: len(hits[:10])]) / ideal
    return out


def score(
    query_map: QueryMap,
    queries: np.ndarray,
    positives: Sequence[Sequence[int]],
    corpus: np.ndarray,
) -> dict[str, np.ndarray]:
    return per_question(query_map(queries), positives, corpus)


def means(scores: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: round(float(v.mean()) if len(v) else 0.0, 4) for name, v in scores.items()}


def paired_interval(
    diff: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean of `diff` over seeded paired-bootstrap resamples."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    boot = np.empty(resamples)
    for start in range(0, resamples, 256):  # bounded memory: 256 x n indices at a time
        count = min(256, resamples - start)
        boot[start : start + count] = diff[rng.integers(0, n, size=(count, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    mean_difference: float
    interval: tuple[float, float]
    ranking_difference: float = 0.0
    ranking_interval: tuple[float, float] = (0.0, 0.0)

    @property
    def ranks_worse(self) -> bool:
        return self.ranking_interval[1] < 0.0

    @property
    def wins(self) -> bool:
        return self.interval[0] > 0.0 and not self.ranks_worse

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": DECIDING,
            "mean_difference": round(self.mean_difference, 4),
            "interval": [round(self.interval[0], 4), round(self.interval[1], 4)],
            f"{RANKING}_mean_difference": round(self.ranking_difference, 4),
            f"{RANKING}_interval": [round(v, 4) for v in self.ranking_interval],
            "wins": self.wins,
        }


def compare(
    candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray], config: GuardConfig
) -> Comparison:
    """The paired-bootstrap intervals of the candidate's gain in recall@10 and nDCG@10 (the
    same resamples for both: the same seed)."""
    diff = candidate[DECIDING] - reference[DECIDING]
    interval = paired_interval(diff, config.resamples, config.confidence, config.seed)
    if RANKING not in candidate or RANKING not in reference:
        return Comparison(float(diff.mean()), interval)
    ranking = candidate[RANKING] - reference[RANKING]
    ranking_interval = paired_interval(ranking, config.resamples, config.confidence, config.seed)
    return Comparison(float(diff.mean()), interval, float(ranking.mean()), ranking_interval)


def _refusal(against: str, comparison: Comparison, level: str) -> str:
    if comparison.interval[0] <= 0.0:
        return (
            f"does not beat {against}: {level} {DECIDING} difference is "
            f"{comparison.interval[0]:.4f}, not > 0"
        )
    return (
        f"ranks worse than {against}: the {RANKING} difference's interval ends at "
        f"{comparison.ranking_interval[1]:.4f}, below 0"
    )


@dataclass(frozen=True)
class Decision:
    applied: bool
    reason: str
    vs_base: Comparison | None
    vs_previous: Comparison | None


def decide(
    candidate: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    previous: dict[str, np.ndarray] | None,
    config: GuardConfig,
) -> Decision:
    """Apply only when the candidate wins against the base and the previous active map."""
    n = len(candidate[DECIDING])
    if n < config.min_questions:
        return Decision(
            False,
            f"only {n} held-out questions (fewer than {config.min_questions}): too few to tell",
            None,
            None,
        )
    vs_base = compare(candidate, base, config)
    vs_previous = None if previous is None else compare(candidate, previous, config)
    level = f"the lower end of the {config.confidence:.0%} paired-bootstrap interval of the"
    if not vs_base.wins:
        return Decision(False, _refusal("the base", vs_base, level), vs_base, vs_previous)
    if vs_previous is not None and not vs_previous.wins:
        reason = _refusal("the previous active adapter", vs_previous, level)
        return Decision(False, reason, vs_base, vs_previous)
    against = "the base and the previous active adapter" if previous is not None else "the base"
    reason = f"beats {against}: {level} {DECIDING} difference is above 0"
    return Decision(True, reason, vs_base, vs_previous)


def evaluate(
    queries: np.ndarray,
    positives: Sequence[Sequence[int]],
    corpus: np.ndarray,
    candidate: QueryMap,
    *,
    previous: QueryMap | None,
    config: GuardConfig,
    previous_job_id: str | None = None,
) -> dict[str, Any]:
    """The guard's record for a run's metrics: numbers before -> after, the previous active
    map's when there is one, the intervals, and `applied` with its reason."""
    corpus = np.asarray(corpus, dtype=np.float32)
    base_scores = score(identity_map, queries, positives, corpus)
    new_scores = score(candidate, queries, positives, corpus)
    old_scores = None if previous is None else score(previous, queries, positives, corpus)
    decision = decide(new_scores, base_scores, old_scores, config)
    return {
        "applied": decision.applied,
        "reason": decision.reason,
        "questions": len(positives),
        "before": means(base_scores),
        "after": means(new_scores),
        "previous": None if old_scores is None else means(old_scores) | {"job_id": previous_job_id},
        "vs_base": None if decision.vs_base is None else decision.vs_base.as_dict(),
        "vs_previous": None if decision.vs_previous is None else decision.vs_previous.as_dict(),
        "relevance": "binary (each generated question's own chunks)",
        "confidence": config.confidence,
        "resamples": config.resamples,
        "seed": config.seed,
        "share": config.share,
        "max_pairs": config.max_pairs,
    }
