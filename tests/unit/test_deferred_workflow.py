"""The run service builds its workflow on the first start, stop or describe, so the API's
settings, delete and read-only routes never create a Step Functions client; inside Lambda a
missing state machine is refused by name, never replaced by the local moto workflow."""

from __future__ import annotations

from uuid import uuid4

import pytest
from deepmem import wiring
from deepmem.adapters.workflow.deferred import DeferredWorkflow
from deepmem.config import Config, MissingConfigurationError
from deepmem.domain.models import SettingsUpdate
from deepmem.domain.status import Phase
from deepmem.ports import Workflow

from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow


class CountingBuild:
    def __init__(self) -> None:
        self.calls = 0
        self.workflow = FakeWorkflow()

    def __call__(self) -> Workflow:
        self.calls += 1
        return self.workflow


def test_routes_that_start_nothing_never_build_the_workflow() -> None:
    build = CountingBuild()
    runs = wiring.build_run_service(
        Config(DATABASE_URL="postgresql://db"), MemoryRunStore(), DeferredWorkflow(build)
    )

    runs.list_runs()
    runs.get_settings_view()
    runs.update_settings(SettingsUpdate(questions_per_chunk=2))

    assert build.calls == 0


def test_the_first_execution_call_builds_it_once() -> None:
    build = CountingBuild()
    workflow = DeferredWorkflow(build)
    run_id = uuid4()

    started = workflow.start(run_id, Phase.GENERATING, 1)
    assert workflow.describe(run_id, Phase.GENERATING, 1) == started
    workflow.stop(run_id, Phase.GENERATING, 1, cause="test")

    assert build.calls == 1
    assert workflow.built


def test_the_run_service_defers_by_default() -> None:
    runs = wiring.build_run_service(Config(DATABASE_URL="postgresql://db"), MemoryRunStore())

    assert isinstance(runs.workflow, DeferredWorkflow)
    assert not runs.workflow.built


def test_inside_lambda_a_missing_state_machine_is_named_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "SettingsFunction")
    runs = wiring.build_run_service(Config(DATABASE_URL="postgresql://db"), MemoryRunStore())

    assert runs.list_runs() == []
    with pytest.raises(MissingConfigurationError, match="set STATE_MACHINE_ARN"):
        runs.workflow.describe(uuid4(), Phase.GENERATING, 1)
