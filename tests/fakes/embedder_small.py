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
