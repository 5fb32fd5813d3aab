"""The default demo corpus: stdlib docstrings, read from source, in a deterministic order."""

from __future__ import annotations

import json
from pathlib import Path

from deepmem.local.dataset_builder import iter_chunks
from deepmem.local.stdlib_corpus import MIN_WORDS, iter_stdlib_docs, stdlib_corpus

from tests.subprocess_support import run_python

REPO = Path(__file__).resolve().parents[2]


def test_the_corpus_is_deterministic_and_limited(tmp_path: Path) -> None:
    first = stdlib_corpus(tmp_path / "a", limit=120)
    second = stdlib_corpus(tmp_path / "b", limit=120)
    text = (first / "stdlib.jsonl").read_text(encoding="utf-8")
    assert text == (second / "stdlib.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 120
    assert len({r["id"] for r in records}) == 120
    modules = [r["metadata"]["module"] for r in records]
    assert modules == sorted(modules)  # modules in name order


def test_documents_are_real_docstrings_of_enough_words() -> None:
    docs = list(iter_stdlib_docs(limit=400))
    assert len(docs) == 400
    by_id = {doc.id: doc for doc in docs}
    assert "stdlib:argparse.ArgumentParser" in by_id
    assert "Object for parsing command line strings" in by_id["stdlib:argparse.ArgumentParser"].text
    for doc in docs:
        assert doc.text.startswith(f"{doc.title}\n\n")
        assert len(doc.text.split()) > MIN_WORDS
        assert doc.id == f"stdlib:{doc.title}"
        leaf = doc.title.split(".")
        assert not any(part.startswith("_") for part in leaf), doc.title
        assert not doc.module.startswith(("test", "idlelib", "tkinter"))


def test_the_builder_reads_the_corpus_with_its_ids_and_titles(tmp_path: Path) -> None:
    corpus = stdlib_corpus(tmp_path / "corpus", limit=30)
    chunks = list(iter_chunks(corpus))
    assert len(chunks) >= 30
    assert chunks[0].id.startswith("stdlib:")
    assert all(c.metadata["title"] and c.metadata["source"] == "stdlib.jsonl" for c in chunks)


def test_no_module_is_imported_to_read_its_docstrings(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from deepmem.local.stdlib_corpus import iter_stdlib_docs\n"
        "docs = list(iter_stdlib_docs())\n"
        "modules = {d.module.split('.')[0] for d in docs}\n"
        "print(len(docs), sorted(m for m in ('turtle', 'smtplib', 'sqlite3', 'webbrowser')\n"
        "                        if m in modules and m in sys.modules))\n"
    )
    completed = run_python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    count, imported = completed.stdout.strip().split(" ", 1)
    assert int(count) > 1000
    assert imported == "[]"
