"""The stack `template.yaml` describes, stood up on loopback for the built functions:

- moto in server mode (`ThreadedMotoServer`, a free port) for Step Functions, Lambda, S3,
  Secrets Manager, SSM and EventBridge, reached by the functions through `AWS_ENDPOINT_URL`;
- Supabase's REST endpoint (`tests.fakes.postgrest`) over a database of the embedded
  PostgreSQL, its service key in a Secrets Manager secret as the template expects;
- the OpenAI-compatible server (`tests.fakes.llm_server`), its key in a secret too;
- the JWKS the authorizer verifies tokens against (`tests.api_support.jwks_server`);
- a local DeepLake dataset whose vectors the loopback embeddings endpoint reproduces;
- the state machine created from `statemachine/training.asl.json` with the template's
  `DefinitionSubstitutions`, its Lambda tasks dispatched to the built functions.

Each function gets the environment the template resolves for it, every `!Ref`/`!GetAtt` filled
with the loopback resource, and only two overrides: its writable places (Lambda's /tmp) under
the test's folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from deepmem.local.dataset_builder import build_dataset
from deepmem.local.moto_interpreter import make_invoke, make_retry_clock, make_wait
from moto.awslambda.models import LambdaFunction
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)

from tests.api_support import SigningKeys, jwks_server
from tests.artifact.iam import action_and_resource, refused
from tests.artifact.runner import BuiltFunction, Invocation
from tests.db import TestServer
from tests.deployed_support import (
    REGION,
    ROOT,
    DeployedFunction,
    deployed_functions,
    resolve,
    template,
)
from tests.fakes.llm_server import FakeLLMServer, vector_for
from tests.fakes.postgrest import FakePostgrest, make_token
from tests.integration.generation_support import write_corpus

STACK_NAME = "deepmem-artifact"
#: The keys the stack keeps in Secrets Manager: no log line may show them.
OPENAI_KEY = "sk-artifact-test-key"
SERVICE_KEY = make_token("service_role")
ISSUER = "https://project.supabase.co/auth/v1"
#: The dataset's embedding model (one OpenAI does not have: its size is learnt from a call).
EMBEDDING_MODEL = "loopback-embedding-32"
EMBEDDING_DIM = 32
#: The ASL's Lambda tasks, by the template's logical ids (its DefinitionSubstitutions).
TASK_FUNCTIONS = ("GenerateBatchFunction", "TrainFunction", "RecordFailureFunction")


class LoopbackVectors:
    """The Embedder that builds the dataset: the very vectors the loopback endpoint returns for
    the model the dataset records, so training embeds questions in the dataset's space."""

    model_name = EMBEDDING_MODEL
    dimension = EMBEDDING_DIM

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [vector_for(text, EMBEDDING_DIM) for text in texts]


#: `call(function, event)`: what moto's Lambda answers the state machine's task.
TaskCall = Callable[[str, dict[str, Any]], Any]


class TaskError(Exception):
    """A built function's error, raised under its own name so Retry and Catch see that name."""


@dataclass
class LoopbackStack:
    aws_url: str
    postgrest: FakePostgrest
    llm: FakeLLMServer
    dataset: str
    given: dict[str, str]
    functions: dict[str, BuiltFunction] = field(default_factory=dict)
    #: The IAM actions each function's calls needed so far.
    calls: dict[str, set[str]] = field(default_factory=dict)
    #: (function, error name) of every state machine task that raised.
    task_errors: list[tuple[str, str]] = field(default_factory=list)

    def aws(self, service: str) -> Any:
        return aws_client(self.aws_url, service)

    @property
    def state_machine_arn(self) -> str:
        return self.given["TrainingStateMachine"]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Invocation:
        """One invocation; an AWS call the function's role (template.yaml) would not allow
        fails it, as AWS's AccessDenied would, naming the call."""
        invocation = self.functions[logical_id].invoke(event)
        self.calls.setdefault(logical_id, set()).update(
            action_and_resource(call)[0] for call in invocation.calls
        )
        denied = refused(logical_id, invocation.calls, self.given)
        if denied:
            raise AssertionError(f"{logical_id}: template.yaml does not allow {denied}")
        return invocation

    def call_task(self, function_name: str, event: dict[str, Any]) -> Any:
        """What moto's Lambda answers a state machine task: the built function's result, or
        its error raised under the function's error name."""
        invocation = self.invoke(function_name, event)
        if invocation.error is not None:
            name = str(invocation.error.get("errorType", "Unhandled"))
            self.task_errors.append((function_name, name))
            raise type(name, (TaskError,), {})(invocation.error.get("errorMessage", ""))
        return invocation.result


