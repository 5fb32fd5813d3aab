"""Every refusal caused by a run says how to get it out of the way: the command and the call."""

from __future__ import annotations

from uuid import uuid4

import pytest
from deepmem.domain.errors import (
    BlockingRunExistsError,
    RunNotDeletableError,
    RunNotProceedableError,
    SettingsLockedError,
)

P = "/v1/api/deep-memory"


@pytest.mark.parametrize(
    ("status", "command", "call"),
    [
        ("generating", "deepmem cancel", "POST {P}/runs/{id}/cancel"),
        ("training", "deepmem cancel", "POST {P}/runs/{id}/cancel"),
        ("generated", "deepmem train", "POST {P}/train"),
        ("generating_failed", "deepmem proceed", "DELETE {P}/runs/{id}"),
        ("training_failed", "deepmem delete", "POST {P}/proceed"),
    ],
)
def test_a_blocking_run_names_the_way_out(status: str, command: str, call: str) -> None:
    run_id = uuid4()
    for error in (BlockingRunExistsError(run_id, status), SettingsLockedError(run_id, status)):
        message = str(error)
        assert f"{command} {run_id}" in message
        assert call.format(P=P, id=run_id) in message


def test_refused_deletes_and_proceeds_say_what_to_do_instead() -> None:
    run_id = uuid4()
    assert f"deepmem cancel {run_id}" in str(RunNotDeletableError(run_id, "generating"))
    assert "kept as history" in str(RunNotDeletableError(run_id, "completed"))
    assert f"deepmem train {run_id}" in str(RunNotProceedableError(run_id, "generated"))
    assert f"deepmem cancel {run_id}" in str(RunNotProceedableError(run_id, "training"))
