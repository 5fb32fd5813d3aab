"""The `deepmem` command line. Every command runs the same services as the API against the
configured store and workflow: embedded by default; `DATABASE_URL`/`SUPABASE_URL`,
`OPENAI_API_KEY`/`OPENAI_BASE_URL`, a `hub://` dataset and `STATE_MACHINE_ARN` switch each
part to the real one. Errors are printed in one line with an exit code, never a traceback."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table
from typer._click import exceptions as click  # typer vendors click; its errors are these

from deepmem import __version__
from deepmem.api.models import OFFSET_MAX, PAGE_LIMIT_MAX
from deepmem.cli.exit_codes import EXIT_ERROR, EXIT_USAGE
from deepmem.cli.failures import clean_errors, error
from deepmem.cli.guard_view import applied_label
from deepmem.domain.models import TrainingRun
from deepmem.domain.status import Phase, done_status, phase_of

app = typer.Typer(
    name="deepmem",
    help="Synthetic question→chunk pairs from a DeepLake dataset, and a model trained on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()


class FailAt(StrEnum):
    generating = "generating"
    training = "training"


def _run_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        error(f"{value!r} is not a run id (a UUID)")
        raise typer.Exit(EXIT_USAGE) from None


def _runtime() -> Any:
    from deepmem.cli.runtime import Runtime

    return Runtime()


def _run_table(runs: list[TrainingRun]) -> Table:
    table = Table()
    columns = ["id", "status", "progress", "pairs", "rejected", "generator", "attempt"]
    columns += ["applied", "error"]
    for column in (*columns, "created"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            run.status.value,
            f"{run.processed_chunks}/{run.total_chunks}",
            str(run.pair_count),
            str(run.rejected_chunks),
            " ".join(filter(None, (run.generator, run.llm_model))),
            str(run.attempt),
            applied_label(run.metrics),
            (run.error_message or "")[:60],
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _started(runtime: Any, run: TrainingRun, phase: Phase, wait: bool) -> None:
    """Locally the execution lives in this process, so the command waits for it."""
    console.print(f"run {run.id}: {phase.value} (attempt {run.attempt}) started")
    if not (runtime.is_local or wait):
        return
    from deepmem.cli.demo import follow

    final = follow(console, runtime, run, phase)
    console.print(f"run {final.id}: {final.status.value} {final.error_message or ''}")
    if final.status is not done_status(phase):
        raise typer.Exit(EXIT_ERROR)


@app.command()
def demo(
    corpus: Annotated[
        Path | None, typer.Option(help="folder of .md/.txt/.jsonl files (default: stdlib docs)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="chunks to use from the corpus")] = 150,
    fail_at: Annotated[
        FailAt | None, typer.Option(help="inject a failure in this phase, then recover")
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option(help="also write the summary as JSON here")
    ] = None,
) -> None:
    """Run the main job end to end on the embedded default: build a dataset, generate pairs
    through the local state machine, train the query adapter, report recall."""
    from deepmem.cli.demo import run_demo

    with clean_errors():
        summary = run_demo(
            console,
            corpus=corpus,
            limit=limit,
            fail_at=Phase(fail_at.value) if fail_at else None,
            summary_path=summary_json,
        )
    if summary.status != "completed":
        raise typer.Exit(EXIT_ERROR)


@app.command()
def generate(
    wait: Annotated[bool, typer.Option(help="wait for the execution (always, locally)")] = False,
) -> None:
    """Start a generation (POST /generate)."""
    with clean_errors(), _runtime() as runtime:
        started = runtime.runs().start_generation(None)
        _started(runtime, started.run, Phase.GENERATING, wait)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(min=1, max=PAGE_LIMIT_MAX)] = 20,
    offset: Annotated[int, typer.Option(min=0, max=OFFSET_MAX)] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List runs, newest first (GET /runs)."""
    with clean_errors(), _runtime() as runtime:
        found = runtime.runs().list_runs(limit=limit, offset=offset)
        if as_json:
            _print_json([r.model_dump(mode="json") for r in found])
        else:
            console.print(_run_table(found))


