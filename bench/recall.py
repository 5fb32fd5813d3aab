"""Recall of the query adapters on a collection with judged queries, over several seeds.

    uv run python bench/recall.py                        # Cranfield (../shared/datasets)
    uv run python bench/recall.py --corpus DIR --queries judged.jsonl

1. The corpus as a local DeepLake dataset embedded by the offline embedder (int8 ONNX
   all-MiniLM-L6-v2). Cranfield: one chunk per abstract; `--corpus`: the folder chunked as
   `deepmem demo --corpus` does (`.md`/`.txt`/`.jsonl`). Embeddings are cached under
   bench/results/, so a rerun skips the embedding.
2. Questions for every chunk from the offline question generator (no LLM); their count per
   chunk and the share of distinct ones are reported.
3. For each trainer (`query_adapter`: linear; `feedback_adapter`: linear maps cross-fitted on
   folds and averaged, then a feedback step, `deepmem.adapters.trainers.query_maps`) and
   each seed, an adapter trained on those generated questions only; the judged queries are
   never seen.
4. The judged queries scored base vs adapter: recall@1/5/10 (share of a query's judged chunks
   in its top k), nDCG@10 (graded when the judgments carry grades), hit@10, and how many
   queries got better, worse or stayed the same on recall@10; the mean and range of each
   metric's relative gain over the seeds. A table, and JSON in bench/results/.

The judged-queries file is the one `deepmem eval` reads, one JSON object a line:
`{"query": str, "relevant": [chunk ids]}`, optionally with `"grades": {chunk id: gain}` (a
higher gain is more relevant; without it every judged chunk has gain 1). For Cranfield the
gain is 5 - grade (grade 1 is a complete answer, 4 of minimal interest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
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

maths, models, maps = wiring.adapter_maths()
AdapterConfig, QuestionSet = maths.AdapterConfig, maths.QuestionSet
group_pairs, normalize, top_k = maths.group_pairs, maths.normalize, maths.top_k
relative_gain = maths.relative_gain

CRANFIELD = ROOT.parent / "shared" / "datasets" / "cranfield"
RESULTS = ROOT / "bench" / "results"
METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@10", "hit@10")
#: The trainers measured, as the `trainer` setting names them, and their query models.
TRAINERS = {
    "query_adapter": maps.QueryModel(),
    "feedback_adapter": maps.FEEDBACK_MODEL,
}
#: Extra rows with `--ablation`: each half of the feedback adapter alone, and more members.
ABLATION = {
    "linear, 3 cross-fitted": maps.QueryModel(members=3),
    "feedback, 1 member": maps.QueryModel(kind=maps.FEEDBACK),
    "feedback, 5 cross-fitted": maps.QueryModel(kind=maps.FEEDBACK, members=5),
}


@dataclass(frozen=True)
class Collection:
    name: str
    corpus: Corpus
    chunks: list[Chunk]  # row-aligned with the corpus
    queries: list[str]
    gains: list[dict[int, float]]  # per query: corpus row -> gain (> 0)
    graded: bool


# ---- loading a collection ----------------------------------------------------------------------


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


def _gains_by_row(judged: list[dict[str, float]], corpus: Corpus) -> list[dict[int, float]]:
    return [
        {corpus.index[i]: g for i, g in j.items() if i in corpus.index and g > 0} for j in judged
    ]


def load_cranfield(embedder: Embedder, folder: Path = CRANFIELD) -> Collection:
    """Cranfield as bench/README.md measures it: one chunk per abstract, graded judgments."""
    docs = json.loads((folder / "cran_docs.json").read_text())
    ids = [str(d["id"]) for d in docs]
    texts = [str(d.get("body") or d.get("title") or "").strip() for d in docs]
    vectors = cached_embeddings(embedder, texts, "cranfield-docs")
    dataset_path = RESULTS / "cranfield-dataset"
    write_dataset(dataset_path, ids, texts, vectors)
    corpus = wiring.load_corpus(Config(), str(dataset_path))
    grades: dict[int, dict[str, float]] = {}
    for row in json.loads((folder / "cran_qrels.json").read_text()):
        grades.setdefault(int(row["query_num"]), {})[str(row["id"])] = 5.0 - int(row["position"])
    real = [q for q in json.loads((folder / "cran_queries.json").read_text()) if q.get("query")]
    real = [q for q in real if grades.get(int(q["query number"]))]
    chunks = [
        Chunk(id=i, text=t, metadata={"title": str(d.get("title") or "")})
        for i, t, d in zip(ids, texts, docs, strict=True)
    ]
    judged = [grades[int(q["query number"])] for q in real]
    return Collection(
        "cranfield", corpus, chunks, [q["query"] for q in real], _gains_by_row(judged, corpus), True
    )


def read_graded_judgments(path: Path) -> tuple[list[str], list[dict[str, float]], bool]:
    """`deepmem eval`'s file (validated by its own reader), with the optional grades."""
    from deepmem.cli.retrieval import read_judgments

    queries, relevant = read_judgments(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    graded = any(isinstance(r.get("grades"), dict) for r in records)
    judged = []
    for record, ids in zip(records, relevant, strict=True):
        given = record.get("grades") if isinstance(record.get("grades"), dict) else {}
        judged.append({i: float(given.get(i, 1.0)) for i in ids})
    return queries, judged, graded


def load_folder(embedder: Embedder, corpus_dir: Path, queries_file: Path) -> Collection:
    """A corpus folder built as `deepmem demo --corpus` builds it (reused when unchanged)."""
    from deepmem.local.dataset_builder import ensure_dataset, iter_chunks

    digest = hashlib.sha256(str(corpus_dir.resolve()).encode()).hexdigest()[:12]
    dataset_path = RESULTS / f"dataset-{corpus_dir.name}-{digest}"
    started = time.monotonic()
    built = ensure_dataset(corpus_dir, str(dataset_path), embedder)
    if not built.reused:
        print(f"  embedded {built.chunks} chunks in {time.monotonic() - started:.0f} s")
    corpus = wiring.load_corpus(Config(), str(dataset_path))
    by_id = {
        c.id: Chunk(id=c.id, text=c.text, metadata=c.metadata) for c in iter_chunks(corpus_dir)
    }
    chunks = [by_id[i] for i in corpus.ids]
    queries, judged, graded = read_graded_judgments(queries_file)
    gains = _gains_by_row(judged, corpus)
    kept = [i for i, g in enumerate(gains) if g]
    if not kept:
        raise SystemExit(f"none of the chunk ids judged in {queries_file} is in the corpus")
    return Collection(
        corpus_dir.name,
        corpus,
        chunks,
        [queries[i] for i in kept],
        [gains[i] for i in kept],
        graded,
    )


# ---- scoring -----------------------------------------------------------------------------------


def per_query(ranked: np.ndarray, gains: list[dict[int, float]]) -> dict[str, np.ndarray]:
    """Each metric for each query, from its top 10 rows."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for row, gain in zip(ranked, gains, strict=True):
        rows = row[:10].tolist()
        for k in (1, 5, 10):
            out[f"recall@{k}"].append(len(set(rows[:k]) & gain.keys()) / len(gain))
        dcg = sum(gain.get(r, 0.0) * discounts[i] for i, r in enumerate(rows))
        ideal = sorted(gain.values(), reverse=True)[:10]
        out["ndcg@10"].append(dcg / float(np.dot(ideal, discounts[: len(ideal)])))
        out["hit@10"].append(float(bool(set(rows) & gain.keys())))
    return {m: np.asarray(v) for m, v in out.items()}


def score(query_vectors: np.ndarray, collection: Collection) -> dict[str, np.ndarray]:
    return per_query(top_k(query_vectors, collection.corpus.embeddings, 10), collection.gains)


def seed_row(base: dict[str, np.ndarray], adapted: dict[str, np.ndarray]) -> dict[str, Any]:
    means = {m: float(adapted[m].mean()) for m in METRICS}
    diff = adapted["recall@10"] - base["recall@10"]
    return {
        "metrics": {m: round(v, 4) for m, v in means.items()},
        "relative_gain": {
            m: round(relative_gain(float(base[m].mean()), means[m]), 4) for m in METRICS
        },
        "queries_better": int((diff > 1e-9).sum()),
        "queries_worse": int((diff < -1e-9).sum()),
        "queries_same": int((np.abs(diff) <= 1e-9).sum()),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over the seeds of each metric and of its relative gain."""
    out: dict[str, Any] = {}
    for part in ("metrics", "relative_gain"):
        out[part] = {
            m: {
                "mean": round(float(np.mean([r[part][m] for r in rows])), 4),
                "min": round(float(np.min([r[part][m] for r in rows])), 4),
                "max": round(float(np.max([r[part][m] for r in rows])), 4),
            }
            for m in METRICS
        }
    for key in ("queries_better", "queries_worse", "queries_same"):
        out[key] = round(float(np.mean([r[key] for r in rows])), 1)
    return out


# ---- the run -----------------------------------------------------------------------------------


def generated_questions(
    collection: Collection, embedder: Embedder, per_chunk: int
) -> tuple[QuestionSet, dict[str, Any]]:
    generator = wiring.offline_generator()
    pairs = [(q, c.id) for c in collection.chunks for q in generator.questions(c, per_chunk)]
    questions, positives, dropped = group_pairs(pairs, collection.corpus.index)
    assert dropped == 0
    stats = {
        "chunks": len(collection.chunks),
        "pairs": len(pairs),
        "distinct_questions": len(questions),
        "questions_per_chunk": round(len(pairs) / len(collection.chunks), 3),
        "distinct_share": round(len(questions) / max(1, len(pairs)), 4),
        "chunks_without_question": len(collection.chunks) - len({c for _, c in pairs}),
    }
    print(
        f"  {len(pairs)} generated questions ({stats['questions_per_chunk']} a chunk, "
        f"{100 * stats['distinct_share']:.1f}% distinct)",
        flush=True,
    )
    return QuestionSet(cached_embeddings(embedder, questions, "questions"), positives), stats


def run_trainer(
    model: Any, questions: QuestionSet, collection: Collection, seeds: list[int], base: dict
) -> dict[str, Any]:
    corpus = collection.corpus.embeddings
    query_vectors = normalize(
        cached_embeddings(wiring.offline_embedder(), collection.queries, "queries")
    )
    rows = []
    for seed in seeds:
        started = time.monotonic()
        result = models.train_query_model(questions, corpus, AdapterConfig(seed=seed), model)
        seconds = time.monotonic() - started
        adapted = score(
            maps.query_map(model, result.matrix, corpus).apply(query_vectors), collection
        )
        row = seed_row(base, adapted) | {"seed": seed, "train_seconds": round(seconds, 2)}
        row["heldout_generated"] = {
            "before": result.metrics["recall_before"],
            "after": result.metrics["recall_after"],
            "questions": result.metrics["heldout_questions"],
        }
        rows.append(row)
    return {"query_model": model.as_dict(), "seeds": rows, "over_seeds": summary(rows)}


GRID_CHUNKS = (1, 2, 3, 4, 5)
GRID_WEIGHTS = (0.5, 0.75, 1.0, 1.25)


def feedback_grid(
    questions: QuestionSet, collection: Collection, seeds: list[int], base: dict
) -> list[dict[str, Any]]:
    """The feedback adapter's W for each seed, fed back with other constants: how much the
    result depends on them (they are fixed, not learned)."""
    corpus = collection.corpus.embeddings
    query_vectors = normalize(
        cached_embeddings(wiring.offline_embedder(), collection.queries, "queries")
    )
    model = TRAINERS["feedback_adapter"]
    matrices = [
        models.train_query_model(questions, corpus, AdapterConfig(seed=s), model).matrix
        for s in seeds
    ]
    cells = []
    for chunks in GRID_CHUNKS:
        for weight in GRID_WEIGHTS:
            rows = [
                seed_row(
                    base,
                    score(
                        maps.FeedbackMap(m, corpus, chunks, weight).apply(query_vectors), collection
                    ),
                )
                for m in matrices
            ]
            cells.append({"feedback_chunks": chunks, "feedback_weight": weight} | summary(rows))
    return cells


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    embedder = wiring.offline_embedder()
    if args.corpus:
        collection = load_folder(embedder, Path(args.corpus), Path(args.queries))
    else:
        collection = load_cranfield(embedder)
    print(
        f"{collection.name}: {len(collection.chunks)} chunks, {len(collection.queries)} judged "
        f"queries ({'graded' if collection.graded else 'binary'} judgments)",
        flush=True,
    )
    questions, question_stats = generated_questions(collection, embedder, args.questions_per_chunk)
    query_vectors = normalize(cached_embeddings(embedder, collection.queries, "queries"))
    base = score(query_vectors, collection)
    trainers = dict(TRAINERS) | (ABLATION if args.ablation else {})
    seeds = list(range(args.seed, args.seed + args.seeds))
    results = {}
    for name, model in trainers.items():
        results[name] = run_trainer(model, questions, collection, seeds, base)
        print(f"  {name}: {len(seeds)} seeds trained", flush=True)
    grid = feedback_grid(questions, collection, seeds, base) if args.grid else None
    return {
        "feedback_grid": grid,
        "collection": collection.name,
        "chunks": len(collection.chunks),
        "judged_queries": len(collection.queries),
        "graded": collection.graded,
        "embedding_model": embedder.model_name,
        "questions": question_stats,
        "seeds": seeds,
        "base": {m: round(float(base[m].mean()), 4) for m in METRICS},
        "trainers": results,
        "load_average": list(os.getloadavg()),
        "seconds_total": round(time.monotonic() - started, 1),
    }


# ---- the results -------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    q = report["questions"]
    print(
        f"\n{report['collection']}: {report['judged_queries']} judged queries; adapters trained "
        f"on {q['pairs']} generated questions only ({q['questions_per_chunk']} a chunk, "
        f"{100 * q['distinct_share']:.1f}% distinct); seeds {report['seeds']}"
    )
    print("| trainer | metric | base | mean | min .. max | gain mean | gain min .. max |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, result in report["trainers"].items():
        over = result["over_seeds"]
        for m in METRICS:
            v, g = over["metrics"][m], over["relative_gain"][m]
            print(
                f"| {name} | {m} | {report['base'][m]:.3f} | {v['mean']:.3f} | "
                f"{v['min']:.3f} .. {v['max']:.3f} | {100 * g['mean']:+.1f}% | "
                f"{100 * g['min']:+.1f}% .. {100 * g['max']:+.1f}% |"
            )
    print("\n| trainer | queries better / worse / same (recall@10, mean over seeds) | train s |")
    print("|---|---|---:|")
    for name, result in report["trainers"].items():
        over = result["over_seeds"]
        seconds = np.mean([r["train_seconds"] for r in result["seeds"]])
        print(
            f"| {name} | {over['queries_better']} / {over['queries_worse']} / "
            f"{over['queries_same']} | {seconds:.1f} |"
        )
    if report["feedback_grid"]:
        print("\nfeedback_adapter's constants: recall@10 gain, mean (worst seed) over the seeds")
        print("| feedback chunks | " + " | ".join(f"weight {w}" for w in GRID_WEIGHTS) + " |")
        print("|---|" + "---:|" * len(GRID_WEIGHTS))
        for chunks in GRID_CHUNKS:
            cells = [c for c in report["feedback_grid"] if c["feedback_chunks"] == chunks]
            gains = [c["relative_gain"]["recall@10"] for c in cells]
            print(
                f"| {chunks} | "
                + " | ".join(f"{100 * g['mean']:+.1f}% ({100 * g['min']:+.1f}%)" for g in gains)
                + " |"
            )
    print(f"\n{report['seconds_total']} s in all, load average {report['load_average']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="a corpus folder (default: Cranfield)")
    parser.add_argument("--queries", help="its judged queries, in `deepmem eval`'s format")
    parser.add_argument("--questions-per-chunk", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds, from --seed")
    parser.add_argument("--ablation", action="store_true", help="also each half of the model")
    parser.add_argument(
        "--grid", action="store_true", help="also the feedback constants' sensitivity"
    )
    parser.add_argument("--out", help="the JSON report (default bench/results/recall-NAME.json)")
    args = parser.parse_args(argv)
    if bool(args.corpus) != bool(args.queries):
        parser.error("--corpus and --queries go together")
    return args


def main() -> None:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = run(args)
    out = Path(args.out) if args.out else RESULTS / f"recall-{report['collection']}.json"
    out.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
