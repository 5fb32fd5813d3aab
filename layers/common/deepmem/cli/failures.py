"""How the CLI fails: one line on stderr, and the exit code `exit_codes.py` gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from deepmem.cli.exit_codes import EXIT_USAGE, exit_code
from deepmem.domain.errors import DeepmemError

errors = Console(stderr=True)


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
