"""A small deterministic Embedder for tests where the real model's speed matters.

Feature hashing of lower-cased words (and word bigrams) into a few dimensions, L2-normalised:
texts sharing words score higher than unrelated ones, the same text always gives the same
vector, and no model is loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension
        self.calls: list[int] = []  # batch sizes, so a test can see the builder batches

    @property
    def model_name(self) -> str:
        return f"test-hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        vector = [0.0] * self._dimension
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self._dimension
            vector[index] += 1.0 if digest[4] % 2 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0:
            vector[0], norm = 1.0, 1.0
        return [v / norm for v in vector]
