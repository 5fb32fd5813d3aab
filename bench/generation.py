"""Generation throughput against a rate-limited OpenAI-compatible server on loopback.

    uv run --no-dev --group bench python bench/generation.py [--rpm 4800] [--chunks 2000]

(`bench` is a dependency group resolved apart from `dev`, because LlamaIndex needs openai<3;
hence `--no-dev`. No network is used except loopback.)

In one run, against one server process (tests/fakes/llm_server.py, 300 ms per answer, a cap of
`--rpm` requests per minute enforced as `rpm * window / 60` requests in any `--window` (1 s)
sliding window, answering 429 with Retry-After above it, in whole seconds rounded up):

1. deepmem: the real GenerationService (plan, every lane, finish) with the
   OpenAIQuestionGenerator, on a local DeepLake dataset of `--chunks` chunks and the embedded
   PostgreSQL with the real schema, at `--concurrency` requests in flight per lane. Repeated at
   each `--also-rpm` cap (fresh database each time).
2. a plain sequential loop over the same generator, one chunk at a time, on `--sample` chunks;
3. LlamaIndex's `generate_qa_embedding_pairs` (llama-index-finetuning) with its OpenAI LLM
   pointed at the same server, on the same `--sample` chunks.

Prints a table and writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

# Offline, whatever the libraries would like: DeepLake's usage reports, Hugging Face and
# tiktoken downloads, tqdm bars in the output.
for _name, _value in {
    "BUGGER_OFF": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}.items():
    os.environ.setdefault(_name, _value)

from deepmem.config import Config  # noqa: E402
from deepmem.domain.chunks import Chunk, Lane  # noqa: E402
from deepmem.domain.models import Settings  # noqa: E402
from deepmem.domain.status import RunStatus  # noqa: E402
from deepmem.wiring import build_run_store, chunk_source_for, generator_for  # noqa: E402

from tests.db import TestServer, test_server  # noqa: E402
from tests.integration.generation_support import build_test_dataset, service  # noqa: E402

# ---- the loopback server, as its own process --------------------------------------------------


class LLMServerProcess:
    """tests/fakes/llm_server.py run with `python -m`, driven over HTTP (/_faults, /_stats)."""

    def __init__(self, latency: float, rpm: int, window: float = 1.0) -> None:
        self.window = window
        per_window = max(1, round(rpm * window / 60))
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.llm_server",
                "--port",
                "0",
                "--latency",
                str(latency),
                "--rpm",
                str(per_window),
                "--rpm-window",
                str(window),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"LLM server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        self._admin = self.base_url.removesuffix("/v1")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._admin + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def configure(self, **faults: Any) -> None:
        self._call("POST", "/_faults", faults)

    def set_rpm(self, rpm: int) -> None:
        self.configure(rpm=max(1, round(rpm * self.window / 60)), rpm_window=self.window)

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def stats(self) -> dict[str, Any]:
        stats = self._call("GET", "/_stats")
        return {k: v for k, v in stats.items() if k not in ("per_chunk", "answered_per_chunk")}

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def _server_counts(stats: dict[str, Any]) -> dict[str, Any]:
    by_status = stats["by_status"]
    return {
        "server_chat_calls": stats["chat"],
        "server_200": by_status.get("200", 0),
        "server_429": by_status.get("429", 0),
        "server_other_errors": sum(v for k, v in by_status.items() if k not in ("200", "429")),
        "server_max_in_flight": stats["max_in_flight"],
    }


# ---- 1. deepmem's generation path ---------------------------------------------------------------


def run_deepmem(
    pg: TestServer,
    llm: LLMServerProcess,
    dataset: str,
    *,
    rpm: int,
    concurrency: int,
    lanes: int,
    batch_size: int,
    questions: int,
) -> dict[str, Any]:
    name, url = pg.fresh_database()
    store = build_run_store(Config(DATABASE_URL=url))
    try:
        store.update_settings(
            Settings(
                questions_per_chunk=questions,
                concurrency=concurrency,
                lanes=lanes,
                batch_size=batch_size,
            )
        )
        run = store.create_run(dataset, None)
        svc = service(url, llm.base_url)
        llm.set_rpm(rpm)
        llm.reset()
        started = time.monotonic()
        plan = svc.plan(run.id)

        def walk(lane: Lane) -> tuple[int, int, int]:
            calls = retries = batches = 0
            while True:
                progress = svc.batch(run.id, lane)
                calls += progress.llm_calls
                retries += progress.retries
                batches += 1
                lane = progress.lane
                if progress.done:
                    return calls, retries, batches

        # The state machine's Map runs lanes in parallel: so do threads here.
        with ThreadPoolExecutor(max_workers=len(plan.lanes)) as pool:
            walked = list(pool.map(walk, plan.lanes))
        svc.finish(run.id)
        wall = time.monotonic() - started
        after = store.get_run(run.id)
        assert after.status == RunStatus.GENERATED, after.status
        server = _server_counts(llm.stats())
        processed = after.processed_chunks
        return {
            "name": "deepmem GenerationService",
            "rpm_cap": rpm,
            "chunks": processed,
            "pairs": after.pair_count,
            "llm_calls": sum(w[0] for w in walked),
            "retries": sum(w[1] for w in walked),
            "invocations": sum(w[2] for w in walked),
            "wall_s": round(wall, 2),
            "chunks_per_s": round(processed / wall, 2),
            "settings": {
                "lanes": lanes,
                "concurrency_per_lane": concurrency,
                "batch_size": batch_size,
                "questions_per_chunk": questions,
            },
            **server,
        }
    finally:
        store.close()
        pg.drop_database(name)


# ---- 2. a plain sequential loop over the same generator -----------------------------------------


def run_sequential(llm: LLMServerProcess, chunks: list[Chunk], questions: int) -> dict[str, Any]:
    config = Config.model_validate({"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test"})
    settings = Settings(questions_per_chunk=questions)
    llm.reset()

    async def loop() -> tuple[int, int, int, float]:
        generator = generator_for(config)(settings)
        started = time.monotonic()
        calls = retries = pairs = 0
        for chunk in chunks:
            result = await generator.generate(chunk, questions)
            calls += result.llm_calls
            retries += result.retries
            pairs += len(result.questions)
        return calls, retries, pairs, time.monotonic() - started

    calls, retries, pairs, wall = asyncio.run(loop())
    return {
        "name": "sequential loop, same generator",
        "chunks": len(chunks),
        "pairs": pairs,
        "llm_calls": calls,
        "retries": retries,
        "wall_s": round(wall, 2),
        "chunks_per_s": round(len(chunks) / wall, 2),
        **_server_counts(llm.stats()),
    }


# ---- 3. LlamaIndex's generator -------------------------------------------------------------------


def run_llamaindex(llm: LLMServerProcess, chunks: list[Chunk], questions: int) -> dict[str, Any]:
    result: dict[str, Any] = {"name": "LlamaIndex generate_qa_embedding_pairs"}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from llama_index.core.schema import TextNode
            from llama_index.finetuning import generate_qa_embedding_pairs
            from llama_index.llms.openai import OpenAI
        result["version"] = _version("llama-index-finetuning")
        result["llm_version"] = _version("llama-index-llms-openai")
    except Exception as exc:  # an honest "could not run", never a made-up number
        result["error"] = f"import failed: {type(exc).__name__}: {exc}"
        return result
    # It parses the answer line by line (a number prefix stripped): give it lines, as a model
    # asked its prompt would. deepmem asks for JSON and gets JSON. Same latency, same cap.
    llm.configure(content_mode="lines")
    llm.reset()
    nodes = [TextNode(id_=c.id, text=c.text) for c in chunks]
    model = OpenAI(
        model="gpt-4o-mini", api_base=llm.base_url, api_key="test", max_retries=3, timeout=60
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            started = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = generate_qa_embedding_pairs(
                    nodes,
                    model,
                    num_questions_per_chunk=questions,
                    output_path=str(Path(tmp) / "qa.json"),
                    verbose=False,
                )
            wall = time.monotonic() - started
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc(limit=5)
            return result
        finally:
            llm.configure(content_mode="json")
    server = _server_counts(llm.stats())
    done = len(dataset.corpus)
    result.update(
        {
            "chunks": done,
            "pairs": len(dataset.queries),
            "llm_calls": server["server_chat_calls"],
            "retries": server["server_chat_calls"] - server["server_200"],
            "wall_s": round(wall, 2),
            "chunks_per_s": round(done / wall, 2),
            **server,
        }
    )
    return result


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


# ---- report ------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], cap_per_s: float, reference: float) -> str:
    lines = [
        "| path | chunks | wall s | chunks/s | LLM calls | 429s | x sequential | of cap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = row["name"]
        if "rpm_cap" in row:
            label += f" ({row['rpm_cap']:,} rpm cap)"
        if "error" in row:
            lines.append(f"| {label} | - | - | did not run: {row['error'][:80]} | - | - | - | - |")
            continue
        rate = row["chunks_per_s"]
        cap = row["rpm_cap"] / 60 if "rpm_cap" in row else cap_per_s
        lines.append(
            f"| {label} | {row['chunks']:,} | {row['wall_s']:.1f} | {rate:.2f} | "
            f"{row['llm_calls']:,} | {row['server_429']:,} | {rate / reference:.1f}x | "
            f"{rate / cap:.0%} |"
        )
    return "\n".join(lines)


def _sequential_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["name"].startswith("sequential"))


def ratios_of(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """deepmem's main run against the cap, the sequential loop and LlamaIndex."""
    sequential = _sequential_row(rows)
    llamaindex = next((r for r in rows if r["name"].startswith("LlamaIndex")), None)
    cap_per_s = args.rpm / 60
    ours = rows[0]["chunks_per_s"]
    return {
        "deepmem_vs_cap": round(ours / cap_per_s, 3),
        "deepmem_vs_sequential": round(ours / sequential["chunks_per_s"], 1),
        "deepmem_vs_llamaindex": (
            round(ours / llamaindex["chunks_per_s"], 1)
            if llamaindex and "chunks_per_s" in llamaindex
            else None
        ),
        "latency_bound_ceiling_per_s": round(args.concurrency * args.lanes / args.latency, 1),
    }


