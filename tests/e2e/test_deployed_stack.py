"""Against a deployed stack, found through AWS_SAM_STACK_NAME (skipped without one).

AWS_SAM_STACK_NAME=deepmem DEEPMEM_E2E_TOKEN=<admin access token> uv run pytest tests/e2e
"""

from __future__ import annotations

import os

import httpx
import pytest

STACK = os.environ.get("AWS_SAM_STACK_NAME")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not STACK, reason="no deployed stack: set AWS_SAM_STACK_NAME"),
]


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    import boto3

    stack = boto3.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


@pytest.fixture(scope="module")
def api_url(outputs: dict[str, str]) -> str:
    url = outputs.get("ApiUrl")
    assert url, f"the stack has no ApiUrl output: {sorted(outputs)}"
    return url.rstrip("/")  # ends in /v1/api/deep-memory


def test_unauthenticated_calls_are_refused(api_url: str) -> None:
    response = httpx.get(f"{api_url}/settings", timeout=30)
    assert response.status_code in (401, 403)


def test_settings_answer_for_an_admin(api_url: str) -> None:
    token = os.environ.get("DEEPMEM_E2E_TOKEN")
    assert token, "set DEEPMEM_E2E_TOKEN to an admin's Supabase access token"
    response = httpx.get(
        f"{api_url}/settings",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"has_blocking_run", "is_cloud"} <= set(body)


def test_state_machine_exists(outputs: dict[str, str]) -> None:
    import boto3

    arn = outputs.get("StateMachineArn")
    assert arn, f"the stack has no state machine output: {sorted(outputs)}"
    described = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=arn)
    assert described["status"] == "ACTIVE"
