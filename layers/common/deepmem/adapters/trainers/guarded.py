"""The guard's store side, shared by the in-memory and the streamed trainer: score a new
adapter on the held-out questions against the base and the active adapter, save its artifact
with the record, and activate it only when the guard applied it (`guard` decides)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from deepmem.adapters.dataset.corpus import Corpus, embed_questions
from deepmem.adapters.trainers import guard
from deepmem.adapters.trainers.adapter_maths import QuestionSet, group_pairs
from deepmem.adapters.trainers.artifacts import AdapterArtifact, active_artifact
from deepmem.adapters.trainers.embedded_questions import EmbeddedPage, pack, unpack

if TYPE_CHECKING:
    from deepmem.adapters.trainers.artifacts import ArtifactStore
    from deepmem.domain.models import TrainingPair
    from deepmem.ports import Embedder


def held_questions(
    embedder: Embedder, pairs: Sequence[tuple[str, str]], corpus: Corpus
) -> tuple[QuestionSet, int]:
    """The guard's held-out pairs as embedded questions (grouped as for training), and the
    pairs dropped because their chunk is not in the corpus."""
    questions, positives, dropped = group_pairs(pairs, corpus.index)
    if not questions:
        return QuestionSet(np.zeros((0, corpus.dimension), dtype=np.float32), []), dropped
    return QuestionSet(embed_questions(embedder, questions), positives), dropped


class GuardPairs:
    """A streamed job's guard pairs (`guard.GuardSplit` in pair order), never trained on: kept
    as the job's working files as the pages are read, the pairs (`guard-pairs.json`) and their
    questions with the embeddings the page already has (`guard.npz`: embedded once)."""

    FILE, QUESTIONS = "guard-pairs.json", "guard.npz"

    def __init__(self, store: ArtifactStore, job_id: str, config: guard.GuardConfig) -> None:
        self.store, self.job_id, self.config = store, job_id, config

    def hold_out(
        self, page: Sequence[TrainingPair], held: int, embedded: EmbeddedPage, corpus: Corpus
    ) -> tuple[list[TrainingPair], int]:
        """The page's pairs to train on, and how many the guard holds now (`held` before)."""
        split = guard.GuardSplit(self.config, held=held)
        admitted = [split.admit(pair.chunk_id) for pair in page]
        kept = [(p.question, p.chunk_id) for p, a in zip(page, admitted, strict=True) if a]
        if kept:
            questions, positives, _ = group_pairs(kept, corpus.index)
            row_of = {question: i for i, question in enumerate(embedded.questions)}
            added = QuestionSet(embedded.embeddings[[row_of[q] for q in questions]], positives)
            both = self.questions(corpus.dimension)
            both = QuestionSet(
                np.concatenate([both.embeddings, added.embeddings]), both.positives + positives
            )
            self.store.put_blob(self.job_id, self.QUESTIONS, pack(both))
            body = json.dumps([list(p) for p in self.pairs() + kept]).encode()
            self.store.put_blob(self.job_id, self.FILE, body)
        return [p for p, a in zip(page, admitted, strict=True) if not a], split.held

    def pairs(self) -> list[tuple[str, str]]:
        data = self.store.get_blob(self.job_id, self.FILE)
        return [] if data is None else [(q, c) for q, c in json.loads(data)]

    def questions(self, dimension: int) -> QuestionSet:
        data = self.store.get_blob(self.job_id, self.QUESTIONS)
        if data is None:
            return QuestionSet(np.zeros((0, dimension), dtype=np.float32), [])
        return unpack(data)


def previous_map(
    store: ArtifactStore, embedding_model: str, dimension: int, corpus: np.ndarray
) -> tuple[str, guard.QueryMap] | None:
    """The active adapter as a query map over `corpus`, when it maps queries of the same
    model (linear or feedback: `AdapterArtifact.query_map`)."""
    artifact = active_artifact(store)
    if artifact is None or artifact.embedding_model != embedding_model:
        return None
    if artifact.dimension != dimension:
        return None
    return artifact.job_id, artifact.query_map(corpus).apply


def guard_and_save(
    store: ArtifactStore,
    artifact: AdapterArtifact,
    held: QuestionSet,
    corpus: np.ndarray,
    config: guard.GuardConfig,
    *,
    held_pairs: int,
) -> AdapterArtifact:
    """Save `artifact` with the guard's record in its metrics; activate it when applied."""
    previous = previous_map(store, artifact.embedding_model, artifact.dimension, corpus)
    record = guard.evaluate(
        held.embeddings,
        held.positives,
        corpus,
        artifact.query_map(corpus).apply,
        previous=None if previous is None else previous[1],
        config=config,
        previous_job_id=None if previous is None else previous[0],
    )
    record["pairs"] = held_pairs
    saved = replace(
        artifact,
        metrics=artifact.metrics | {"applied": record["applied"], "guard": record},
    )
    store.save(saved)
    if record["applied"]:
        store.activate(saved.job_id)
    return saved


def ensure_active(store: ArtifactStore, artifact: AdapterArtifact) -> None:
    """A check after a save whose activation did not happen (a crash between the two):
    activate the applied artifact unless a newer one is active already."""
    if artifact.metrics.get("applied") is not True:
        return
    active = active_artifact(store)
    if active is None or (
        active.job_id != artifact.job_id and active.created_at < artifact.created_at
    ):
        store.activate(artifact.job_id)