def targets_of(ratios: dict[str, Any]) -> dict[str, bool]:
    return {
        "within_90pct_of_cap": ratios["deepmem_vs_cap"] >= 0.9,
        "at_least_20x_sequential": ratios["deepmem_vs_sequential"] >= 20,
    }


def print_results(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    ratios: dict[str, Any],
    targets: dict[str, bool],
) -> None:
    cap_per_s = args.rpm / 60
    print()
    print(
        f"server: {args.latency * 1000:.0f} ms per answer, cap {args.rpm:,} rpm "
        f"({cap_per_s * args.window:g} requests in any {args.window:g} s window), "
        "429 + Retry-After above it"
    )
    print(table(rows, cap_per_s, _sequential_row(rows)["chunks_per_s"]))
    print()
    for key, value in ratios.items():
        print(f"{key}: {value}")
    for key, value in targets.items():
        print(f"target {key}: {'met' if value else 'NOT met'}")


def write_results(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    ratios: dict[str, Any],
    targets: dict[str, bool],
) -> Path:
    """bench/results/generation.json: the arguments, the machine, every row, the ratios."""
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "server": {"latency_s": args.latency, "rpm_cap": args.rpm, "window_s": args.window},
        "rows": rows,
        "ratios": ratios,
        "targets": targets,
    }
    path = RESULTS / "generation.json"
    path.write_text(json.dumps(out, indent=2))
    return path


