"""Training a query model (`query_maps.QueryModel`): pure numpy, no I/O.

`train_query_model` holds out one deterministic share of the questions (by `config.seed`),
then trains `model.members` linear adapters on the rest with `adapter_maths` (each its own
batch order and negative draws, seeds derived from `config.seed`; early stopping on the same
held-out questions) and averages their matrices. The mean of a few adapters moves less from
one seed to the next than any one of them (measured in `bench/README.md`), and it is still a
single d-by-d matrix for search. The held-out recall after is measured through the query map
search will apply (`query_map`), the feedback step included.
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
    heldout_loss,
    recall_at_k,
    split_holdout,
)
from deepmem.adapters.trainers.query_maps import LINEAR, QueryModel, query_map

_MEMBER_SEED_STRIDE = 1000  # member j of seed s trains with seed s * stride + j


def member_seeds(seed: int, members: int) -> list[int]:
    """The training seeds of a model's members: the first is `seed` itself, so a one-member
    model trains exactly as `adapter_maths.train_adapter` does."""
    return [seed] + [seed * _MEMBER_SEED_STRIDE + j for j in range(1, members)]


def _averaged(
    fits: list[_Fit], held: QuestionSet, corpus: np.ndarray, config: AdapterConfig
) -> _Fit:
    if len(fits) == 1:
        return fits[0]
    mean = np.mean([f.best for f in fits], axis=0).astype(np.float32)
    return _Fit(
        best=mean,
        best_loss=heldout_loss(mean, held, corpus, config),
        best_epoch=round(float(np.mean([f.best_epoch for f in fits]))),
        epochs=max(f.epochs for f in fits),
        history=[fits[0].history[0]],
    )


def train_query_model(
    questions: QuestionSet,
    corpus: np.ndarray,
    config: AdapterConfig | None = None,
    model: QueryModel | None = None,
) -> AdapterResult:
    """The averaged adapter matrix of `model` trained on `questions`; metrics as
    `train_adapter`'s plus the model, its members and the map's held-out recall."""
    config = config or AdapterConfig()
    model = model or QueryModel()
    corpus = _checked_corpus(questions, corpus, config)
    train_rows, held_rows = split_holdout(len(questions), config.holdout, config.seed)
    train = questions.subset(train_rows.tolist())
    held = questions.subset(held_rows.tolist())
    fits = [
        _fit(train, held, corpus, replace(config, seed=seed))
        for seed in member_seeds(config.seed, model.members)
    ]
    fit = _averaged(fits, held, corpus, config)
    metrics = _metrics(fit, corpus, config, questions=len(questions), train=train, held=held)
    metrics |= _model_metrics(
        model,
        matrix=fit.best,
        corpus=corpus,
        held=held,
        fits=fits,
        linear_after=metrics["recall_after"],
    )
    return AdapterResult(matrix=fit.best, metrics=metrics)


def _model_metrics(
    model: QueryModel,
    *,
    matrix: np.ndarray,
    corpus: np.ndarray,
    held: QuestionSet,
    fits: list[_Fit],
    linear_after: dict[str, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trainer": "query_adapter" if model.kind == LINEAR else "feedback_adapter",
        "query_model": model.as_dict(),
        "member_best_epochs": [f.best_epoch for f in fits],
    }
    if model.kind != LINEAR and len(held):
        mapped = query_map(model, matrix, corpus).apply(held.embeddings)
        after = recall_at_k(mapped, held.positives, corpus)
        out["recall_after_linear"] = linear_after
        out["recall_after"] = {k: round(v, 4) for k, v in after.items()}
    return out
