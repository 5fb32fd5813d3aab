"""`deepmem demo`: the main job end to end on one machine, offline.

The same state machine definition, handlers, SQL and services as in the cloud: the embedded
PostgreSQL, a local DeepLake dataset built from a corpus, the offline generator and embedder,
the ASL run by moto, the query adapter. With `--fail-at`, a fault is injected where a real
one would happen (the question generator in the middle of generation; the training job), so
the run goes through the state machine's Catch, is left in its phase's failed status, blocks
a new generation, and is proceeded to completion.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from deepmem.cli.guard_view import guard_rows
from deepmem.cli.runtime import ProcessLock, Runtime
from deepmem.config import load_config
from deepmem.domain.chunks import Chunk
from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import (
    BlockingRunExistsError,
    DeepmemError,
    GenerationError,
    way_out_of,
)
from deepmem.domain.models import Settings, SettingsUpdate, TrainingRun
from deepmem.domain.status import PROCEED_TARGETS, Phase, RunStatus, done_status, failed_status
from deepmem.local.functions import task_handlers
from deepmem.ports import (
    UNPACED,
    GeneratedQuestions,
    JobState,
    JobStatus,
    Pacer,
    QuestionGenerator,
    Trainer,
)

DEMO_SETTINGS = SettingsUpdate(
    questions_per_chunk=3, batch_size=20, concurrency=8, lanes=2, max_chunks_per_run=None
)
INJECTED = "injected fault"


class CorpusNotFoundError(DeepmemError, ValueError):
    """`--corpus` names no folder: bad input, exit code 2."""


class CorpusTooSmallError(DeepmemError, ValueError):
    """`--fail-at generating` on a corpus with too few chunks to fail halfway."""


#: `--fail-at generating` fails after a third of the chunks: fewer than this cannot.
MIN_CHUNKS_TO_FAIL_HALFWAY = 3


class DemoFault:
    """Where the demo breaks things, armed for the first attempt only."""

    def __init__(self, phase: Phase | None, after_chunks: int) -> None:
        self.phase = phase
        self.after_chunks = after_chunks
        self.generated = 0
        self.armed = phase is not None

    def disarm(self) -> None:
        self.armed = False


class FaultyGenerator:
    """Generates until `after_chunks` chunks are done, then fails like a revoked API key."""

    def __init__(self, inner: QuestionGenerator, fault: DemoFault) -> None:
        self._inner = inner
        self._fault = fault

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        fault = self._fault
        if fault.armed and fault.phase is Phase.GENERATING:
            if fault.generated >= fault.after_chunks:
                raise GenerationError(f"{INJECTED}: the LLM endpoint refused the request (401)")
            fault.generated += 1
        return await self._inner.generate(chunk, count, pacer)


class FaultyTrainer:
    """Submits for real; the job then reports failure, as a crashed training job would."""

    def __init__(self, inner: Trainer, fault: DemoFault) -> None:
        self._inner = inner
        self._fault = fault

    def submit(self, run: TrainingRun, pairs: Iterable[Any]) -> str:
        return self._inner.submit(run, pairs)

    def check(self, job_id: str) -> JobStatus:
        if self._fault.armed and self._fault.phase is Phase.TRAINING:
            return JobStatus(state=JobState.FAILED, error=f"{INJECTED}: the training job crashed")
        return self._inner.check(job_id)


def demo_handlers(fault: DemoFault) -> Any:
    """The state machine's functions: the real handler code over services whose generator
    and trainer carry the demo's fault."""

    def build(runtime: Runtime) -> Mapping[str, Any]:
        from deepmem import wiring

        config = runtime.config
        generation = wiring.build_generation_service(
            config, runtime.store, wrap_generator=lambda inner: FaultyGenerator(inner, fault)
        )
        training = wiring.build_training_service(
            config, runtime.store, wrap_trainer=lambda inner: FaultyTrainer(inner, fault)
        )
        return task_handlers(generation, training)

    return build


@dataclass
class DemoSummary:
    run_id: str = ""
    status: str = ""
    dataset: str = ""
    chunks: int = 0
    processed_chunks: int = 0
    pairs: int = 0
    generator_calls: int = 0
    attempts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    recall_before: dict[str, float] = field(default_factory=dict)
    recall_after: dict[str, float] = field(default_factory=dict)
    applied: bool | None = None
    recovered_from: list[str] = field(default_factory=list)