@app.command()
def show(run: str) -> None:
    """One run (GET /runs/{id})."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        _print_json(runtime.runs().get_run(run_id).model_dump(mode="json"))


@app.command()
def pairs(
    run: str,
    limit: Annotated[int, typer.Option(min=1, max=PAGE_LIMIT_MAX)] = 20,
    offset: Annotated[int, typer.Option(min=0, max=OFFSET_MAX)] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A page of a run's pairs, for review (GET /runs/{id}/pairs)."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        page = runtime.runs().list_pairs(run_id, limit=limit, offset=offset)
        if as_json:
            _print_json([p.model_dump(mode="json") for p in page])
            return
        table = Table()
        table.add_column("chunk")
        table.add_column("question")
        for pair in page:
            table.add_row(pair.chunk_id, pair.question)
        console.print(table)


@app.command()
def train(
    run: str, wait: Annotated[bool, typer.Option(help="wait (always, locally)")] = False
) -> None:
    """Train on a generated run (POST /train)."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        started = runtime.runs().start_training(run_id)
        _started(runtime, started.run, Phase.TRAINING, wait)


@app.command()
def proceed(
    run: str, wait: Annotated[bool, typer.Option(help="wait (always, locally)")] = False
) -> None:
    """Resume a failed run in the phase it failed in (POST /proceed)."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        started = runtime.runs().proceed(run_id)
        phase = phase_of(started.run.status)
        assert phase is not None
        _started(runtime, started.run, phase, wait)


@app.command()
def delete(run: str) -> None:
    """Delete a failed or generated run and its pairs (DELETE /runs/{id})."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        outcome = runtime.runs().delete(run_id)
        console.print(f"deleted run {outcome.training_run_id} and {outcome.deleted_pairs} pairs")


@app.command()
def cancel(run: str) -> None:
    """Stop an active run; it ends in its phase's failed status (POST /runs/{id}/cancel).

    Locally, an active run whose process ended has no execution left: it is marked failed."""
    run_id = _run_id(run)
    with clean_errors(), _runtime() as runtime:
        stopped = runtime.runs().cancel(run_id).run
        console.print(f"run {stopped.id}: {stopped.status.value} ({stopped.error_message})")


@app.command()
def settings(
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value, repeatable (PUT /settings)")
    ] = None,
) -> None:
    """Show the settings (GET /settings), or change them with --set key=value."""
    with clean_errors():
        # Checked by the API's own model before anything starts: what PUT /settings refuses
        # (422), this refuses (exit 2), with no database opened.
        update = settings_update(set_) if set_ else None
        with _runtime() as runtime:
            service = runtime.runs()
            if update is not None:
                view = service.update_settings(update.to_domain())
            else:
                view = service.get_settings_view()
            _print_json(view.model_dump(mode="json"))


def settings_update(items: list[str]) -> Any:
    """`--set key=value` pairs as the body PUT /settings takes (`SettingsUpdateRequest`): an
    integer setting gets a number when the value is one (else its text, refused as the API
    refuses `"3"`), `none`/`null` is null, everything else stays text."""
    from deepmem.api.models import INTEGER_SETTINGS, SettingsUpdateRequest

    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, value = key.strip(), raw.strip()
        if not sep or not key:
            raise ValueError(f"--set wants key=value, got {item!r}")
        if value.lower() in ("none", "null"):
            changes[key] = None
        elif key in INTEGER_SETTINGS and value.lstrip("+-").isdecimal() and len(value) <= 18:
            changes[key] = int(value)
        else:
            changes[key] = value
    return SettingsUpdateRequest.model_validate(changes)


@app.command()
def search(
    question: str,
    k: Annotated[int, typer.Option(min=1, max=100)] = 5,
    no_adapter: Annotated[bool, typer.Option(help="search without the trained adapter")] = False,
) -> None:
    """Search the dataset with the active query adapter (the last the guard applied)."""
    with clean_errors():
        from deepmem.cli.retrieval import run_search

        run_search(console, question, k=k, use_adapter=not no_adapter)


@app.command(name="eval")
def evaluate(
    queries: Annotated[
        Path,
        typer.Argument(help='JSONL: {"query": str, "relevant": [chunk ids]} per line'),
    ],
) -> None:
    """recall@k of the dataset with and without the trained adapter on judged queries."""
    with clean_errors():
        from deepmem.cli.retrieval import run_eval

        run_eval(console, queries)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API on localhost (HTTP → API Gateway v2 events, authorizer included)."""
    with clean_errors():
        from deepmem.cli.serving import run_server

        run_server(console, host, port)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"deepmem {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Synthetic question→chunk pairs from a DeepLake dataset, and a model trained on them."""


def main(argv: list[str] | None = None) -> None:
    """The command, with click's usage errors as one line and exit 2 (not rich's boxes)."""
    try:
        code = app(args=argv, prog_name="deepmem", standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        console.print(exc.ctx.get_help(), markup=False, highlight=False)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        error(f"{exc.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        error(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        error("aborted")
        sys.exit(EXIT_ERROR)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
