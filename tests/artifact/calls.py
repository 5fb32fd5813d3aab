"""Calling the built functions of a `LoopbackStack` the way their callers do: API Gateway (with
the authorizer's context), the state machine's tasks, EventBridge."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from deepmem.domain.errors import DeepmemError

from tests.artifact.stack import LoopbackStack, parsed
from tests.fakes.events import SAMPLE_DATASET, api_request
from tests.fakes.events import samples as all_samples


def samples(dataset: str) -> dict[str, dict[str, Any]]:
    """`events/`'s samples, the batch's placeholder dataset (a hub:// path nobody has here)
    swapped for the stack's."""
    found = all_samples()
    for event in found.values():
        setup = event.get("setup")
        if isinstance(setup, dict) and setup.get("dataset") == SAMPLE_DATASET:
            setup["dataset"] = dataset
    return found


def domain_errors() -> set[str]:
    """The names of the errors deepmem raises on purpose (what Retry and Catch name)."""
    import deepmem.adapters.secrets
    import deepmem.services.generation
    import deepmem.services.training  # noqa: F401  (their errors join the hierarchy)

    names, todo = set(), [DeepmemError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


def api(stack: LoopbackStack, function: str, event: dict[str, Any]) -> Answer:
    """The function's answer; a 5xx fails, naming the function and showing what it logged
    (the exception behind a 500 is logged, never returned)."""
    invocation = stack.invoke(function, event)
    response = invocation.value()
    assert response["headers"]["Content-Type"] == "application/json", response
    answer = Answer(response["statusCode"], json.loads(response["body"]))
    if answer.status >= 500:
        raised = [
            record["exception"].strip().splitlines()[-1]
            for record in parsed(invocation.logs)
            if "exception" in record
        ]
        shown = raised or invocation.logs[-20:]
        raise AssertionError(f"{function} answered {answer.status} {answer.body}: {shown}")
    return answer


def request(
    method: str, path: str, body: Any = None, route: str | None = None, **params: str
) -> dict[str, Any]:
    """A request as API Gateway hands it on after the authorizer admitted the sample admin."""
    return api_request(method, path, body, route=route, path_parameters=params or None)


def run(stack: LoopbackStack, run_id: UUID | str) -> dict[str, Any]:
    answer = api(
        stack,
        "RunsFunction",
        request("GET", f"/runs/{run_id}", route="/runs/{run_id}", run_id=str(run_id)),
    )
    assert answer.status == 200, answer
    body: dict[str, Any] = answer.body
    return body


def start_generation(stack: LoopbackStack) -> str:
    answer = api(stack, "RunsFunction", request("POST", "/generate", {}))
    assert answer.status == 202, answer
    return str(answer.body["training_run_id"])


def clear_unfinished_runs(stack: LoopbackStack) -> None:
    """Cancel and delete what an earlier test left unfinished (one unfinished run at a time)."""
    listed = api(stack, "RunsFunction", request("GET", "/runs")).body["runs"]
    for found in listed:
        path = f"/runs/{found['id']}"
        if found["status"] in ("generating", "training"):
            cancel = request(
                "POST", f"{path}/cancel", route="/runs/{run_id}/cancel", run_id=found["id"]
            )
            cancelled = api(stack, "RunsFunction", cancel)
            assert cancelled.status == 202, cancelled
        if found["status"] != "completed":
            delete = request("DELETE", path, route="/runs/{run_id}", run_id=found["id"])
            deleted = api(stack, "DeleteFunction", delete)
            assert deleted.status == 200, deleted


def walk_generation(stack: LoopbackStack, run_id: str, attempt: int = 1) -> dict[str, Any]:
    """What the state machine asks of generate_batch: plan, every lane to its end, finish."""
    task = {"run_id": run_id, "attempt": attempt}
    plan = stack.invoke("GenerateBatchFunction", {"action": "plan", **task}).value()
    assert plan["lanes"], plan
    for first in plan["lanes"]:
        lane = first
        for _ in range(100):
            event = {"action": "batch", **task, "lane": lane, "setup": plan["setup"]}
            progress = stack.invoke("GenerateBatchFunction", event).value()
            lane = progress["lane"]
            if progress["done"]:
                break
        else:
            raise AssertionError(f"lane {lane} never finished")
    finished: dict[str, Any] = stack.invoke(
        "GenerateBatchFunction", {"action": "finish", **task}
    ).value()
    return finished
