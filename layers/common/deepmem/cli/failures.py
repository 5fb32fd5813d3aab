"""How the CLI fails: one line on stderr and the README's exit codes, the API's answers
mapped the same way (404 → 3, 409 → 4, 422 → 2; see `deepmem.api.errors`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from deepmem.domain.errors import (
    BlockingRunExistsError,
    ConfigurationError,
    DatasetMissingError,
    DeepmemError,
    GeneratorNotConfiguredError,
    InvalidSettingsError,
    InvalidTransitionError,
    RunNotFoundError,
    RunSourceChangedError,
    SettingsLockedError,
)

errors = Console(stderr=True)

#: Exit codes, documented in the README.
EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4

#: Refusals the API answers 409.
_CONFLICTS = (
    BlockingRunExistsError,
    InvalidTransitionError,
    SettingsLockedError,
    InvalidSettingsError,
    RunSourceChangedError,
    GeneratorNotConfiguredError,
    DatasetMissingError,
)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, RunNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, _CONFLICTS):
        return EXIT_CONFLICT
    if isinstance(exc, ValidationError | ValueError | ConfigurationError):
        return EXIT_USAGE
    return EXIT_ERROR


def error(message: str) -> None:
    """One line on stderr, whatever the terminal's width and whatever brackets it holds."""
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


@contextmanager
def clean_errors() -> Iterator[None]:
    """One line on stderr and an exit code for every expected failure."""
    try:
        yield
    except typer.Exit:
        raise
    except ValidationError as exc:
        error(validation_message(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except (DeepmemError, ValueError, OSError) as exc:
        error(str(exc))  # a refusal caused by a run names it and says the way out
        raise typer.Exit(exit_code(exc)) from None
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
