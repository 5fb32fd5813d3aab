"""The query adapter's training on synthetic embeddings: numpy only, no dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from deepmem.adapters.trainers.adapter_maths import (
    AdapterConfig,
    QuestionSet,
    _loss_and_grad,
    apply_adapter,
    group_pairs,
    normalize,
    recall_at_k,
    split_holdout,
    train_adapter,
)
from deepmem.domain.errors import NotEnoughPairsError


def _corpus(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return normalize(rng.normal(size=(n, d))).astype(np.float32)


def test_recovers_a_planted_linear_distortion() -> None:
    rng = np.random.default_rng(3)
    d, n = 32, 1000
    chunks = _corpus(rng, n, d)
    distortion = np.eye(d) + 2.0 * rng.normal(size=(d, d)) / np.sqrt(d)
    queries = normalize(chunks @ distortion.T + 0.1 * rng.normal(size=(n, d))).astype(np.float32)

    result = train_adapter(QuestionSet(queries, [[i] for i in range(n)]), chunks)

    before, after = result.metrics["recall_before"], result.metrics["recall_after"]
    assert before["recall@1"] < 0.5
    assert after["recall@1"] > before["recall@1"] + 0.4
    assert after["recall@10"] > 0.95
    assert result.metrics["heldout_questions"] == 200
    assert result.metrics["heldout_loss_after"] < result.metrics["heldout_loss_before"]


def test_stays_at_identity_when_there_is_nothing_to_learn() -> None:
    rng = np.random.default_rng(5)
    d, n = 32, 400
    chunks = _corpus(rng, n, d)
    # Queries are their chunk plus isotropic noise: no linear map helps on unseen questions.
    queries = normalize(chunks + 0.05 * rng.normal(size=(n, d))).astype(np.float32)

    result = train_adapter(QuestionSet(queries, [[i] for i in range(n)]), chunks)

    drift = np.linalg.norm(result.matrix - np.eye(d)) / np.sqrt(d)
    assert drift < 0.05
    before, after = result.metrics["recall_before"], result.metrics["recall_after"]
    assert after["recall@1"] >= before["recall@1"]


def test_refuses_too_few_questions_with_a_clear_message() -> None:
    rng = np.random.default_rng(0)
    chunks = _corpus(rng, 20, 8)
    few = QuestionSet(chunks[:5].copy(), [[i] for i in range(5)])
    with pytest.raises(NotEnoughPairsError, match=r"at least 10 distinct questions.*has 5"):
        train_adapter(few, chunks)


def test_holdout_split_is_deterministic_by_seed_and_disjoint() -> None:
    train_a, held_a = split_holdout(100, 0.2, seed=7)
    train_b, held_b = split_holdout(100, 0.2, seed=7)
    _, held_c = split_holdout(100, 0.2, seed=8)
    assert held_a.tolist() == held_b.tolist() and train_a.tolist() == train_b.tolist()
    assert held_a.tolist() != held_c.tolist()
    assert len(held_a) == 20 and not set(held_a.tolist()) & set(train_a.tolist())


def test_group_pairs_merges_repeated_questions_and_drops_unknown_chunks() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    pairs = [("what is x?", "a"), ("what is x? ", "b"), ("what is y?", "c"), ("z?", "gone")]
    questions, positives, dropped = group_pairs(pairs, index)
    assert questions == ["what is x?", "what is y?"]
    assert positives == [[0, 1], [2]]
    assert dropped == 1


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    d = 8
    corpus = normalize(rng.normal(size=(30, d)))
    queries = normalize(rng.normal(size=(5, d)))
    positives = [[0], [1, 12], [2], [3], [4]]
    matrix = np.eye(d) + 0.1 * rng.normal(size=(d, d))
    opts: dict[str, Any] = {"candidates": np.arange(30), "temperature": 0.1, "l2_to_identity": 0.01}
    _, grad = _loss_and_grad(matrix, queries, positives, corpus, **opts)
    assert grad is not None
    numeric = np.zeros_like(matrix)
    eps = 1e-6
    for i in range(d):
        for j in range(d):
            plus, minus = matrix.copy(), matrix.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            lp, _ = _loss_and_grad(plus, queries, positives, corpus, with_grad=False, **opts)
            lm, _ = _loss_and_grad(minus, queries, positives, corpus, with_grad=False, **opts)
            numeric[i, j] = (lp - lm) / (2 * eps)
    assert np.abs(numeric - grad).max() < 1e-6


def test_recall_counts_the_share_of_relevant_chunks_found() -> None:
    corpus = np.eye(4, dtype=np.float32)
    query = np.array([[1.0, 0.9, 0.0, 0.0]], dtype=np.float32)
    assert recall_at_k(query, [[0, 2]], corpus, ks=(1, 3)) == {"recall@1": 0.5, "recall@3": 1.0}


def test_apply_adapter_normalises_single_vectors_and_batches() -> None:
    matrix = np.diag([2.0, 1.0]).astype(np.float32)
    single = apply_adapter(matrix, [1.0, 1.0])
    assert single.shape == (2,)
    assert np.allclose(single, np.array([2.0, 1.0]) / np.sqrt(5))
    assert apply_adapter(matrix, np.ones((3, 2))).shape == (3, 2)


def test_config_min_questions_is_honoured() -> None:
    rng = np.random.default_rng(2)
    chunks = _corpus(rng, 30, 8)
    qs = QuestionSet(chunks[:12].copy(), [[i] for i in range(12)])
    train_adapter(qs, chunks, AdapterConfig(min_questions=12, max_epochs=2))
    with pytest.raises(NotEnoughPairsError):
        train_adapter(qs, chunks, AdapterConfig(min_questions=13))
