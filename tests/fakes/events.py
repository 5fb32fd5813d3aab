"""Builders of the events every function receives, shared by the tests and `events/*.json`.

- API Gateway HTTP API (payload 2.0) requests that passed the Lambda authorizer
  (`requestContext.authorizer.lambda.user_id`), and the authorizer's own request;
- the state machine's task inputs (the contract in docs/architecture.md);
- the EventBridge "Step Functions Execution Status Change" event.

Defaults are fixed (ids, times) so `scripts/make_events.py` writes the same files every time.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from deepmem.domain.executions import execution_name
from deepmem.domain.models import Settings
from deepmem.domain.status import Phase
from deepmem.local.lambda_runtime import status_change_event

API_PREFIX = "/v1/api/deep-memory"
ACCOUNT = "123456789012"
REGION = "us-east-1"
API_ID = "abcdef1234"
SAMPLE_RUN_ID = UUID("3f2b8c1e-5d4a-4e6b-9c7d-0a1b2c3d4e5f")
SAMPLE_DATASET = "hub://example-org/knowledge-base"
SAMPLE_ADMIN_ID = UUID("00000000-0000-4000-8000-0000000000ad")
SAMPLE_TIME = "27/Nov/2026:05:00:00 +0000"
SAMPLE_EPOCH_MS = 1795928400000
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:deepmem-training"


# ---------------------------------------------------------------- API Gateway HTTP API


def api_request(
    method: str,
    path: str,
    body: Any = None,
    *,
    user_id: UUID | str | None = SAMPLE_ADMIN_ID,
    route: str | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    token: str = "<supabase-access-token>",
) -> dict[str, Any]:
    """A request under the API prefix, as the HTTP API hands it to an integration.

    `path` is relative to the prefix (`/runs/<id>`); `route` is the template's path with
    `{params}` (defaults to `path`). `user_id=None` builds a request without authorizer context.
    """
    raw_path = API_PREFIX + path
    route_key = f"{method} {API_PREFIX}{route or path}"
    headers = {
        "accept": "application/json",
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
        "host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "user-agent": "deepmem-dashboard",
    }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": headers["host"],
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": headers["user-agent"],
            },
            "requestId": "sample-request-id",
            "routeKey": route_key,
            "stage": "$default",
            "time": SAMPLE_TIME,
            "timeEpoch": SAMPLE_EPOCH_MS,
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body is not None:
        event["body"] = json.dumps(body)
    if user_id is not None:
        event["requestContext"]["authorizer"] = {"lambda": {"user_id": str(user_id)}}
    return event


def page_request(path: str = "/", route: str = "/") -> dict[str, Any]:
    """A request for the admin page (served without the authorizer, outside the API prefix)."""
    event = api_request("GET", path, user_id=None)
    event["headers"].pop("authorization")
    event["headers"]["accept"] = "text/html"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {route}"
    return event


def authorizer_request(
    method: str = "GET",
    path: str = "/runs",
    *,
    token: str = "<supabase-access-token>",
) -> dict[str, Any]:
    """The Lambda authorizer's input (payload 2.0, identity source: the Authorization header)."""
    request = api_request(method, path, user_id=None, token=token)
    request.pop("isBase64Encoded", None)
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/$default/{method}{API_PREFIX}{path}"
        ),
        "identitySource": [f"Bearer {token}"],
        "routeKey": request["routeKey"],
        "rawPath": request["rawPath"],
        "rawQueryString": request["rawQueryString"],
        "headers": request["headers"],
        "requestContext": request["requestContext"],
    }


# ---------------------------------------------------------------- state machine tasks


def execution_input(run_id: UUID, phase: Phase, attempt: int = 1) -> dict[str, Any]:
    return {"run_id": str(run_id), "phase": phase.value, "attempt": attempt}


def plan_input(run_id: UUID = SAMPLE_RUN_ID, attempt: int = 1) -> dict[str, Any]:
    """The execution's input rides along (`$$.Execution.Input`): a handover's successor
    carries its segment and lanes in it."""
    return {
        "action": "plan",
        "run_id": str(run_id),
        "attempt": attempt,
        "execution": execution_input(run_id, Phase.GENERATING, attempt),
    }


def lane(
    index: int = 0, start: int = 0, stop: int = 500, cursor: int | None = None
) -> dict[str, int]:
    return {
        "lane": index,
        "start": start,
        "stop": stop,
        "cursor": start if cursor is None else cursor,
    }


def lane_setup(dataset: str = SAMPLE_DATASET, settings: Settings | None = None) -> dict[str, Any]:
    """The plan's `setup`, which the Map passes to every lane call."""
    return {"dataset": dataset, "settings": (settings or Settings()).model_dump(mode="json")}


def batch_input(
    run_id: UUID = SAMPLE_RUN_ID,
    attempt: int = 1,
    lane_: dict[str, int] | None = None,
    setup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "action": "batch",
        "run_id": str(run_id),
        "attempt": attempt,
        "lane": lane_ or lane(),
        "setup": setup or lane_setup(),
    }