def aws_client(aws_url: str, service: str) -> Any:
    """A boto3 client of the loopback AWS (the test's own, not a function's)."""
    return boto3.client(  # type: ignore[call-overload]  # any service, by name
        service,
        region_name=REGION,
        endpoint_url=aws_url,
        aws_access_key_id="artifact",
        aws_secret_access_key="artifact",
    )


def free_moto_server() -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server


def reset_moto(aws_url: str) -> None:
    """moto's backends are the process's: what an earlier stack created is forgotten."""
    urllib.request.urlopen(
        urllib.request.Request(f"{aws_url}/moto-api/reset", method="POST"), timeout=30
    ).close()


def _secret(secrets: Any, name: str, value: str) -> str:
    arn: str = secrets.create_secret(Name=name, SecretString=value)["ARN"]
    return arn


def _lambda_functions(aws: Any) -> dict[str, str]:
    """The ASL's functions created in moto's Lambda (their code is never run: invocations are
    dispatched to the built functions); `<LogicalId>.Arn` → ARN."""
    iam = aws("iam")
    role = iam.create_role(RoleName="artifact-function", AssumeRolePolicyDocument="{}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    raise RuntimeError\n")
    arns = {}
    for logical_id in TASK_FUNCTIONS:
        created = aws("lambda").create_function(
            FunctionName=logical_id,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="app.handler",
            Code={"ZipFile": buffer.getvalue()},
            Timeout=900,
        )
        arns[f"{logical_id}.Arn"] = created["FunctionArn"]
    return arns


def state_machine_definition(given: dict[str, str]) -> str:
    """The ASL with the template's DefinitionSubstitutions, resolved with `given`."""
    machine = template()["Resources"]["TrainingStateMachine"]["Properties"]
    definition = (ROOT / machine["DefinitionUri"]).read_text(encoding="utf-8")
    for name, value in machine["DefinitionSubstitutions"].items():
        definition = definition.replace("${" + name + "}", resolve(value, given))
    return definition


def write_dataset(folder: Path, documents: int) -> str:
    path = str(folder / "dataset")
    count = build_dataset(write_corpus(folder / "corpus", documents), path, LoopbackVectors())
    assert count == documents
    return path


def function_environment(
    function: DeployedFunction, stack_dir: Path, aws_url: str
) -> dict[str, str]:
    """What differs from the template's environment: loopback AWS and Lambda's /tmp here."""
    tmp = stack_dir / "tmp" / function.logical_id
    tmp.mkdir(parents=True, exist_ok=True)
    writable = {"DEEPMEM_HOME": str(tmp / "deepmem"), "HOME": str(tmp)}
    return {
        "AWS_ENDPOINT_URL": aws_url,
        **{k: v for k, v in writable.items() if k in function.environment},
    }


@contextmanager
def interpreter_patches(
    call: Callable[[str, dict[str, Any]], Any], execute: bool
) -> Iterator[None]:
    """moto's Step Functions runs the ASL (when `execute`), its Lambda tasks reach the built
    functions, its retry sleeps and Wait states are not slept."""
    with ExitStack() as patches:
        sfn = {"stepfunctions": {"execute_state_machine": execute}}
        patches.enter_context(mock.patch.dict(default_user_config, sfn))
        patches.enter_context(mock.patch.object(LambdaFunction, "invoke", make_invoke(call)))
        patches.enter_context(mock.patch.object(retrier_decl, "time", make_retry_clock(0)))
        patches.enter_context(mock.patch.object(WaitFunction, "_wait_interval", make_wait(0)))
        yield


