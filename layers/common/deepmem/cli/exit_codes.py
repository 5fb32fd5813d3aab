"""The command line's exit codes, documented in the README: the API's answers, as exit codes
(404 → 3, 409 → 4, 422 → 2, as `deepmem.api.errors` maps them)."""

from __future__ import annotations

from pydantic import ValidationError

from deepmem.domain.errors import (
    BlockingRunExistsError,
    ConfigurationError,
    DatasetMissingError,
    GeneratorNotConfiguredError,
    InvalidDataError,
    InvalidSettingsError,
    InvalidTransitionError,
    RunNotFoundError,
    RunSourceChangedError,
    SettingsLockedError,
    UnfinishableRunError,
)

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4

_CONFLICTS = (
    BlockingRunExistsError,
    InvalidTransitionError,  # StaleWorkerError among them
    SettingsLockedError,
    InvalidSettingsError,
    RunSourceChangedError,
    GeneratorNotConfiguredError,
    DatasetMissingError,
)

_UNPROCESSABLE = (
    ValidationError,
    ValueError,
    ConfigurationError,
    InvalidDataError,
    UnfinishableRunError,
)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, RunNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, _CONFLICTS):
        return EXIT_CONFLICT
    if isinstance(exc, _UNPROCESSABLE):
        return EXIT_USAGE
    return EXIT_ERROR
