"""Recall on Cranfield: base MiniLM embeddings vs a query adapter trained on generated questions.

    uv run python bench/recall.py [--questions-per-doc 3] [--seed 0]

1. Embed the 1,400 Cranfield abstracts with the offline embedder (int8 ONNX all-MiniLM-L6-v2)
   and write them as a local DeepLake dataset (VectorStore layout); the embeddings are cached
   under bench/results/ so a rerun skips the ~150 s of embedding.
2. Generate questions for every abstract with the offline question generator (no LLM).
3. Train the query adapter on those generated questions only (default AdapterConfig; its own
   held-out share is generated questions too). The real queries are never seen in training.
4. Report recall@1/5/10 (share of a query's judged documents in its top k, averaged over the
   225 real queries) and hit@10, base vs adapter, as a table and bench/results/recall.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))

from deepmem import wiring  # noqa: E402
from deepmem.config import Config  # noqa: E402
from deepmem.domain.chunks import Chunk  # noqa: E402

if TYPE_CHECKING:
    from deepmem.ports import Embedder
    from deepmem.wiring import Corpus

maths = wiring.adapter_maths()
AdapterConfig, QuestionSet = maths.AdapterConfig, maths.QuestionSet
apply_adapter, group_pairs, normalize = maths.apply_adapter, maths.group_pairs, maths.normalize
relative_gain, top_k, train_adapter = maths.relative_gain, maths.top_k, maths.train_adapter

CRANFIELD = ROOT.parent / "shared" / "datasets" / "cranfield"
RESULTS = ROOT / "bench" / "results"
KS = (1, 5, 10)


def load_cranfield(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict]:
    docs = json.loads((folder / "cran_docs.json").read_text())
    queries = json.loads((folder / "cran_queries.json").read_text())
    judged: dict[int, set[str]] = {}
    for row in json.loads((folder / "cran_qrels.json").read_text()):
        judged.setdefault(int(row["query_num"]), set()).add(str(row["id"]))
    return docs, queries, judged


def embed_texts(embedder: Embedder, texts: list[str], batch: int = 128) -> np.ndarray:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        vectors.extend(embedder.embed(texts[start : start + batch]))
    return np.asarray(normalize(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)))


def cached_embeddings(embedder: Embedder, texts: list[str], name: str) -> np.ndarray:
    digest = hashlib.sha256(("\x00".join(texts) + embedder.model_name).encode()).hexdigest()[:16]
    path = RESULTS / f"{name}-{digest}.npy"
    if path.exists():
        return np.load(path)
    started = time.monotonic()
    vectors = embed_texts(embedder, texts)
    np.save(path, vectors)
    print(f"  embedded {len(texts)} {name} in {time.monotonic() - started:.0f} s", flush=True)
    return vectors


def write_dataset(path: Path, ids: list[str], texts: list[str], vectors: np.ndarray) -> None:
    import deeplake

    ds = deeplake.empty(str(path), overwrite=True, verbose=False)
    with ds:
        ds.create_tensor("text", htype="text")
        ds.create_tensor("metadata", htype="json")
        ds.create_tensor("embedding", htype="embedding", dtype="float32")
        ds.create_tensor("id", htype="text")
        ds.extend(
            {
                "text": texts,
                "metadata": [{} for _ in ids],
                "embedding": vectors.astype(np.float32),
                "id": ids,
            }
        )


def evaluate(
    query_vectors: np.ndarray, relevant: list[set[int]], corpus: np.ndarray
) -> dict[str, float]:
    ranked = top_k(query_vectors, corpus, max(KS))
    result: dict[str, float] = {}
    for k in KS:
        found = [
            len(set(row[:k].tolist()) & rel) / len(rel)
            for row, rel in zip(ranked, relevant, strict=True)
        ]
        result[f"recall@{k}"] = float(np.mean(found))
    hits = [bool(set(row[:10].tolist()) & rel) for row, rel in zip(ranked, relevant, strict=True)]
    result["hit@10"] = float(np.mean(hits))
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions-per-doc", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--extra-seeds",
        type=int,
        default=4,
        help="also train with this many other seeds (other held-out split and batch order) "
        "and report the spread of the gain",
    )
    return parser.parse_args(argv)


# ---- the run -------------------------------------------------------------------------------------


def build_corpus(embedder: Embedder, ids: list[str], texts: list[str]) -> Corpus:
    """The abstracts embedded, written as a local DeepLake dataset and read back through the
    adapter's own reader."""
    doc_vectors = cached_embeddings(embedder, texts, "cranfield-docs")
    dataset_path = RESULTS / "cranfield-dataset"
    write_dataset(dataset_path, ids, texts, doc_vectors)
    return wiring.load_corpus(Config(), str(dataset_path))


def generate_pairs(
    docs: list[dict[str, Any]], ids: list[str], texts: list[str], per_doc: int
) -> list[tuple[str, str]]:
    """(question, document id) pairs from the offline generator, up to `per_doc` a document."""
    generator = wiring.offline_generator()
    pairs: list[tuple[str, str]] = []
    for doc, doc_id, text in zip(docs, ids, texts, strict=True):
        chunk = Chunk(id=doc_id, text=text, metadata={"title": str(doc.get("title") or "")})
        pairs.extend((q, doc_id) for q in generator.questions(chunk, per_doc))
    print(f"  generated {len(pairs)} questions", flush=True)
    return pairs


def judged_queries(
    queries: list[dict[str, Any]], judged: dict[int, set[str]], corpus: Corpus
) -> tuple[list[dict[str, Any]], list[set[int]]]:
    """The real queries with judgments, and the corpus rows judged relevant to each."""
    real = [q for q in queries if judged.get(int(q["query number"]))]
    relevant = [
        {corpus.index[i] for i in judged[int(q["query number"])] if i in corpus.index} for q in real
    ]
    return real, relevant