def _resources(
    stack: ExitStack, stack_dir: Path, aws: Any, server: TestServer, keys: SigningKeys
) -> tuple[FakePostgrest, FakeLLMServer, str, dict[str, str]]:
    """The loopback services (closed by `stack`) and the template's references they fill."""
    database = server.fresh_database()
    stack.callback(server.drop_database, database[0])
    postgrest = stack.enter_context(FakePostgrest(database[1]))
    llm = stack.enter_context(FakeLLMServer(dim=EMBEDDING_DIM, api_key=OPENAI_KEY))
    jwks_url, _hits = stack.enter_context(jwks_server(keys))
    dataset = write_dataset(stack_dir, documents=24)
    secrets = aws("secretsmanager")
    bucket = "deepmem-artifact-artifacts"
    aws("s3").create_bucket(Bucket=bucket)
    machine_name = f"{STACK_NAME}-training"
    given = {
        "AWS::StackName": STACK_NAME,
        "SupabaseUrl": postgrest.url,
        "SupabaseServiceKeySecretArn": _secret(secrets, "supabase-service-key", SERVICE_KEY),
        "OpenAIApiKeySecretArn": _secret(secrets, "openai-api-key", OPENAI_KEY),
        "DatasetPath": dataset,
        "OpenAIBaseUrl": llm.base_url,
        "SupabaseJwksUrl": jwks_url,
        "SupabaseJwtIssuer": ISSUER,
        "ArtifactsBucket": bucket,
        "TrainingStateMachine.Name": machine_name,
        **_lambda_functions(aws),
    }
    role = aws("iam").create_role(RoleName="artifact-machine", AssumeRolePolicyDocument="{}")
    given["TrainingStateMachine"] = aws("stepfunctions").create_state_machine(
        name=machine_name,
        definition=state_machine_definition(given),
        roleArn=role["Role"]["Arn"],
    )["stateMachineArn"]
    return postgrest, llm, dataset, given


@contextmanager
def loopback_stack(
    stack_dir: Path,
    sdk: Path,
    server: TestServer,
    keys: SigningKeys,
    *,
    execute: bool,
    only: Sequence[str] | None = None,
) -> Iterator[LoopbackStack]:
    """The whole stack, and one warm instance of every built function (or of `only`)."""
    with ExitStack() as stack:
        moto = free_moto_server()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        aws_url = f"http://{host}:{port}"
        reset_moto(aws_url)
        stack.callback(reset_moto, aws_url)
        # moto's interpreter reaches its own Lambda through localhost:MOTO_PORT.
        stack.enter_context(mock.patch.dict(os.environ, {"MOTO_PORT": str(port)}))
        made: list[LoopbackStack] = []

        def call_task(function: str, event: dict[str, Any]) -> Any:
            return made[0].call_task(function, event)

        # Before any resource: the executing backend is another one than the recording one.
        stack.enter_context(interpreter_patches(call_task, execute))
        aws = functools.partial(aws_client, aws_url)
        postgrest, llm, dataset, given = _resources(stack, stack_dir, aws, server, keys)
        loopback = LoopbackStack(aws_url, postgrest, llm, dataset, given)
        made.append(loopback)
        for function in deployed_functions(given=given):
            if only is not None and function.logical_id not in only:
                continue
            built = BuiltFunction(function, sdk, function_environment(function, stack_dir, aws_url))
            stack.callback(built.close)
            loopback.functions[function.logical_id] = built
        yield loopback


def parsed(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON log lines (Powertools'), the others left out."""
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records
