"""Every built function, as deployed: its folder and layers only, the runtime's boto3, the
environment template.yaml resolves for it pointing at loopback (moto server, Supabase's REST
endpoint over the embedded PostgreSQL, the OpenAI-compatible server, a JWKS), one warm instance
each. Step Functions records executions here without running them: the state machine's calls
are made by the tests (`test_workflow.py` runs the ASL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt
import pytest
from deepmem.domain.status import Phase

from tests.api_support import ADMIN_ID, SigningKeys, claims
from tests.artifact.calls import (
    api,
    clear_unfinished_runs,
    domain_errors,
    request,
    run,
    samples,
    start_generation,
    walk_generation,
)
from tests.artifact.iam import refused
from tests.artifact.runner import AwsCall
from tests.artifact.stack import ISSUER, LoopbackStack, loopback_stack
from tests.db import TestServer
from tests.deployed_support import resolve, target_of, template
from tests.fakes.events import authorizer_request, execution_status_change, failure_caught
from tests.fakes.events import samples as sample_events

API = ("RunsFunction", "ProceedFunction", "DeleteFunction", "SettingsFunction")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, sdk: Path, pg_server: TestServer, keys: SigningKeys
) -> Iterator[LoopbackStack]:
    with loopback_stack(
        tmp_path_factory.mktemp("stack"), sdk, pg_server, keys, execute=False
    ) as built:
        yield built


def test_every_function_starts_as_deployed(stack: LoopbackStack) -> None:
    failed = {name: f.init_error for name, f in stack.functions.items() if not f.init_ok}

    assert failed == {}


@pytest.mark.parametrize("sample", sorted(sample_events()))
def test_every_sample_event_is_answered(stack: LoopbackStack, sample: str) -> None:
    function = target_of(sample)
    invocation = stack.invoke(function, samples(stack.dataset)[sample])

    if function in API:
        response = invocation.value()
        assert response["statusCode"] < 500, (response, invocation.logs[-20:])
    elif function == "DashboardFunction":
        response = invocation.value()
        assert response["statusCode"] == 200, (response, invocation.logs[-20:])
    elif function == "AuthorizerFunction":
        # The sample's token is a placeholder: refused, not an error.
        assert invocation.value()["isAuthorized"] is False
    else:
        # The samples name a run this database does not hold: a domain error (what the
        # state machine's Retry and Catch see), or nothing to do; never a crash.
        assert invocation.error_type in {None, *domain_errors()}, invocation.error


def _authorize(stack: LoopbackStack, token: str | None) -> dict[str, Any]:
    event = authorizer_request(token=token or "")
    if token is None:
        event["headers"].pop("authorization")
        event["identitySource"] = []
    result: dict[str, Any] = stack.invoke("AuthorizerFunction", event).value()
    return result


def test_the_authorizer_admits_an_admin_and_refuses_the_rest(
    stack: LoopbackStack, keys: SigningKeys
) -> None:
    def token(key: Any = keys.ec_key, **changes: Any) -> str:
        body = claims(ISSUER, **changes)
        return jwt.encode(body, key, algorithm="ES256", headers={"kid": "ec-1"})

    admitted = _authorize(stack, token())
    refused = {
        "not an admin": _authorize(stack, token(role=None)),
        "expired": _authorize(stack, token(expires_in=-60)),
        "forged": _authorize(stack, token(key=keys.other_ec_key)),
        "another audience": _authorize(stack, token(audience="anon")),
        "no token": _authorize(stack, None),
    }

    assert admitted == {"isAuthorized": True, "context": {"user_id": str(ADMIN_ID)}}
    assert {why: answer["isAuthorized"] for why, answer in refused.items()} == dict.fromkeys(
        refused, False
    )


def test_a_run_is_generated_and_trained_by_the_built_functions(stack: LoopbackStack) -> None:
    clear_unfinished_runs(stack)
    run_id = start_generation(stack)

    finished = walk_generation(stack, run_id)
    generated = run(stack, run_id)
    pairs = api(
        stack,
        "RunsFunction",
        request("GET", f"/runs/{run_id}/pairs", route="/runs/{run_id}/pairs", run_id=run_id),
    )
    train = api(stack, "RunsFunction", request("POST", "/train", {"training_run_id": run_id}))
    task = {"run_id": run_id, "attempt": 1}
    submitted = stack.invoke("TrainFunction", {"action": "submit", **task}).value()
    checks = [submitted]
    while checks[-1]["state"] != "completed" and len(checks) < 20:
        check = {"action": "check", **task, "job_id": submitted["job_id"], "poll": len(checks)}
        checks.append(stack.invoke("TrainFunction", check).value())
    completed = run(stack, run_id)
    artifacts = stack.aws("s3").list_objects_v2(Bucket=stack.given["ArtifactsBucket"])

    assert finished["status"] == "generated"
    assert generated["processed_chunks"] == generated["total_chunks"] == 24
    assert generated["pair_count"] > 0 and pairs.status == 200 and pairs.body["pairs"]
    assert train.status == 202, train
    assert checks[-1]["state"] == "completed", checks
    assert completed["status"] == "completed"
    assert [o["Key"] for o in artifacts.get("Contents", [])], "no adapter stored in S3"


def test_record_failure_handles_a_catch_and_an_eventbridge_event(stack: LoopbackStack) -> None:
    clear_unfinished_runs(stack)
    run_id = start_generation(stack)
    run_uuid = UUID(run_id)
    arn = stack.state_machine_arn

    caught = stack.invoke("RecordFailureFunction", failure_caught(run_uuid)).value()
    after_catch = run(stack, run_id)
    proceeded = api(
        stack, "ProceedFunction", request("POST", "/proceed", {"training_run_id": run_id})
    )
    ended = execution_status_change(
        run_uuid, Phase.GENERATING, 2, "TIMED_OUT", state_machine_arn=arn
    )
    event = stack.invoke("RecordFailureFunction", ended).value()
    after_event = run(stack, run_id)
    foreign = stack.invoke(
        "RecordFailureFunction", execution_status_change(run_uuid, Phase.GENERATING, 2, "FAILED")
    ).value()
    deleted = api(
        stack,
        "DeleteFunction",
        request("DELETE", f"/runs/{run_id}", route="/runs/{run_id}", run_id=run_id),
    )

    assert caught["recorded"] is True and after_catch["status"] == "generating_failed"
    assert "GenerationError" in (after_catch["error_message"] or "")
    assert proceeded.status == 202, proceeded
    assert event["recorded"] is True and after_event["status"] == "generating_failed"
    assert after_event["attempt"] == 2
    assert foreign["skipped"] == "other_state_machine"
    assert deleted.status == 200, deleted


def test_the_functions_made_the_aws_calls_their_code_path_needs(stack: LoopbackStack) -> None:
    # Every invocation above checked its calls against the template's policies (`invoke`);
    # this says the recording saw them (run after the tests above, in this module's order).
    secret = "secretsmanager:GetSecretValue"

    assert {secret, "states:StartExecution", "states:StopExecution"} <= stack.calls["RunsFunction"]
    assert {secret, "states:StartExecution"} <= stack.calls["ProceedFunction"]
    assert {secret, "s3:PutObject"} <= stack.calls["TrainFunction"]
    assert secret in stack.calls["GenerateBatchFunction"]


def test_a_call_the_template_does_not_allow_is_refused(stack: LoopbackStack) -> None:
    start = AwsCall("states", "StartExecution", {"stateMachineArn": stack.state_machine_arn})
    other_secret = AwsCall("secretsmanager", "GetSecretValue", {"SecretId": "arn:aws:x"})

    assert refused("RunsFunction", (start,), stack.given) == []
    assert refused("DeleteFunction", (start,), stack.given) == [
        f"states:StartExecution on {stack.state_machine_arn}"
    ]
    assert refused("TrainFunction", (other_secret,), stack.given) == [
        "secretsmanager:GetSecretValue on arn:aws:x"
    ]


def _resolved(value: Any, given: dict[str, str]) -> Any:
    """A template value with every reference in it resolved (a rule's event pattern)."""
    if (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)).startswith(("Ref", "Fn::"))
    ):
        return resolve(value, given)
    if isinstance(value, dict):
        return {key: _resolved(item, given) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item, given) for item in value]
    return value