# ---- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=100, help="chunks for the slow peers")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rpm", type=int, default=4800, help="the server's cap (main run)")
    parser.add_argument(
        "--also-rpm", type=int, nargs="*", default=[2400], help="deepmem again at these caps"
    )
    parser.add_argument(
        "--window", type=float, default=1.0, help="seconds of the server's sliding window"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lanes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--skip-llamaindex", action="store_true")
    return parser.parse_args(argv)


def prepare_dataset(args: argparse.Namespace) -> tuple[str, list[Chunk]]:
    """A local DeepLake dataset of `--chunks` chunks, and its first `--sample` chunks."""
    work = Path(tempfile.mkdtemp(prefix="deepmem-bench-gen-"))
    print(f"building a local DeepLake dataset of {args.chunks} chunks ...", flush=True)
    started = time.monotonic()
    dataset = build_test_dataset(work, args.chunks)
    print(f"  built in {time.monotonic() - started:.1f} s", flush=True)
    sample = chunk_source_for(Config.model_validate({}))(dataset).read(0, args.sample)
    return dataset, sample


def run_deepmem_at_caps(
    args: argparse.Namespace, llm: LLMServerProcess, dataset: str
) -> list[dict[str, Any]]:
    """deepmem's run at `--rpm`, then at each `--also-rpm`, each on a fresh database."""
    rows: list[dict[str, Any]] = []
    with test_server() as pg:
        for rpm in [args.rpm, *args.also_rpm]:
            print(f"deepmem, {args.chunks} chunks, cap {rpm} rpm ...", flush=True)
            rows.append(
                run_deepmem(
                    pg,
                    llm,
                    dataset,
                    rpm=rpm,
                    concurrency=args.concurrency,
                    lanes=args.lanes,
                    batch_size=args.batch_size,
                    questions=args.questions,
                )
            )
            print(f"  {rows[-1]['chunks_per_s']} chunks/s", flush=True)
    return rows


def run_peers(
    args: argparse.Namespace, llm: LLMServerProcess, sample: list[Chunk]
) -> list[dict[str, Any]]:
    """The sequential loop and (unless skipped) LlamaIndex, on the sample, at `--rpm`."""
    rows: list[dict[str, Any]] = []
    llm.set_rpm(args.rpm)
    print(f"sequential loop, {len(sample)} chunks ...", flush=True)
    rows.append(run_sequential(llm, sample, args.questions))
    print(f"  {rows[-1]['chunks_per_s']} chunks/s", flush=True)
    if not args.skip_llamaindex:
        print(f"LlamaIndex generate_qa_embedding_pairs, {len(sample)} chunks ...", flush=True)
        rows.append(run_llamaindex(llm, sample, args.questions))
        print(f"  {rows[-1].get('chunks_per_s', rows[-1].get('error'))}", flush=True)
    return rows


def run_all(args: argparse.Namespace, dataset: str, sample: list[Chunk]) -> list[dict[str, Any]]:
    """Every path against one server process; a row each."""
    llm = LLMServerProcess(args.latency, args.rpm, args.window)
    try:
        rows = run_deepmem_at_caps(args, llm, dataset)
        return rows + run_peers(args, llm, sample)
    finally:
        llm.stop()


def main() -> None:
    args = parse_args()
    # Retries are counted, not logged one by one; HTTP request lines are noise here.
    for noisy in ("httpx", "openai", "deepmem.adapters.generators.openai"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    RESULTS.mkdir(parents=True, exist_ok=True)
    dataset, sample = prepare_dataset(args)
    rows = run_all(args, dataset, sample)

    ratios = ratios_of(args, rows)
    targets = targets_of(ratios)
    print_results(args, rows, ratios, targets)
    path = write_results(args, rows, ratios, targets)
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
