"""A generation and training at scale on one machine, with handovers that really happen.

    uv run python bench/scale.py [--chunks 100000] [--execution-seconds 10]

Nothing is downloaded. The corpus is `--chunks` synthetic one-sentence chunks (deterministic:
chunk i is built from i alone), embedded by `tests/fakes/embedder.py`'s HashingEmbedder (16
dimensions, feature hashing of words: cheap enough for 2 cores; the real model embeds ~100
passages/s here and would be the whole bench). Questions come from the offline generator.
The store is the embedded PostgreSQL with the real migrations (`tests/db.py`); the workflow
is the deployed ASL on moto's interpreter with the handlers in process (`LocalWorkflow`), with
a Lambda timeout of `--function-seconds` (the chunk stream keeps 20 s in hand, so a call
lasts about `function-seconds - 20` s) and an execution budget of `--execution-seconds`, so
executions hand over as a 24 h one would.

Reports, and writes bench/results/scale.json:
- chunks/s of the dataset build and of generation;
- SQL function calls (each one store round trip) and transactions per batch, counted by
  PostgreSQL (`track_functions = all` → `pg_stat_user_functions`, `pg_stat_database`);
- history events of every execution of the chain, and how many executions;
- pair-read time per 100k pairs by keyset, the first 100k against the last;
- peak RSS of the training step (the query adapter as a streamed job, `--train-seconds` of
  work per invocation, in a subprocess of its own: its VmHWM from `/proc/self/status`, which
  starts afresh at exec, unlike `ru_maxrss`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
# The handlers' Metrics flush themselves every 100 metrics when called without their Lambda
# decorator, as here; without a namespace that flush raises SchemaValidationError.
_BENCH_ENV = {
    "BUGGER_OFF": "true",
    "TQDM_DISABLE": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "deepmem-bench",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
for _name, _value in _BENCH_ENV.items():
    os.environ.setdefault(_name, _value)

import psycopg  # noqa: E402
from deepmem import wiring  # noqa: E402
from deepmem.adapters.generators.offline import OfflineQuestionGenerator  # noqa: E402
from deepmem.adapters.store.postgres import PostgresStore, connect_pool  # noqa: E402
from deepmem.config import Config  # noqa: E402
from deepmem.domain.handover import GenerationLimits  # noqa: E402
from deepmem.domain.models import SettingsUpdate  # noqa: E402
from deepmem.domain.status import Phase, RunStatus  # noqa: E402
from deepmem.local.dataset_builder import build_dataset  # noqa: E402
from deepmem.local.functions import load_function  # noqa: E402
from deepmem.local.workflow import LocalWorkflow  # noqa: E402
from deepmem.services.generation import GenerationService  # noqa: E402
from deepmem.services.runs import RunService  # noqa: E402
from deepmem.services.training import TrainingService  # noqa: E402

from tests.db import TestServer, test_server  # noqa: E402
from tests.fakes.embedder import HashingEmbedder  # noqa: E402
from tests.integration.training_scale_worker import peak_rss_mib  # noqa: E402

WORDS = ["boundary", "shock", "heat", "flutter", "vortex", "nozzle", "inlet", "friction"]


def write_corpus(folder: Path, chunks: int) -> Path:
    """One JSONL line a chunk: a title and three sentences of their own, so the offline
    generator asks about three questions of each."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for i in range(chunks):
            a, b, c = WORDS[i % 8], WORDS[(i // 8) % 8], WORDS[(i // 64) % 8]
            text = (
                f"Report {i} measures the {a} layer at Reynolds number {1000 + i}. "
                f"The {b} pressure rises near sample {i * 3} of the tunnel. "
                f"Engineers traced the {c} noise to run {i % 97} of the test series."
            )
            record = {"id": f"r{i}", "text": text, "metadata": {"title": f"{a} {b} study {i}"}}
            out.write(json.dumps(record) + "\n")
    return folder


def db_counters(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        calls = conn.execute(
            "select coalesce(sum(calls), 0) from pg_stat_user_functions where schemaname = 'public'"
        ).fetchone()
        xacts = conn.execute(
            "select xact_commit + xact_rollback from pg_stat_database"
            " where datname = current_database()"
        ).fetchone()
    assert calls is not None and xacts is not None
    return {"function_calls": int(calls[0]), "transactions": int(xacts[0])}


def settle_stats(url: str) -> None:
    """Statistics reach the shared counters when a backend goes idle (at most once a second)."""
    time.sleep(1.2)
    with psycopg.connect(url) as conn:
        conn.execute("select pg_stat_force_next_flush()")


def generate(args: argparse.Namespace, store: PostgresStore, url: str, dataset: str) -> Any:
    config = Config.model_validate({"DATABASE_URL": url, "DEEPMEM_DATASET": dataset})
    service = GenerationService(
        store,
        wiring.chunk_source_for(config),
        lambda _settings: OfflineQuestionGenerator(),
        limits=GenerationLimits(seconds_budget=args.execution_seconds),
    )
    batch_fn = load_function("generate_batch")
    record_fn = load_function("record_failure")
    handlers = {
        "GenerateBatchFunction": lambda event, context: batch_fn.handle(event, service, context),
        "TrainFunction": lambda event, context: None,
        "RecordFailureFunction": lambda event, context: record_fn.handle(event, store, None),
    }
    with LocalWorkflow(handlers, function_timeout_seconds=args.function_seconds) as workflow:
        runs = RunService(store, workflow, dataset)
        settle_stats(url)
        before = db_counters(url)
        started = time.perf_counter()
        run = runs.start_generation(None).run
        last = workflow.wait(run.id, Phase.GENERATING, 1, timeout=args.timeout)
        seconds = time.perf_counter() - started
        chain = workflow.chain(run.id, Phase.GENERATING, 1)
        events = [len(workflow.history(run.id, Phase.GENERATING, 1, n)) for n in range(len(chain))]
    settle_stats(url)
    after = db_counters(url)
    run = store.get_run(run.id)
    batches = -(-run.total_chunks // args.batch_size)
    calls = after["function_calls"] - before["function_calls"]
    xacts = after["transactions"] - before["transactions"]
    return run, {
        "state": last.state.value,
        "seconds": round(seconds, 1),
        "chunks_per_second": round(run.processed_chunks / seconds, 1),
        "pairs": run.pair_count,
        "batches": batches,
        "sql_function_calls": calls,
        "transactions": xacts,
        "sql_calls_per_batch": round(calls / batches, 3),
        "transactions_per_batch": round(xacts / batches, 3),
        "executions": len(chain),
        "history_events": events,
        "estimate": run.estimate,
    }


def read_pairs(store: PostgresStore, run_id: UUID, unit: int = 100_000) -> dict[str, Any]:
    """Every pair by keyset, 1,000 a page, timed per `unit` pairs read."""
    service = TrainingService(store, lambda *_: None)  # type: ignore[arg-type]
    times: list[float] = []
    count = 0
    started = mark = time.perf_counter()
    for page in service.pair_pages(run_id, page_size=1000):
        count += len(page)
        if count // unit > len(times):
            now = time.perf_counter()
            times.append(now - mark)
            mark = now
    total = time.perf_counter() - started
    return {
        "pairs": count,
        "seconds": round(total, 2),
        "seconds_per_100k": round(total / count * 100_000, 2) if count else None,
        "seconds_per_unit": [round(t, 3) for t in times],
        "unit": unit,
        "last_over_first": round(times[-1] / times[0], 2) if len(times) > 1 else None,
    }


def train_in_subprocess(
    url: str, run_id: UUID, dataset: str, artifacts: str, seconds: float
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--train", url, str(run_id), dataset, artifacts]
    command.append(str(seconds))
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_only(url: str, run_id: str, dataset: str, artifacts: str, seconds: str) -> None:
    """The training step alone (this process's peak RSS is the step's): the query adapter as
    a streamed job with the cheap embedder, `seconds` of work per invocation, submit then
    checks until it completes, as the state machine's loop calls them."""
    from deepmem.adapters.trainers.adapter_job import StreamConfig
    from deepmem.adapters.trainers.artifacts import LocalArtifactStore
    from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer

    pool = connect_pool(url, max_size=2)
    store = PostgresStore(pool)
    run = UUID(run_id)
    trainer = QueryAdapterTrainer(
        dataset,
        HashingEmbedder(16),
        LocalArtifactStore(artifacts),
        pairs=lambda after, limit: store.pairs_after(run, after=after, limit=limit),
        stream_above=0,
        seconds_per_call=float(seconds),
        stream_config=StreamConfig(max_epochs=2),
    )
    service = TrainingService(store, lambda *_: trainer)
    started = time.perf_counter()
    step = service.submit(run)
    invocations = 1
    while step.state.value != "completed":
        step = service.check(run, step.job_id, poll=step.poll)
        invocations += 1
    seconds_taken = time.perf_counter() - started
    peak_mib = peak_rss_mib()  # VmHWM: this process's own peak, as the test measures it
    metrics = store.get_run(run).metrics
    store.close()
    out = {
        "state": step.state.value,
        "seconds": round(seconds_taken, 1),
        "invocations": invocations,
        "seconds_per_invocation_budget": float(seconds),
        "pairs": metrics.get("pairs"),
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_source": "VmHWM",
    }
    print(json.dumps(out))


def measure(
    args: argparse.Namespace, folder: Path, server: TestServer, results: dict[str, Any]
) -> None:
    """Build, generate, read and train; each phase's figures into `results` as it ends."""
    started = time.perf_counter()
    dataset = str(folder / "dataset")
    built = build_dataset(
        write_corpus(folder / "corpus", args.chunks), dataset, HashingEmbedder(16)
    )
    build_seconds = time.perf_counter() - started
    results["build"] = {
        "chunks": built,
        "seconds": round(build_seconds, 1),
        "chunks_per_second": round(built / build_seconds, 1),
    }
    print("built", results["build"], flush=True)
    name, url = server.fresh_database()
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"alter database \"{name}\" set track_functions = 'all'")
    pool = connect_pool(url, max_size=16)
    store = PostgresStore(pool)
    store.update_settings(
        SettingsUpdate(
            lanes=args.lanes,
            batch_size=args.batch_size,
            questions_per_chunk=args.questions,
            concurrency=64,
        ).apply_to(store.get_settings())
    )
    run, results["generation"] = generate(args, store, url, dataset)
    print("generation", results["generation"], flush=True)
    results["pair_reads"] = read_pairs(store, run.id, min(100_000, max(1, run.pair_count // 4)))
    print("pair reads", results["pair_reads"], flush=True)
    if not args.no_train:
        store.transition(run.id, RunStatus.GENERATED, RunStatus.TRAINING)
    store.close()
    if not args.no_train:
        results["training"] = train_in_subprocess(
            url, run.id, dataset, str(folder / "art"), args.train_seconds
        )
        print("training", results["training"], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--execution-seconds", type=float, default=10.0)
    parser.add_argument("--function-seconds", type=float, default=22.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--train-seconds", type=float, default=20.0)
    parser.add_argument(
        "--train", nargs=5, metavar=("URL", "RUN", "DATASET", "ARTIFACTS", "SECONDS")
    )
    args = parser.parse_args()
    if args.train:
        train_only(*args.train)
        return
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "settings": {k: getattr(args, k) for k in ("chunks", "lanes", "batch_size", "questions")},
    }
    with tempfile.TemporaryDirectory() as tmp, test_server() as server:
        measure(args, Path(tmp), server, results)
    results["load_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