def test_the_status_change_rule_delivers_a_failed_execution_to_record_failure(
    stack: LoopbackStack,
) -> None:
    # The template's rule on the default bus, delivering to a queue (moto's EventBridge cannot
    # invoke a function); what arrives is what the built record_failure is given.
    clear_unfinished_runs(stack)
    run_id = start_generation(stack)
    rule = template()["Resources"]["RecordFailureFunction"]["Properties"]["Events"]
    pattern = _resolved(rule["ExecutionEnded"]["Properties"]["Pattern"], stack.given)
    events, sqs = stack.aws("events"), stack.aws("sqs")
    queue = sqs.create_queue(QueueName="execution-ended")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    events.put_rule(Name="execution-ended", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule="execution-ended",
        Targets=[{"Id": "record-failure", "Arn": queue_arn["Attributes"]["QueueArn"]}],
    )
    sent = {
        status: execution_status_change(
            UUID(run_id), Phase.GENERATING, 1, status, state_machine_arn=stack.state_machine_arn
        )
        for status in ("SUCCEEDED", "FAILED")
    }
    for event in sent.values():
        entry = {"Detail": json.dumps(event["detail"]), "DetailType": event["detail-type"]}
        events.put_events(Entries=[{**entry, "Source": event["source"]}])
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    delivered = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    outcomes = [stack.invoke("RecordFailureFunction", e).value() for e in delivered]

    assert [e["detail"]["status"] for e in delivered] == ["FAILED"]  # the rule's filter
    assert [o["recorded"] for o in outcomes] == [True]
    assert run(stack, run_id)["status"] == "generating_failed"
