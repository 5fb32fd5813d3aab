"""Training a query model (`query_maps.QueryModel`): pure numpy, no I/O.

`train_query_model` trains `model.members` linear adapters with `adapter_maths` and averages
their matrices (still one d-by-d matrix for search):
- one member holds out `config.holdout` of the questions (by `config.seed`) and trains on the
  rest, exactly as `adapter_maths.train_adapter` does;
- k > 1 members are cross-fitted: the questions are cut into k seeded folds, and member j
  stops early on fold j and trains on the other k - 1 (its own seed, batch order and
  negative draws, `member_seeds`). Every generated question trains all but one member and
  is held out by that one, so no question is spent on early stopping alone (measured in
  `bench/README.md`: the mean of 3 gains more than one member, or than 3 sharing one split).
With k folds, the held-out figures in the metrics are out-of-fold: each question scored by
the member that never trained on it, through the query map search applies (`query_map`),
the feedback step included. The guard scores the averaged map on pairs none trained on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from deepmem.adapters.trainers.adapter_maths import (
    AdapterConfig,
    AdapterResult,
    QuestionSet,
    _checked_corpus,
    _Fit,
    _fit,
    _metrics,
    recall_at_k,
    reported_config,
    split_holdout,
)
from deepmem.adapters.trainers.query_maps import LINEAR, QueryModel, query_map

_MEMBER_SEED_STRIDE = 1000  # member j of seed s trains with seed s * stride + j


def member_seeds(seed: int, members: int) -> list[int]:
    """The training seeds of a model's members: the first is `seed` itself, so a one-member
    model trains exactly as `adapter_maths.train_adapter` does."""
    return [seed] + [seed * _MEMBER_SEED_STRIDE + j for j in range(1, members)]


def member_splits(
    n: int, members: int, holdout: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of each member: one member's is `split_holdout`'s; k > 1
    members' are the k folds of a seeded permutation, member j holding out fold j."""
    members = min(members, n)
    if members <= 1:
        return [split_holdout(n, holdout, seed)]
    folds = np.array_split(np.random.default_rng(seed).permutation(n), members)
    return [
        (np.sort(np.concatenate(folds[:j] + folds[j + 1 :])), np.sort(folds[j]))
        for j in range(members)
    ]


def train_query_model(
    questions: QuestionSet,
    corpus: np.ndarray,
    config: AdapterConfig | None = None,
    model: QueryModel | None = None,
) -> AdapterResult:
    """The averaged adapter matrix of `model` trained on `questions`; metrics as
    `train_adapter`'s (out-of-fold for several members) plus the model and its members."""
    config = config or AdapterConfig()
    model = model or QueryModel()
    corpus = _checked_corpus(questions, corpus, config)
    splits = member_splits(len(questions), model.members, config.holdout, config.seed)
    parts = [(questions.subset(tr.tolist()), questions.subset(he.tolist())) for tr, he in splits]
    fits = [
        _fit(train, held, corpus, replace(config, seed=seed))
        for (train, held), seed in zip(parts, member_seeds(config.seed, len(parts)), strict=True)
    ]
    scored = [(fit.best, held) for fit, (_, held) in zip(fits, parts, strict=True)]
    if len(fits) == 1:
        (train, held), matrix = parts[0], fits[0].best
        metrics = _metrics(
            fits[0], corpus, config, questions=len(questions), train=train, held=held
        )
    else:
        matrix = np.mean([f.best for f in fits], axis=0).astype(np.float32)
        metrics = _out_of_fold_metrics(fits, scored, corpus, config, questions=questions)
    metrics |= _model_metrics(model, scored, corpus, linear_after=metrics["recall_after"])
    metrics["member_best_epochs"] = [f.best_epoch for f in fits]
    return AdapterResult(matrix=matrix, metrics=metrics)


def _pooled_recall(
    scored: list[tuple[np.ndarray, QuestionSet]], corpus: np.ndarray, model: QueryModel
) -> dict[str, float]:
    """Recall over every held-out question, each through its own member's map of `model`,
    as one share of all of them."""
    total = sum(len(held) for _, held in scored)
    pooled: dict[str, float] = {}
    for matrix, held in scored:
        if not len(held):
            continue
        mapped = query_map(model, matrix, corpus).apply(held.embeddings)
        for key, value in recall_at_k(mapped, held.positives, corpus).items():
            pooled[key] = pooled.get(key, 0.0) + value * len(held) / total
    return {k: round(v, 4) for k, v in pooled.items()}


def _out_of_fold_metrics(
    fits: list[_Fit],
    scored: list[tuple[np.ndarray, QuestionSet]],
    corpus: np.ndarray,
    config: AdapterConfig,
    *,
    questions: QuestionSet,
) -> dict[str, Any]:
    """`_metrics`'s keys for cross-fitted members: every question is held out once, so the
    held-out figures pool each fold scored by the member that never trained on it."""
    sizes = np.array([len(held) for _, held in scored], dtype=np.float64)
    weights = sizes / sizes.sum()
    before = recall_at_k(questions.embeddings, questions.positives, corpus)
    return {
        "questions": len(questions),
        "train_questions": len(questions),
        "heldout_questions": len(questions),
        "heldout": f"out-of-fold over {len(fits)} members",
        "corpus_size": corpus.shape[0],
        "dimension": corpus.shape[1],
        "epochs": max(f.epochs for f in fits),
        "best_epoch": round(float(np.mean([f.best_epoch for f in fits]))),
        "heldout_loss_before": round(float(np.dot(weights, [f.history[0] for f in fits])), 5),
        "heldout_loss_after": round(float(np.dot(weights, [f.best_loss for f in fits])), 5),
        "recall_before": {k: round(v, 4) for k, v in before.items()},
        "recall_after": _pooled_recall(scored, corpus, QueryModel()),
        "config": reported_config(config),
    }


def _model_metrics(
    model: QueryModel,
    scored: list[tuple[np.ndarray, QuestionSet]],
    corpus: np.ndarray,
    *,
    linear_after: dict[str, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trainer": "query_adapter" if model.kind == LINEAR else "feedback_adapter",
        "query_model": model.as_dict(),
    }
    if model.kind != LINEAR and any(len(held) for _, held in scored):
        out["recall_after_linear"] = linear_after
        out["recall_after"] = _pooled_recall(scored, corpus, model)
    return out