def finish_input(run_id: UUID = SAMPLE_RUN_ID, attempt: int = 1) -> dict[str, Any]:
    """What the Map's lanes ended with (`$.lane_ends`): here every lane done."""
    return {
        "action": "finish",
        "run_id": str(run_id),
        "attempt": attempt,
        "execution": execution_input(run_id, Phase.GENERATING, attempt),
        "lanes": [{"lane": lane(cursor=500), "done": True}],
    }


def submit_input(run_id: UUID = SAMPLE_RUN_ID, attempt: int = 1) -> dict[str, Any]:
    return {"action": "submit", "run_id": str(run_id), "attempt": attempt}


def check_input(
    run_id: UUID = SAMPLE_RUN_ID, attempt: int = 1, job_id: str = "sample-job", poll: int = 1
) -> dict[str, Any]:
    return {
        "action": "check",
        "run_id": str(run_id),
        "attempt": attempt,
        "job_id": job_id,
        "poll": poll,
    }


def lambda_error_cause(error_type: str, message: str) -> str:
    """The Cause a Catch sees for a Lambda task that raised: the function's error JSON."""
    return json.dumps(
        {"errorType": error_type, "errorMessage": message, "stackTrace": ['  File "app.py"\n']}
    )


def failure_caught(
    run_id: UUID = SAMPLE_RUN_ID,
    phase: Phase = Phase.GENERATING,
    attempt: int = 1,
    error: str = "GenerationError",
    cause: str | None = None,
) -> dict[str, Any]:
    """What the state machine's RecordFailure states send."""
    return {
        "source": "catch",
        "run_id": str(run_id),
        "attempt": attempt,
        "phase": phase.value,
        "error": {
            "Error": error,
            "Cause": cause if cause is not None else lambda_error_cause(error, "the LLM refused"),
        },
    }


# ---------------------------------------------------------------- EventBridge


def execution_status_change(
    run_id: UUID = SAMPLE_RUN_ID,
    phase: Phase = Phase.GENERATING,
    attempt: int = 1,
    status: str = "ABORTED",
    *,
    state_machine_arn: str = STATE_MACHINE_ARN,
    name: str | None = None,
    error: str | None = None,
    cause: str | None = None,
) -> dict[str, Any]:
    """The event the status-change rule delivers (the same builder LocalWorkflow uses)."""
    name = name or execution_name(run_id, phase, attempt)
    execution_arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
    event = status_change_event(
        state_machine_arn=state_machine_arn,
        execution_arn=execution_arn,
        name=name,
        status=status,
        error=error,
        cause=cause,
        region=REGION,
        account=ACCOUNT,
    )
    event["id"] = "00000000-0000-4000-8000-00000000e001"
    event["time"] = "2026-11-27T05:00:00Z"
    event["detail"]["input"] = json.dumps(execution_input(run_id, phase, attempt))
    event["detail"]["startDate"] = SAMPLE_EPOCH_MS - 60_000
    event["detail"]["stopDate"] = SAMPLE_EPOCH_MS
    return event


# ---------------------------------------------------------------- the samples in events/


def samples() -> dict[str, dict[str, Any]]:
    """`events/<name>.json` for `sam local invoke <Function> -e events/<name>.json`."""
    run = str(SAMPLE_RUN_ID)
    run_path = {"run_id": run}
    return {
        "authorizer": authorizer_request(),
        "dashboard": page_request(),
        "runs_generate": api_request("POST", "/generate", {}),
        "runs_train": api_request("POST", "/train", {"training_run_id": run}),
        "runs_list": api_request("GET", "/runs", query={"limit": "20"}),
        "runs_get": api_request(
            "GET", f"/runs/{run}", route="/runs/{run_id}", path_parameters=run_path
        ),
        "runs_pairs": api_request(
            "GET",
            f"/runs/{run}/pairs",
            route="/runs/{run_id}/pairs",
            path_parameters=run_path,
            query={"limit": "100", "offset": "0"},
        ),
        "runs_cancel": api_request(
            "POST", f"/runs/{run}/cancel", route="/runs/{run_id}/cancel", path_parameters=run_path
        ),
        "proceed": api_request("POST", "/proceed", {"training_run_id": run}),
        "delete": api_request(
            "DELETE", f"/runs/{run}", route="/runs/{run_id}", path_parameters=run_path
        ),
        "settings_get": api_request("GET", "/settings"),
        "settings_put": api_request("PUT", "/settings", {"questions_per_chunk": 3, "lanes": 4}),
        "generate_batch_plan": plan_input(),
        "generate_batch_batch": batch_input(),
        "generate_batch_finish": finish_input(),
        "train_submit": submit_input(),
        "train_check": check_input(),
        "record_failure_catch": failure_caught(),
        "record_failure_aborted": execution_status_change(status="ABORTED"),
        "record_failure_timed_out": execution_status_change(
            phase=Phase.TRAINING, status="TIMED_OUT"
        ),
    }
