"""`deepmem search` and `deepmem eval`: the dataset searched with and without the latest
trained query adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deepmem.config import load_config
from deepmem.domain.errors import DatasetError, DeepmemError


class NoAdapterError(DeepmemError):
    """No query adapter has been trained yet."""


def _parts(token: str | None = None) -> tuple[Any, Any, Any]:
    """The dataset's corpus, the embedder of its model, the latest adapter (or None)."""
    from deepmem import wiring
    from deepmem.adapters.dataset.corpus import dataset_embedding_model, load_corpus
    from deepmem.adapters.trainers.artifacts import ArtifactNotFoundError, artifact_store_for

    config = load_config()
    dataset = config.dataset_path
    corpus = load_corpus(dataset, token)
    model = dataset_embedding_model(dataset, token) or "all-MiniLM-L6-v2"
    embedder = wiring.embedder_for_model(config, model)
    store = artifact_store_for(config.artifacts_location)
    job_id = store.latest_job_id()
    adapter = None
    if job_id is not None:
        try:
            adapter = store.load(job_id).matrix
        except ArtifactNotFoundError:
            adapter = None
    return corpus, embedder, adapter


def run_search(console: Console, question: str, *, k: int, use_adapter: bool) -> None:
    from deepmem.adapters.dataset.corpus import search

    corpus, embedder, adapter = _parts()
    if use_adapter and adapter is None:
        raise NoAdapterError("no query adapter is trained yet: run `deepmem demo` or train a run")
    hits = search(
        question, embedder=embedder, corpus=corpus, adapter=adapter if use_adapter else None, k=k
    )
    table = Table(title=f"top {k} for {question!r}" + (" (adapter)" if use_adapter else ""))
    table.add_column("score")
    table.add_column("chunk")
    table.add_column("text")
    for hit in hits:
        table.add_row(f"{hit.score:.3f}", hit.id[:12], hit.text[:160].replace("\n", " "))
    console.print(table)


def read_judgments(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DatasetError(f"queries file {path} does not exist")
    queries: list[str] = []
    relevant: list[list[str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            query, ids = record["query"], record["relevant"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(
                f'{path}:{number}: expected {{"query": str, "relevant": [chunk ids]}}'
            ) from exc
        if not isinstance(query, str) or not isinstance(ids, list) or not ids:
            raise DatasetError(f"{path}:{number}: a query needs text and at least one chunk id")
        queries.append(query)
        relevant.append([str(i) for i in ids])
    if not queries:
        raise DatasetError(f"{path} has no queries")
    return queries, relevant


def run_eval(console: Console, path: Path) -> None:
    from deepmem.adapters.dataset.corpus import evaluate_queries

    queries, relevant = read_judgments(path)
    corpus, embedder, adapter = _parts()
    result = evaluate_queries(corpus, embedder, queries, relevant, adapter=adapter)
    table = Table(title=f"{result['queries']} queries ({result['skipped']} skipped)")
    table.add_column("metric")
    table.add_column("base")
    table.add_column("adapter")
    for key, base in result["base"].items():
        after = result.get("adapter", {}).get(key)
        table.add_row(key, f"{base:.3f}", "-" if after is None else f"{after:.3f}")
    console.print(table)
    if adapter is None:
        console.print("no query adapter trained yet: only the base is reported")
