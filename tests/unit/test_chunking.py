"""Chunking, stable chunk ids and corpus reading of the dataset builder (no DeepLake here)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from deepmem.domain.errors import DatasetError
from deepmem.domain.text import chunk_id, chunk_text, split_sentences
from deepmem.local.dataset_builder import iter_chunks


def _numbered_sentences(count: int) -> str:
    return " ".join(f"Sentence number {i} has exactly seven words." for i in range(count))


def test_sentences_split_on_ends_but_not_on_abbreviations_or_decimals() -> None:
    text = "# Title\n\nFirst one is here. Then e.g. this stays whole! Is 3.5 kept? Yes."
    assert split_sentences(text) == [
        "# Title",
        "First one is here.",
        "Then e.g. this stays whole!",
        "Is 3.5 kept?",
        "Yes.",
    ]


def test_list_items_and_paragraph_breaks_end_sentences() -> None:
    text = "Intro without a stop\n- first item\n- second item\n\nNext paragraph"
    assert split_sentences(text) == [
        "Intro without a stop",
        "- first item",
        "- second item",
        "Next paragraph",
    ]


def test_chunks_respect_size_and_end_on_sentence_boundaries() -> None:
    chunks = chunk_text(_numbered_sentences(60), chunk_size=40, overlap=10)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.split()) <= 40
        assert chunk.startswith("Sentence number ")
        assert chunk.endswith("seven words.")


def test_consecutive_chunks_overlap_by_whole_sentences_and_cover_everything() -> None:
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(60)]
    chunks = chunk_text(" ".join(sentences), chunk_size=40, overlap=10)
    for previous, current in itertools.pairwise(chunks):
        last_sentence = previous.split(". ")[-1]
        # 7-word sentences and a 10-word overlap: exactly the last sentence is repeated.
        assert current.startswith(last_sentence.rstrip(".")), (previous, current)
    covered = {s for s in sentences if any(s in chunk for chunk in chunks)}
    assert covered == set(sentences)


def test_no_overlap_means_each_sentence_once() -> None:
    chunks = chunk_text(_numbered_sentences(30), chunk_size=21, overlap=0)
    joined = " ".join(chunks)
    assert joined == _numbered_sentences(30)


def test_a_sentence_longer_than_a_chunk_is_cut_on_words_with_overlap() -> None:
    words = [f"w{i}" for i in range(100)]
    chunks = chunk_text(" ".join(words), chunk_size=30, overlap=5)
    assert [len(c.split()) for c in chunks[:-1]] == [30] * (len(chunks) - 1)
    assert chunks[0].split()[-5:] == chunks[1].split()[:5]
    assert chunks[-1].split()[-1] == "w99"
    assert all(chunk.split()[0].startswith("w") for chunk in chunks)


def test_short_text_is_one_chunk_and_keeps_paragraph_breaks() -> None:
    text = "# Title\n\nOne line. Two line.\n\nAnother paragraph."
    assert chunk_text(text) == ["# Title\n\nOne line. Two line.\n\nAnother paragraph."]


def test_empty_text_gives_no_chunk() -> None:
    assert chunk_text("  \n\n ") == []


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=r"chunk_size|overlap"):
        chunk_text("some text here", chunk_size=size, overlap=overlap)


def test_chunk_id_depends_on_source_position_and_content_only() -> None:
    base = chunk_id("docs/a.md", "", 0, "hello")
    assert base == chunk_id("docs/a.md", "", 0, "hello")
    assert len({base, *(chunk_id(*args) for args in _variants())}) == 5


def _variants() -> list[tuple[str, str, int, str]]:
    return [
        ("docs/b.md", "", 0, "hello"),
        ("docs/a.md", "line 2", 0, "hello"),
        ("docs/a.md", "", 1, "hello"),
        ("docs/a.md", "", 0, "hello!"),
    ]


def _corpus(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "b.md").write_text("# Bee\n\n" + _numbered_sentences(40), encoding="utf-8")
    (root / "sub" / "a.txt").write_text("Plain text file about apples. " * 3, encoding="utf-8")
    (root / "ignored.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    lines = [
        {"id": "doc-1", "text": "A record with an id.", "metadata": {"lang": "en"}},
        {"text": "A record without an id."},
        {"id": "doc-long", "text": _numbered_sentences(40)},
    ]
    (root / "c.jsonl").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8"
    )
    return root


def test_corpus_files_are_read_in_path_order_with_metadata(tmp_path: Path) -> None:
    chunks = list(iter_chunks(_corpus(tmp_path), chunk_size=60, overlap=10))
    sources = [c.metadata["source"] for c in chunks]
    assert sources == sorted(sources)
    assert set(sources) == {"b.md", "c.jsonl", "sub/a.txt"}
    bee = [c for c in chunks if c.metadata["source"] == "b.md"]
    assert bee[0].metadata["title"] == "Bee"
    assert [c.metadata["chunk_index"] for c in bee] == list(range(len(bee)))
    apples = next(c for c in chunks if c.metadata["source"] == "sub/a.txt")
    assert apples.metadata["title"] == "a"  # no heading: the file name


def test_jsonl_ids_are_kept_and_suffixed_when_a_record_is_split(tmp_path: Path) -> None:
    chunks = list(iter_chunks(_corpus(tmp_path), chunk_size=60, overlap=10))
    by_source = [c for c in chunks if c.metadata["source"] == "c.jsonl"]
    assert by_source[0].id == "doc-1"
    assert by_source[0].metadata["lang"] == "en"
    assert len(by_source[1].id) == 32  # no id given: the stable hash
    long_ids = [c.id for c in by_source[2:]]
    assert len(long_ids) >= 2
    assert long_ids == [f"doc-long#{i}" for i in range(len(long_ids))]


def test_ids_are_stable_and_unique_and_limit_cuts_the_stream(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    first = [c.id for c in iter_chunks(corpus, chunk_size=60, overlap=10)]
    again = [c.id for c in iter_chunks(corpus, chunk_size=60, overlap=10)]
    assert first == again
    assert len(set(first)) == len(first)
    assert [c.id for c in iter_chunks(corpus, chunk_size=60, overlap=10, limit=3)] == first[:3]


def test_changing_one_file_changes_only_its_chunk_ids(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    before = {c.id: c.metadata["source"] for c in iter_chunks(corpus, chunk_size=60, overlap=10)}
    (corpus / "sub" / "a.txt").write_text("Plain text file about pears. " * 3, encoding="utf-8")
    after = {c.id: c.metadata["source"] for c in iter_chunks(corpus, chunk_size=60, overlap=10)}
    changed = set(before) ^ set(after)
    assert changed
    assert {before.get(i) or after.get(i) for i in changed} == {"sub/a.txt"}


def test_duplicate_jsonl_ids_are_refused(tmp_path: Path) -> None:
    lines = [{"id": "same", "text": "First text here."}, {"id": "same", "text": "Second."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    with pytest.raises(DatasetError, match="duplicate chunk id 'same'"):
        list(iter_chunks(tmp_path))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not a JSON object"),
        ('{"id": "x"}', "string field 'text'"),
        ('{"text": "t", "metadata": [1]}', "'metadata' must be an object"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"bad\.jsonl:2: .*{message}"):
        list(iter_chunks(tmp_path))


def test_a_missing_corpus_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list(iter_chunks(tmp_path / "nope"))
