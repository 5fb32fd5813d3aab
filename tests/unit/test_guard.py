"""The guard's rule on its own: the held-out split, per-question metrics, the decision."""

from __future__ import annotations

import numpy as np
from deepmem.adapters.trainers import guard
from deepmem.adapters.trainers.guard import GuardConfig, decide, per_question, split_pairs

CONFIG = GuardConfig(min_questions=20, resamples=500)


def _pairs(n: int = 5000) -> list[tuple[str, str]]:
    return [(f"question {i}", f"chunk-{i // 3}") for i in range(n)]


def test_the_split_is_deterministic_bounded_disjoint_and_by_chunk() -> None:
    pairs = _pairs()
    train, held = split_pairs(pairs, GuardConfig())
    assert (train, held) == split_pairs(list(pairs), GuardConfig())
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(pairs)
    assert 0.05 * len(pairs) < len(held) <= GuardConfig().max_pairs
    # Below the bound a held chunk has all its pairs held: none of its questions is trained on.
    assert {c for _, c in train}.isdisjoint({c for _, c in held})
    # Another seed holds out other chunks; a small bound stops admitting in pair order.
    _, other = split_pairs(pairs, GuardConfig(seed=1))
    assert {c for _, c in other} != {c for _, c in held}
    _, capped = split_pairs(pairs, GuardConfig(max_pairs=10))
    assert capped == held[:10]


def test_per_question_recall_and_binary_ndcg() -> None:
    corpus = np.eye(12, dtype=np.float32)
    # Query 0 ranks row 0 first; query 1 ranks row 3 first and row 5 second.
    queries = np.zeros((2, 12), dtype=np.float32)
    queries[0, 0] = 1.0
    queries[1, 3], queries[1, 5] = 1.0, 0.9
    scores = per_question(queries, [[0], [5, 11]], corpus)
    assert scores["recall@1"].tolist() == [1.0, 0.0]
    assert scores["recall@5"].tolist() == [1.0, 0.5]
    assert scores["recall@10"].tolist() == [1.0, 0.5]
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(scores["ndcg@10"], [1.0, (1 / np.log2(3)) / ideal])


def _scores(recall10: list[float]) -> dict[str, np.ndarray]:
    return {"recall@10": np.asarray(recall10, dtype=np.float64)}


def test_a_clear_win_is_applied_and_a_tie_or_a_loss_is_not() -> None:
    base = _scores([0.0] * 60 + [1.0] * 40)
    better = _scores([1.0] * 20 + [0.0] * 40 + [1.0] * 40)  # 20 more found, none lost
    decision = decide(better, base, None, CONFIG)
    assert decision.applied and decision.vs_base is not None
    assert decision.vs_base.interval[0] > 0 and decision.vs_previous is None

    assert not decide(base, base, None, CONFIG).applied  # a tie is not a win
    worse = _scores([0.0] * 70 + [1.0] * 30)
    refused = decide(worse, base, None, CONFIG)
    assert not refused.applied and "does not beat the base" in refused.reason


def test_a_noisy_gain_is_not_applied() -> None:
    # 6 questions better, 5 worse out of 100: the mean is up, the interval spans zero.
    base = _scores([0.0] * 6 + [1.0] * 5 + [0.0] * 89)
    mixed = _scores([1.0] * 6 + [0.0] * 5 + [0.0] * 89)
    decision = decide(mixed, base, None, CONFIG)
    assert decision.vs_base is not None and decision.vs_base.mean_difference > 0
    assert decision.vs_base.interval[0] <= 0 < decision.vs_base.interval[1]
    assert not decision.applied


def test_it_must_also_beat_the_previous_active_map() -> None:
    base = _scores([0.0] * 100)
    previous = _scores([1.0] * 50 + [0.0] * 50)
    new = _scores([1.0] * 50 + [0.0] * 50)
    decision = decide(new, base, previous, CONFIG)
    assert not decision.applied and "previous active" in decision.reason
    assert decide(_scores([1.0] * 70 + [0.0] * 30), base, previous, CONFIG).applied


def test_too_few_questions_is_never_applied() -> None:
    decision = decide(_scores([1.0] * 19), _scores([0.0] * 19), None, CONFIG)
    assert not decision.applied and "too few" in decision.reason


def test_the_interval_is_seeded() -> None:
    diff = np.random.default_rng(0).normal(size=300)
    assert guard.paired_interval(diff, 400, 0.95, 7) == guard.paired_interval(diff, 400, 0.95, 7)
    assert guard.paired_interval(diff, 400, 0.95, 7) != guard.paired_interval(diff, 400, 0.95, 8)


def test_evaluate_works_over_any_query_map() -> None:
    rng = np.random.default_rng(1)
    corpus = guard.identity_map(rng.normal(size=(200, 8)).astype(np.float32))
    twist = np.linalg.qr(rng.normal(size=(8, 8)))[0].astype(np.float32)
    queries = guard.identity_map(corpus[:60] @ twist.T)  # each query a rotated copy
    positives = [[i] for i in range(60)]
    undo = guard.linear_map(twist.T)  # W q = twist^T twist c = c
    record = guard.evaluate(queries, positives, corpus, undo, previous=None, config=CONFIG)
    assert record["applied"] is True and record["after"]["recall@1"] == 1.0
    assert record["before"]["recall@1"] < 0.5 and record["questions"] == 60


def test_more_found_but_clearly_ranked_worse_is_not_a_win() -> None:
    base = {
        "recall@10": np.array([0.0] * 10 + [1.0] * 90),
        "ndcg@10": np.array([0.0] * 10 + [1.0] * 90),
    }
    # 10 more found (at rank 10), but the 90 found before fall from rank 1 to rank 5.
    found_lower = {
        "recall@10": np.ones(100),
        "ndcg@10": np.array([1 / np.log2(11)] * 10 + [1 / np.log2(6)] * 90),
    }
    decision = decide(found_lower, base, None, CONFIG)
    assert decision.vs_base is not None and decision.vs_base.interval[0] > 0
    assert decision.vs_base.ranks_worse and not decision.applied
    assert "ranks worse than the base" in decision.reason
