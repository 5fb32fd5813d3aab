"""The offline generator on Cranfield: questions per chunk and the share of distinct questions,
on the abstracts as published (lower-case, " . " between sentences) and on an unpunctuated
variant (every . ! ? ; : removed, so no sentence boundary is left).

uv run python bench/offline_questions.py    # a table, and bench/results/offline_questions.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from deepmem import wiring
from deepmem.domain.chunks import Chunk

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT.parent / "shared" / "datasets" / "cranfield"
RESULTS = ROOT / "bench" / "results"


def variants(docs: list[dict[str, Any]]) -> dict[str, list[Chunk]]:
    def chunk(doc: dict[str, Any], text: str) -> Chunk:
        title = str(doc.get("title") or "")
        return Chunk(id=str(doc["id"]), text=text, metadata={"title": title})

    plain = [chunk(d, str(d.get("body") or "")) for d in docs]
    bare = [chunk(d, re.sub(r"[.!?;:]", " ", str(d.get("body") or ""))) for d in docs]
    return {"cranfield": plain, "cranfield-unpunctuated": bare}


def measure(chunks: list[Chunk], per_chunk: int) -> dict[str, Any]:
    generator = wiring.offline_generator()
    started = time.monotonic()
    asked = [generator.questions(c, per_chunk) for c in chunks]
    seconds = time.monotonic() - started
    flat = [q for qs in asked for q in qs]
    forms = {" ".join(q.split()[:2]) for q in flat}  # the opening two words of each question
    return {
        "chunks": len(chunks),
        "questions": len(flat),
        "per_chunk": round(len(flat) / len(chunks), 3),
        "chunks_with_fewer": sum(len(qs) < per_chunk for qs in asked),
        "distinct_share": round(len(set(flat)) / max(1, len(flat)), 4),
        "opening_forms": len(forms),
        "seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-chunk", type=int, default=3)
    args = parser.parse_args(argv)
    docs = json.loads((CRANFIELD / "cran_docs.json").read_text())
    report = {name: measure(chunks, args.per_chunk) for name, chunks in variants(docs).items()}
    print(f"| {'corpus':<24} | per chunk | fewer than {args.per_chunk} | distinct | forms | s |")
    for name, row in report.items():
        print(
            f"| {name:<24} | {row['per_chunk']:>9.2f} | {row['chunks_with_fewer']:>12} | "
            f"{row['distinct_share']:>8.3f} | {row['opening_forms']:>5} | {row['seconds']} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "offline_questions.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