def build_demo_dataset(
    console: Console, runtime: Runtime, corpus: Path | None, limit: int | None
) -> tuple[str, int]:
    from deepmem import wiring
    from deepmem.local.dataset_builder import ensure_dataset
    from deepmem.local.stdlib_corpus import stdlib_corpus

    dataset = runtime.config.dataset_path
    if is_cloud_dataset(dataset):
        raise DeepmemError(
            f"the demo builds a local dataset, but DEEPMEM_DATASET is {dataset}: unset it"
        )
    if corpus is None:
        corpus = stdlib_corpus(runtime.config.home / "corpus", limit)
        console.print(f"corpus: docstrings of the Python standard library ({corpus})")
    elif not corpus.is_dir():
        raise CorpusNotFoundError(f"corpus folder {corpus} does not exist")
    else:
        console.print(f"corpus: {corpus}")
    with _progress(console) as progress:
        task = progress.add_task("embedding chunks", total=None, detail="")

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        embedder = wiring.offline_embedder()
        built = ensure_dataset(corpus, dataset, embedder, limit=limit, progress=advance)
    how = "reused: same corpus, chunking and model" if built.reused else "built and embedded"
    console.print(f"dataset: {dataset} ({built.chunks} chunks, {how})")
    return dataset, built.chunks


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )


def follow(console: Console, runtime: Runtime, run: TrainingRun, phase: Phase) -> TrainingRun:
    """Wait for the phase's execution, with live progress from the run's own counters."""
    started = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task(phase.value, total=None, detail="")

        def tick() -> None:
            now = runtime.store.get_run(run.id)
            rate = now.processed_chunks / max(time.monotonic() - started, 1e-6)
            if phase is Phase.GENERATING:
                progress.update(
                    task,
                    completed=now.processed_chunks,
                    total=now.total_chunks or None,
                    detail=f"{now.pair_count} pairs, {rate:.1f} chunks/s",
                )
            else:
                done = now.status is RunStatus.COMPLETED
                progress.update(task, completed=1 if done else 0, total=1, detail=now.status)

        runtime.wait(run.id, phase, run.attempt, on_tick=tick)
    return runtime.store.get_run(run.id)


def show_failure(console: Console, runtime: Runtime, run: TrainingRun) -> None:
    console.print(
        f"[red]run {run.id} is {run.status.value}[/red] (attempt {run.attempt}): "
        f"{run.error_message}"
    )
    try:
        runtime.runs().start_generation(None)
    except BlockingRunExistsError as exc:
        console.print(
            f"[yellow]POST /generate → 409[/yellow] {exc} "
            f"(blocking_run_id={exc.blocking_run_id}, "
            f"blocking_run_status={exc.blocking_run_status})"
        )
    else:  # pragma: no cover - the database guarantees the refusal
        raise DeepmemError("a new generation was accepted while a run is unfinished")


def run_phase(
    console: Console,
    runtime: Runtime,
    run: TrainingRun,
    phase: Phase,
    *,
    fault: DemoFault,
    summary: DemoSummary,
) -> TrainingRun:
    """Follow a started phase; on its failure show the recovery story and proceed."""
    started = time.monotonic()
    run = follow(console, runtime, run, phase)
    if run.status is failed_status(phase):
        show_failure(console, runtime, run)
        if not (fault.armed and fault.phase is phase):
            raise DeepmemError(
                f"{phase.value} failed: {run.error_message}; {way_out_of(run.id, run.status)}"
            )
        summary.recovered_from.append(f"{run.status.value}: {run.error_message}")
        fault.disarm()
        console.print(f"[green]POST /proceed[/green] {run.id}: resuming {phase.value}")
        run = runtime.runs().proceed(run.id).run
        run = follow(console, runtime, run, phase)
        if run.status is not done_status(phase):
            raise DeepmemError(
                f"{phase.value} failed again: {run.error_message}; {way_out_of(run.id, run.status)}"
            )
    summary.seconds[phase.value] = round(time.monotonic() - started, 2)
    return run


def resume_unfinished(console: Console, runtime: Runtime) -> TrainingRun | None:
    """A run left by an earlier demo: an active one whose process died is failed first
    (what the EventBridge safety net does in AWS), then everything resumes from its status."""
    run = runtime.store.find_blocking_run()
    if run is None:
        return None
    run = runtime.runs().fail_if_orphaned(run.id)
    # Never resume over another dataset: the demo may just have rebuilt it from another corpus.
    runtime.runs().check_source(run)
    console.print(f"[yellow]found unfinished run {run.id} ({run.status.value}): resuming it")
    return run


