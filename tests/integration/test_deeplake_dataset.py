"""Build local DeepLake datasets in the VectorStore layout and read them back by ranges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource, import_deeplake
from deepmem.domain.chunks import split_into_lanes
from deepmem.domain.errors import DatasetError
from deepmem.local.dataset_builder import build_dataset, ensure_dataset, iter_chunks

from tests.fakes.embedder import HashingEmbedder

TOPICS = ["volcano", "violin", "compiler", "glacier", "orchid", "satellite", "bakery", "harbor"]


def _write_corpus(root: Path, documents: int = 40) -> Path:
    """About 300 chunks: markdown files of a few paragraphs and one jsonl file."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = [
            f"Note {i} {j}: the {topic} report says item {i * 10 + j} matters because of "
            f"{topic} detail number {j}. It was written for section {i}."
            for j in range(14)
        ]
        (root / f"doc_{i:03d}.md").write_text(
            f"# About the {topic} {i}\n\n" + "\n\n".join(paragraphs), encoding="utf-8"
        )
    records = [
        {"id": f"rec-{k}", "text": f"Record {k} is about {TOPICS[k % 8]}.", "metadata": {"k": k}}
        for k in range(20)
    ]
    (root / "records.jsonl").write_text(
        "\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    path = str(tmp_path_factory.mktemp("datasets") / "kb")
    count = build_dataset(corpus, path, HashingEmbedder(), chunk_size=60, overlap=12)
    return path, count


def test_build_writes_hundreds_of_chunks_in_the_vectorstore_layout(built: tuple[str, int]) -> None:
    path, count = built
    assert 250 <= count <= 600
    deeplake = import_deeplake()
    dataset = deeplake.load(path, read_only=True, verbose=False)
    htypes = {name: dataset[name].htype for name in dataset.tensors}
    assert htypes == {"id": "text", "text": "text", "embedding": "embedding", "metadata": "json"}
    assert dataset.embedding.dtype == np.float32
    assert dataset.embedding.shape == (count, 64)
    norms = np.linalg.norm(dataset.embedding[:50].numpy(), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert dataset.info["embedding_model"] == "test-hashing-64"
    assert len(dataset) == count


def test_ranges_read_back_exactly_what_was_built(corpus: Path, built: tuple[str, int]) -> None:
    path, count = built
    expected = list(iter_chunks(corpus, chunk_size=60, overlap=12))
    source = DeepLakeChunkSource(path)
    assert source.count() == count == len(expected)
    read = [
        chunk for lane in split_into_lanes(count, 7) for chunk in source.read(lane.start, lane.stop)
    ]
    assert [c.id for c in read] == [c.id for c in expected]
    assert [c.text for c in read] == [c.text for c in expected]
    assert [c.metadata for c in read] == [c.metadata for c in expected]
    assert len({c.id for c in read}) == count
    record = next(c for c in read if c.id == "rec-3")
    assert record.metadata == {
        "k": 3,
        "source": "records.jsonl",
        "chunk_index": 0,
        "doc_id": "rec-3",
    }


def test_range_edges(built: tuple[str, int]) -> None:
    path, count = built
    source = DeepLakeChunkSource(path)
    assert source.read(5, 5) == []
    assert [c.id for c in source.read(count - 2, count + 50)] == [
        c.id for c in source.read(count - 2, count)
    ]
    assert len(source.read(count - 2, count + 50)) == 2
    assert source.read(count, count + 10) == []
    assert len(source.read(0, 1)) == 1
    with pytest.raises(ValueError, match="invalid chunk range"):
        source.read(10, 5)
    with pytest.raises(ValueError, match="invalid chunk range"):
        source.read(-1, 5)


class _RecordingTensor:
    def __init__(self, tensor: Any, name: str, log: list[tuple[str, Any]]) -> None:
        self._tensor, self._name, self._log = tensor, name, log

    def __getitem__(self, key: Any) -> Any:
        self._log.append((self._name, key))
        return self._tensor[key]

    def __len__(self) -> int:
        return len(self._tensor)


class _RecordingDataset:
    def __init__(self, dataset: Any, log: list[tuple[str, Any]]) -> None:
        self._dataset, self._log = dataset, log

    def __getitem__(self, name: str) -> _RecordingTensor:
        return _RecordingTensor(self._dataset[name], name, self._log)


def test_a_read_asks_the_dataset_only_for_its_range(built: tuple[str, int]) -> None:
    path, _ = built
    source = DeepLakeChunkSource(path)
    source.count()  # opens the dataset
    log: list[tuple[str, Any]] = []
    source._dataset = _RecordingDataset(source._dataset, log)
    chunks = source.read(40, 45)
    assert len(chunks) == 5
    assert sorted((name, key.start, key.stop) for name, key in log) == [
        ("id", 40, 45),
        ("metadata", 40, 45),
        ("text", 40, 45),
    ]


def test_the_dataset_is_opened_once_per_source(
    built: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = built
    deeplake = import_deeplake()
    loads: list[str] = []
    real_load = deeplake.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(deeplake, "load", counting_load)
    source = DeepLakeChunkSource(path)
    assert loads == []  # lazy: constructing reads nothing
    source.count()
    source.read(0, 3)
    source.read(3, 9)
    assert loads == [path]


def test_rebuilding_the_same_corpus_gives_the_same_ids(corpus: Path, tmp_path: Path) -> None:
    first = str(tmp_path / "one")
    second = str(tmp_path / "two")
    build_dataset(corpus, first, HashingEmbedder(), chunk_size=60, overlap=12, limit=80)
    build_dataset(corpus, second, HashingEmbedder(), chunk_size=60, overlap=12, limit=80)
    ids_one = [c.id for c in DeepLakeChunkSource(first).read(0, 80)]
    ids_two = [c.id for c in DeepLakeChunkSource(second).read(0, 80)]
    assert len(ids_one) == 80
    assert ids_one == ids_two


def test_building_over_an_existing_dataset_replaces_it(corpus: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "kb")
    progress: list[tuple[int, int]] = []
    embedder = HashingEmbedder()
    written = build_dataset(
        corpus,
        path,
        embedder,
        chunk_size=60,
        overlap=12,
        limit=200,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert written == 200
    assert progress == [(128, 200), (200, 200)]
    assert embedder.calls == [128, 72]  # embedded in batches
    assert build_dataset(corpus, path, HashingEmbedder(), limit=25) == 25
    source = DeepLakeChunkSource(path)
    assert source.count() == 25
    assert [c.id for c in source.read(0, 25)] == [c.id for c in iter_chunks(corpus, limit=25)]


def test_an_empty_corpus_is_refused(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no text to index"):
        build_dataset(tmp_path / "corpus", str(tmp_path / "kb"), HashingEmbedder())


def test_a_missing_dataset_is_a_clear_dataset_error(tmp_path: Path) -> None:
    source = DeepLakeChunkSource(str(tmp_path / "nothing-here"))
    with pytest.raises(DatasetError, match="no DeepLake dataset at"):
        source.count()
    with pytest.raises(DatasetError, match="no DeepLake dataset at"):
        source.read(0, 10)


def test_a_dataset_without_the_chunk_tensors_is_refused(tmp_path: Path) -> None:
    deeplake = import_deeplake()
    path = str(tmp_path / "images")
    dataset = deeplake.empty(path, verbose=False)
    dataset.create_tensor("labels", htype="generic", dtype="int64")
    dataset.create_tensor("text", htype="text")
    with dataset:
        dataset.extend({"labels": np.arange(2), "text": ["a", "b"]})
    with pytest.raises(DatasetError, match=r"has no tensor\(s\) id.*found: labels, text"):
        DeepLakeChunkSource(path).count()


def test_a_tensor_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    deeplake = import_deeplake()
    path = str(tmp_path / "numbers")
    dataset = deeplake.empty(path, verbose=False)
    dataset.create_tensor("id", htype="generic", dtype="int64")
    dataset.create_tensor("text", htype="text")
    with dataset:
        dataset.extend({"id": np.arange(2), "text": ["a", "b"]})
    with pytest.raises(DatasetError, match=r"tensor 'id' .* expected 'text'"):
        DeepLakeChunkSource(path).read(0, 2)


def test_a_dataset_without_metadata_reads_with_empty_metadata(tmp_path: Path) -> None:
    deeplake = import_deeplake()
    path = str(tmp_path / "bare")
    dataset = deeplake.empty(path, verbose=False)
    dataset.create_tensor("id", htype="text")
    dataset.create_tensor("text", htype="text")
    with dataset:
        dataset.extend({"id": ["x", "y"], "text": ["first", "second"]})
    chunks = DeepLakeChunkSource(path).read(0, 2)
    assert [(c.id, c.text, c.metadata) for c in chunks] == [("x", "first", {}), ("y", "second", {})]


def test_the_same_corpus_is_reused_without_embedding_again(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "corpus", documents=6)
    path = str(tmp_path / "ds")
    first = ensure_dataset(corpus, path, HashingEmbedder())
    again = HashingEmbedder()

    second = ensure_dataset(corpus, path, again)

    assert (first.reused, second.reused) == (False, True)
    assert second.chunks == first.chunks == DeepLakeChunkSource(path).count()
    assert second.fingerprint == first.fingerprint
    assert again.calls == []  # nothing embedded the second time


@pytest.mark.parametrize(
    "change",
    ["text", "limit", "model", "chunking"],
)
def test_a_changed_corpus_chunking_or_model_is_built_anew(tmp_path: Path, change: str) -> None:
    corpus = _write_corpus(tmp_path / "corpus", documents=6)
    path = str(tmp_path / "ds")
    first = ensure_dataset(corpus, path, HashingEmbedder())
    options: dict[str, Any] = {}
    embedder = HashingEmbedder()
    if change == "text":
        (corpus / "doc_000.md").write_text("# Changed\n\nA new first document, not the old one.")
    elif change == "limit":
        options["limit"] = first.chunks - 1
    elif change == "model":
        embedder = HashingEmbedder(dimension=32)
    else:
        options["chunk_size"] = 40

    second = ensure_dataset(corpus, path, embedder, **options)

    assert not second.reused
    assert second.fingerprint != first.fingerprint
    assert embedder.calls  # embedded again
    assert DeepLakeChunkSource(path).count() == second.chunks
