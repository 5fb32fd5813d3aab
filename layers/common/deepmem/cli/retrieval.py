"""`deepmem search` and `deepmem eval`: the dataset searched with and without the active
query adapter (the last one the trainer's guard applied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from deepmem.domain.errors import DatasetError, DeepmemError

if TYPE_CHECKING:
    from deepmem.wiring import CorpusSearch


class NoAdapterError(DeepmemError):
    """No query adapter is active: none was trained, or the guard applied none."""


def _corpus_search() -> CorpusSearch:
    """The dataset, the embedder training chose for it, the active adapter (or None)."""
    from deepmem import wiring
    from deepmem.cli.runtime import Runtime

    with Runtime() as runtime:
        return wiring.build_corpus_search(runtime.config, runtime.store)


def run_search(console: Console, question: str, *, k: int, use_adapter: bool) -> None:
    found = _corpus_search()
    if use_adapter and found.adapter is None:
        raise NoAdapterError(
            "no query adapter is active: none was trained yet, or the guard applied none "
            "(`deepmem show <run>`: metrics.guard says why)"
        )
    hits = found.search(question, k=k, use_adapter=use_adapter)
    table = Table(title=f"top {k} for {question!r}" + (" (adapter)" if use_adapter else ""))
    table.add_column("score")
    table.add_column("chunk")
    table.add_column("text")
    for hit in hits:
        table.add_row(f"{hit.score:.3f}", hit.id[:12], hit.text[:160].replace("\n", " "))
    console.print(table)


class JudgmentsFileError(DatasetError, ValueError):
    """The judged-queries file is missing or malformed: bad input, exit code 2."""


def read_judgments(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise JudgmentsFileError(f"queries file {path} does not exist")
    queries: list[str] = []
    relevant: list[list[str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            query, ids = record["query"], record["relevant"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise JudgmentsFileError(
                f'{path}:{number}: expected {{"query": str, "relevant": [chunk ids]}}'
            ) from exc
        if not isinstance(query, str) or not isinstance(ids, list) or not ids:
            raise JudgmentsFileError(
                f"{path}:{number}: a query needs text and at least one chunk id"
            )
        queries.append(query)
        relevant.append([str(i) for i in ids])
    if not queries:
        raise JudgmentsFileError(f"{path} has no queries")
    return queries, relevant


def run_eval(console: Console, path: Path) -> None:
    queries, relevant = read_judgments(path)
    found = _corpus_search()
    result = found.evaluate(queries, relevant)
    table = Table(title=f"{result['queries']} queries ({result['skipped']} skipped)")
    table.add_column("metric")
    table.add_column("base")
    table.add_column("adapter")
    for key, base in result["base"].items():
        after = result.get("adapter", {}).get(key)
        table.add_row(key, f"{base:.3f}", "-" if after is None else f"{after:.3f}")
    console.print(table)
    if found.adapter is None:
        console.print("no query adapter trained yet: only the base is reported")