def run_demo(
    console: Console,
    *,
    corpus: Path | None,
    limit: int | None,
    fail_at: Phase | None,
    summary_path: Path | None = None,
) -> DemoSummary:
    # The demo is offline by definition: it chooses the offline generator explicitly (an LLM
    # is never chosen, or dropped, silently).
    os.environ["DEEPMEM_GENERATOR"] = "offline"
    load_config.cache_clear()
    fault = DemoFault(fail_at, after_chunks=max(1, (limit or 100) // 3))
    summary = DemoSummary()
    started = time.monotonic()
    with (
        ProcessLock(load_config().home.resolve() / "demo.lock", "a deepmem demo"),
        Runtime(time_scale=0.02, handlers=demo_handlers(fault)) as runtime,
    ):
        summary.seconds["database"] = round(time.monotonic() - started, 2)
        t0 = time.monotonic()
        dataset, chunks = build_demo_dataset(console, runtime, corpus, limit)
        summary.seconds["dataset"] = round(time.monotonic() - t0, 2)
        summary.dataset, summary.chunks = dataset, chunks
        fault.after_chunks = _fault_point(fail_at, chunks)
        console.print("generator: offline (the demo's choice, DEEPMEM_GENERATOR=offline)")
        runs = runtime.runs()

        run = resume_unfinished(console, runtime)
        if run is None:
            runs.update_settings(DEMO_SETTINGS)
            run = runs.start_generation(None).run
            console.print(f"[green]POST /generate[/green] run {run.id} started")
        elif run.status in PROCEED_TARGETS:
            fault.disarm()
            run = runs.proceed(run.id).run
        if run.status is RunStatus.GENERATING:
            run = run_phase(console, runtime, run, Phase.GENERATING, fault=fault, summary=summary)
        if run.status is not RunStatus.GENERATED and run.status is not RunStatus.TRAINING:
            raise DeepmemError(f"generation ended in {run.status.value}: {run.error_message}")

        show_pairs(console, runtime, run)
        if run.status is RunStatus.GENERATED:
            run = runs.start_training(run.id).run
            console.print(f"[green]POST /train[/green] run {run.id}")
        run = run_phase(console, runtime, run, Phase.TRAINING, fault=fault, summary=summary)

        summary.run_id = str(run.id)
        summary.status = run.status.value
        summary.processed_chunks = run.processed_chunks
        summary.pairs = run.pair_count
        summary.generator_calls = run.llm_calls
        summary.attempts = run.attempt
        summary.recall_before = dict(run.metrics.get("recall_before", {}))
        summary.recall_after = dict(run.metrics.get("recall_after", {}))
        summary.applied = run.metrics.get("applied")
        summary.seconds["total"] = round(time.monotonic() - started, 2)
        print_summary(console, runtime, run, summary)
    if summary_path is not None:
        summary_path.write_text(json.dumps(asdict(summary), indent=2))
    return summary


def _fault_point(fail_at: Phase | None, chunks: int) -> int:
    """After how many chunks `--fail-at generating` fails: a third of the dataset, so the
    failure lands mid-generation; refused when the dataset is too small for that."""
    if fail_at is Phase.GENERATING and chunks < MIN_CHUNKS_TO_FAIL_HALFWAY:
        raise CorpusTooSmallError(
            f"--fail-at generating needs at least {MIN_CHUNKS_TO_FAIL_HALFWAY} chunks to fail "
            f"halfway; the dataset has {chunks}: use a larger corpus (or a larger --limit)"
        )
    return max(1, chunks // 3)


def show_pairs(console: Console, runtime: Runtime, run: TrainingRun, count: int = 6) -> None:
    table = Table(title=f"a sample of {run.pair_count} pairs (GET /runs/{{id}}/pairs)")
    table.add_column("chunk", style="dim", max_width=14, no_wrap=True)
    table.add_column("question")
    pairs = runtime.store.list_pairs(run.id, limit=200)
    step = max(1, len(pairs) // count)
    for pair in pairs[::step][:count]:
        table.add_row(pair.chunk_id[:12], pair.question)
    console.print(table)


def print_summary(
    console: Console, runtime: Runtime, run: TrainingRun, summary: DemoSummary
) -> None:
    settings: Settings = runtime.store.get_settings()
    table = Table(title=f"deepmem demo: run {run.id}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("status", f"[green]{run.status.value}[/green]")
    table.add_row("dataset", f"{summary.dataset} ({summary.chunks} chunks)")
    table.add_row("chunks processed", f"{run.processed_chunks} / {run.total_chunks}")
    table.add_row("pairs", str(run.pair_count))
    table.add_row("generator calls (offline)", str(run.llm_calls))
    table.add_row("questions per chunk", str(settings.questions_per_chunk))
    table.add_row("attempts", str(run.attempt))
    for step in summary.recovered_from:
        table.add_row("recovered from", step)
    for phase, seconds in summary.seconds.items():
        table.add_row(f"time: {phase}", f"{seconds:.1f} s")
    for label, value in guard_rows(run.metrics):
        table.add_row(label, value)
    console.print(table)
