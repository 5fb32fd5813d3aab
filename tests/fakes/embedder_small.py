"""A tiny Embedder that answers from a table: tests plant exactly the geometry they need."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TableEmbedder:
    def __init__(self, table: dict[str, Sequence[float]], model_name: str = "table-embedder"):
        self.table = {text: np.asarray(v, dtype=np.float32) for text, v in table.items()}
        self._dimension = len(next(iter(self.table.values())))
        self._model_name = model_name
        self.calls = 0

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        out = []
        for text in texts:
            vector = self.table[text]
            out.append((vector / np.linalg.norm(vector)).tolist())
        return out


def write_planted_dataset(
    path: str, chunks: int = 300, dim: int = 24, seed: int = 11
) -> tuple[TableEmbedder, list[str]]:
    """A local DeepLake dataset (VectorStore layout) whose question `what about chunk i?` is a
    fixed linear distortion of chunk `id-i`'s vector: a query adapter has something to learn.
    Returns the embedder that knows every chunk text and question, and the questions."""
    import deeplake

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(chunks, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    distortion = np.eye(dim) + 2.0 * rng.normal(size=(dim, dim)) / np.sqrt(dim)
    questions = vectors @ distortion.T + 0.05 * rng.normal(size=(chunks, dim))
    texts = [f"chunk {i} text" for i in range(chunks)]
    asked = [f"what about chunk {i}?" for i in range(chunks)]
    table = dict(zip(texts, vectors, strict=True)) | dict(zip(asked, questions, strict=True))
    ds = deeplake.empty(path, overwrite=True, verbose=False)
    with ds:
        for name, htype in (("text", "text"), ("metadata", "json"), ("id", "text")):
            ds.create_tensor(name, htype=htype)
        ds.create_tensor("embedding", htype="embedding", dtype="float32")
        ds.info.update(embedding_model="table-embedder")
        ds.extend(
            {
                "text": texts,
                "metadata": [{} for _ in texts],
                "embedding": vectors.astype(np.float32),
                "id": [f"id-{i}" for i in range(chunks)],
            }
        )
    return TableEmbedder(table), asked