def other_seed_gains(
    questions: QuestionSet,
    corpus: Corpus,
    query_vectors: np.ndarray,
    relevant: list[set[int]],
    *,
    seeds: range,
    base_recall: float,
) -> list[float]:
    """The same training with other seeds: how much of the gain is the luck of one split?
    recall@10's relative gain over `base_recall` for each seed."""
    gains = []
    for seed in seeds:
        other = train_adapter(questions, corpus.embeddings, AdapterConfig(seed=seed))
        scores = evaluate(apply_adapter(other.matrix, query_vectors), relevant, corpus.embeddings)
        gains.append(relative_gain(base_recall, scores["recall@10"]))
    return gains


def gain_spread(gains: list[float]) -> dict[str, Any]:
    return {
        "seeds": len(gains),
        "recall@10_relative_gain_mean": round(float(np.mean(gains)), 4),
        "recall@10_relative_gain_min": round(float(np.min(gains)), 4),
        "recall@10_relative_gain_max": round(float(np.max(gains)), 4),
    }


def table_rows(base: dict[str, float], adapted: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "metric": metric,
            "base": round(base[metric], 4),
            "adapter": round(adapted[metric], 4),
            "relative_gain": round(relative_gain(base[metric], adapted[metric]), 4),
        }
        for metric in [*(f"recall@{k}" for k in KS), "hit@10"]
    ]


def run(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """The whole benchmark: the report (recall.json) and the adapter's training seconds."""
    started = time.monotonic()
    docs, queries, judged = load_cranfield(CRANFIELD)
    ids = [str(d["id"]) for d in docs]
    texts = [str(d.get("body") or d.get("title") or "").strip() for d in docs]
    embedder = wiring.offline_embedder()
    print(f"Cranfield: {len(docs)} abstracts, {len(queries)} queries", flush=True)
    corpus = build_corpus(embedder, ids, texts)
    pairs = generate_pairs(docs, ids, texts, args.questions_per_doc)

    questions, positives, dropped = group_pairs(pairs, corpus.index)
    assert dropped == 0
    question_set = QuestionSet(cached_embeddings(embedder, questions, "questions"), positives)
    train_started = time.monotonic()
    result = train_adapter(question_set, corpus.embeddings, AdapterConfig(seed=args.seed))
    train_seconds = time.monotonic() - train_started

    real, relevant = judged_queries(queries, judged, corpus)
    query_vectors = normalize(cached_embeddings(embedder, [q["query"] for q in real], "queries"))
    base = evaluate(query_vectors, relevant, corpus.embeddings)
    adapted = evaluate(apply_adapter(result.matrix, query_vectors), relevant, corpus.embeddings)
    seed_gains = other_seed_gains(
        question_set,
        corpus,
        query_vectors,
        relevant,
        seeds=range(args.seed + 1, args.seed + 1 + args.extra_seeds),
        base_recall=base["recall@10"],
    )
    spread = gain_spread([relative_gain(base["recall@10"], adapted["recall@10"]), *seed_gains])

    identity = np.eye(corpus.dimension)
    drift = float(np.linalg.norm(result.matrix - identity) / np.sqrt(corpus.dimension))
    report = {
        "corpus": "cranfield",
        "documents": len(docs),
        "real_queries": len(real),
        "generated_questions": len(pairs),
        "questions_per_doc": args.questions_per_doc,
        "embedding_model": embedder.model_name,
        "adapter_train_seconds": round(train_seconds, 2),
        "adapter_metrics_on_generated_heldout": result.metrics,
        "real_queries_table": table_rows(base, adapted),
        "drift_from_identity": round(drift, 4),
        "recall@10_gain_over_seeds": spread,
        "seconds_total": round(time.monotonic() - started, 1),
    }
    return report, train_seconds


# ---- the results ---------------------------------------------------------------------------------


def print_report(report: dict[str, Any], train_seconds: float) -> None:
    print()
    print(
        f"Recall on the {report['real_queries']} real Cranfield queries (adapter trained on "
        f"{report['generated_questions']} generated questions only)"
    )
    print(f"| {'metric':<9} | {'base':>6} | {'adapter':>7} | {'relative':>8} |")
    print(f"|{'-' * 11}|{'-' * 8}|{'-' * 9}|{'-' * 10}|")
    for row in report["real_queries_table"]:
        print(
            f"| {row['metric']:<9} | {row['base']:>6.3f} | {row['adapter']:>7.3f} | "
            f"{100 * row['relative_gain']:>+7.1f}% |"
        )
    held = report["adapter_metrics_on_generated_heldout"]
    print(
        f"\nadapter: {held['epochs']} epochs (best {held['best_epoch']}), "
        f"{train_seconds:.1f} s; on its own held-out generated questions recall@10 "
        f"{held['recall_before']['recall@10']:.3f} -> {held['recall_after']['recall@10']:.3f}"
    )
    spread = report["recall@10_gain_over_seeds"]
    if spread["seeds"] > 1:  # trained with other seeds too
        print(
            f"recall@10 relative gain over {spread['seeds']} seeds: mean "
            f"{100 * spread['recall@10_relative_gain_mean']:+.1f}%, range "
            f"{100 * spread['recall@10_relative_gain_min']:+.1f}% .. "
            f"{100 * spread['recall@10_relative_gain_max']:+.1f}%"
        )


def main() -> None:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report, train_seconds = run(args)
    (RESULTS / "recall.json").write_text(json.dumps(report, indent=2))
    print_report(report, train_seconds)
    print(f"wrote {RESULTS / 'recall.json'}")


if __name__ == "__main__":
    main()
