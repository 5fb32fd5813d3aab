"""The query models (`query_maps`, `adapter_models`) on synthetic embeddings: numpy only."""

from __future__ import annotations

import numpy as np
import pytest
from deepmem.adapters.trainers.adapter_maths import (
    AdapterConfig,
    QuestionSet,
    normalize,
    recall_at_k,
    split_holdout,
    train_adapter,
)
from deepmem.adapters.trainers.adapter_models import (
    member_seeds,
    member_splits,
    train_query_model,
)
from deepmem.adapters.trainers.query_maps import (
    FEEDBACK,
    FEEDBACK_MODEL,
    FeedbackMap,
    IdentityMap,
    LinearMap,
    QueryModel,
    as_query_map,
    query_map,
)


def _topics(seed: int, *, topics: int = 80, per_topic: int = 4, d: int = 32):
    """A corpus of topics (chunks near a topic centre), and questions each asked of one chunk
    but judged relevant to every chunk of its topic, seen through a planted distortion: what
    real judged queries look like next to one generated question per chunk."""
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(topics, d)))
    chunks = normalize(
        np.repeat(centres, per_topic, axis=0) + 0.2 * rng.normal(size=(topics * per_topic, d))
    ).astype(np.float32)
    distortion = np.eye(d) + 1.5 * rng.normal(size=(d, d)) / np.sqrt(d)
    asked = normalize(chunks + 0.1 * rng.normal(size=chunks.shape))
    questions = normalize(asked @ distortion.T).astype(np.float32)
    topic_rows = [list(range(t * per_topic, (t + 1) * per_topic)) for t in range(topics)]
    judged = [topic_rows[i // per_topic] for i in range(len(chunks))]
    return chunks, questions, judged


def test_training_is_deterministic_for_a_seed_and_moves_with_it() -> None:
    chunks, questions, _ = _topics(1)
    generated = QuestionSet(questions, [[i] for i in range(len(chunks))])

    a = train_query_model(generated, chunks, AdapterConfig(seed=4), FEEDBACK_MODEL)
    b = train_query_model(generated, chunks, AdapterConfig(seed=4), FEEDBACK_MODEL)
    c = train_query_model(generated, chunks, AdapterConfig(seed=5), FEEDBACK_MODEL)

    assert np.array_equal(a.matrix, b.matrix)
    assert a.metrics == b.metrics
    assert not np.allclose(a.matrix, c.matrix)
    assert a.metrics["query_model"] == FEEDBACK_MODEL.as_dict()
    assert len(a.metrics["member_best_epochs"]) == 3


def test_one_linear_member_trains_exactly_as_train_adapter() -> None:
    chunks, questions, _ = _topics(2)
    generated = QuestionSet(questions, [[i] for i in range(len(chunks))])

    alone = train_adapter(generated, chunks, AdapterConfig(seed=3))
    model = train_query_model(generated, chunks, AdapterConfig(seed=3), QueryModel())

    assert np.array_equal(alone.matrix, model.matrix)
    assert member_seeds(3, 3)[0] == 3 and len(set(member_seeds(3, 3))) == 3


def test_the_feedback_model_beats_base_and_linear_on_held_out_judged_questions() -> None:
    chunks, questions, judged = _topics(3)
    generated = QuestionSet(questions, [[i] for i in range(len(chunks))])
    config = AdapterConfig(seed=0)
    train_rows, held = split_holdout(len(chunks), config.holdout, config.seed)
    trained_on = generated.subset(train_rows.tolist())  # the judged ones are never seen
    held_q, held_judged = questions[held], [judged[i] for i in held]

    linear = train_query_model(trained_on, chunks, config, QueryModel())
    feedback = train_query_model(trained_on, chunks, config, FEEDBACK_MODEL)

    def r10(mapped: np.ndarray) -> float:
        return recall_at_k(mapped, held_judged, chunks, ks=(10,))["recall@10"]

    base = r10(IdentityMap().apply(held_q))
    lin = r10(LinearMap(linear.matrix).apply(held_q))
    fed = r10(query_map(FEEDBACK_MODEL, feedback.matrix, chunks).apply(held_q))
    assert lin > base + 0.05
    assert fed > lin + 0.03


def test_one_member_reports_its_held_out_questions_through_the_map_search_applies() -> None:
    chunks, questions, _ = _topics(4)
    generated = QuestionSet(questions, [[i] for i in range(len(chunks))])
    config, model = AdapterConfig(seed=2), QueryModel(kind=FEEDBACK)
    _, held = split_holdout(len(chunks), config.holdout, config.seed)

    result = train_query_model(generated, chunks, config, model)

    own = [[int(i)] for i in held]
    through_map = recall_at_k(
        query_map(model, result.matrix, chunks).apply(questions[held]), own, chunks
    )
    linear_only = recall_at_k(LinearMap(result.matrix).apply(questions[held]), own, chunks)
    assert result.metrics["heldout_questions"] == len(held)
    assert result.metrics["recall_after"] == {k: round(v, 4) for k, v in through_map.items()}
    assert result.metrics["recall_after_linear"] == {k: round(v, 4) for k, v in linear_only.items()}


def test_members_are_cross_fitted_so_every_question_trains_all_but_one() -> None:
    splits = member_splits(103, 3, 0.2, seed=7)

    held = [set(h.tolist()) for _, h in splits]
    assert [len(h) for h in held] == [35, 34, 34]
    assert set().union(*held) == set(range(103)) and sum(map(len, held)) == 103
    for (train, _), out in zip(splits, held, strict=True):
        assert set(train.tolist()) == set(range(103)) - out
    assert all(
        np.array_equal(a[1], b[1])
        for a, b in zip(splits, member_splits(103, 3, 0.2, 7), strict=True)
    )
    assert not np.array_equal(splits[0][1], member_splits(103, 3, 0.2, 8)[0][1])
    one = member_splits(103, 1, 0.2, 7)
    assert len(one) == 1 and all(
        np.array_equal(a, b) for a, b in zip(one[0], split_holdout(103, 0.2, 7), strict=True)
    )
    assert len(member_splits(2, 3, 0.2, 0)) == 2  # never an empty fold


def test_cross_fitted_metrics_are_out_of_fold_over_every_question() -> None:
    chunks, questions, _ = _topics(5)
    generated = QuestionSet(questions, [[i] for i in range(len(chunks))])

    result = train_query_model(generated, chunks, AdapterConfig(seed=1), FEEDBACK_MODEL)

    metrics = result.metrics
    assert metrics["heldout_questions"] == len(chunks) == metrics["questions"]
    assert metrics["heldout"] == "out-of-fold over 3 members"
    base = recall_at_k(questions, [[i] for i in range(len(chunks))], chunks)
    assert metrics["recall_before"] == {k: round(v, 4) for k, v in base.items()}
    assert metrics["recall_after_linear"]["recall@10"] > metrics["recall_before"]["recall@10"]
    assert metrics["heldout_loss_after"] < metrics["heldout_loss_before"]


def test_feedback_pulls_the_query_toward_the_chunks_it_finds_and_normalises() -> None:
    corpus = normalize(np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]))
    query = normalize(np.array([1.0, 0.0, 0.3]))
    mapped = FeedbackMap(np.eye(3, dtype=np.float32), corpus, chunks=2, weight=1.0).apply(query)

    expected = normalize(query + corpus[[0, 1]].mean(axis=0))
    assert mapped.shape == (3,)
    assert np.allclose(mapped, expected, atol=1e-6)
    batch = FeedbackMap(np.eye(3, dtype=np.float32), corpus, chunks=2).apply(np.stack([query] * 4))
    assert batch.shape == (4, 3) and np.allclose(np.linalg.norm(batch, axis=1), 1.0)


def test_models_round_trip_and_refuse_what_they_do_not_know() -> None:
    assert QueryModel.from_dict(None) == QueryModel()  # an artifact from before kinds
    assert QueryModel.from_dict(FEEDBACK_MODEL.as_dict()) == FEEDBACK_MODEL
    with pytest.raises(ValueError, match="unknown query model kind"):
        QueryModel.from_dict({"kind": "mlp"})
    with pytest.raises(ValueError, match="needs the corpus"):
        query_map(QueryModel(kind=FEEDBACK), np.eye(3), None)
    matrix = np.eye(3, dtype=np.float32) * 2
    assert isinstance(as_query_map(matrix), LinearMap)
    assert np.allclose(as_query_map(None).apply(np.array([3.0, 0.0, 4.0])), [0.6, 0.0, 0.8])
