"""The Workflow port on one machine: the deployed ASL, executed by moto's Step Functions
interpreter, with our handlers invoked in process (no Docker, no AWS account).

THE CONTRACT between `statemachine/training.asl.json` and the task handlers
---------------------------------------------------------------------------
Execution: name `<run_id>-<phase>-<attempt>` (`deepmem.domain.executions.execution_name`), input
`{"run_id": "<uuid>", "phase": "generating"|"training", "attempt": <int>}`. Every task gets
`run_id` and `attempt` from the execution input (`$$.Execution.Input`), never from a previous
task's output, so a handler cannot lose them.

Generation, Lambda `GenerateBatchFunction` (`functions/generate_batch/app.py`):
- plan:   in  `{"action": "plan", "run_id", "attempt"}`
          out `{"run_id", "attempt", "total_chunks": int,
                "lanes": [{"lane": 0, "start": 0, "stop": 500, "cursor": 0}, ...],
                "max_concurrency": int,  (>= 1; the Map's MaxConcurrencyPath)
                "setup": {"dataset": str, "settings": {...}}}`  (what every lane call needs)
- batch:  in  `{"action": "batch", "run_id", "attempt", "lane": {...}, "setup": {...}}`, once
          per lane item (`setup` from the plan), looping while the output's `done` is false;
          out `{"run_id", "attempt", "lane": {... cursor advanced}, "done": bool,
                "new_chunks": int, "new_pairs": int, "setup": {...}}`; the next call gets the
          returned `lane` and `setup`. Without `setup` a call reads the run and the settings.
- finish: in  `{"action": "finish", "run_id", "attempt"}`
          out `{"run_id", "status": "generated", ...}`
- retried (backoff + full jitter): Lambda.ServiceException, Lambda.AWSLambdaException,
  Lambda.SdkClientException, Lambda.TooManyRequestsException; TransientGenerationError and
  StoreError.

Training, Lambda `TrainFunction` (`functions/train/app.py`):
- submit: in  `{"action": "submit", "run_id", "attempt"}`
          out `{"run_id", "job_id", "state", "wait_seconds": int >= 0, "poll": int}`
- then Wait `$.wait_seconds`, then
- check:  in  `{"action": "check", "run_id", "attempt", "job_id", "poll"}` (`job_id` and
          `poll` from the previous output; `poll` counts the checks, for the backoff)
          -> out the same shape;
          `state` "completed" ends the execution (check itself moves the run to `completed`);
          any other state waits `wait_seconds` and checks again. A failed job raises
          TrainingError.
- retried: the Lambda service errors above; TransientTrainingError and StoreError.

Failures, Lambda `RecordFailureFunction` (`functions/record_failure/app.py`): any error left
after the retries of any task of a phase is caught (States.ALL) and sent as
`{"source": "catch", "run_id", "phase", "attempt", "error": {"Error", "Cause"}}`; the
execution then fails with that same Error and Cause (Fail with ErrorPath/CausePath). The
EventBridge rule on ABORTED, TIMED_OUT and FAILED sends the status-change event to the same
function. Python exceptions reach the ASL by class name (the Lambda `errorType`).

Here
----
moto 5.2.5 runs the ASL in background threads; `arn:aws:states:::lambda:invoke` calls moto's
Lambda backend, whose `LambdaFunction.invoke` (normally Docker) is replaced by a dispatch to the
Python callables given to `LocalWorkflow`. Retry intervals and Wait states are scaled by
`time_scale` (0 = not slept at all). EventBridge rules do not run under moto, so when an
execution ends ABORTED, TIMED_OUT or FAILED this adapter hands the status-change event to the
record-failure handler itself, as the deployed rule would.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import threading
import time
import traceback
import types
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock
from uuid import UUID

import boto3
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)

from deepmem.adapters.workflow.step_functions import StepFunctionsWorkflow
from deepmem.domain.errors import WorkflowError
from deepmem.domain.executions import execution_name
from deepmem.domain.status import Phase
from deepmem.local.functions import functions_dir, load_function
from deepmem.local.lambda_runtime import ACCOUNT_ID, LocalLambdaContext, status_change_event
from deepmem.local.paths import repo_root
from deepmem.ports import Execution, ExecutionState

#: The moto release whose interpreter internals (the patched `LambdaFunction.invoke`, the
#: retrier's `time.sleep`, `WaitFunction._wait_interval`) this adapter was verified against.
VERIFIED_MOTO_VERSION = "5.2.5"

DEFINITION_PATH = repo_root() / "statemachine" / "training.asl.json"

FUNCTIONS_DIR = functions_dir()

#: The functions the ASL names, as `${<Name>Arn}` placeholders (the template's logical ids),
#: and their folders under functions/.
TASK_FUNCTIONS = {
    "GenerateBatchFunction": "generate_batch",
    "TrainFunction": "train",
    "RecordFailureFunction": "record_failure",
}
RECORD_FAILURE_FUNCTION = "RecordFailureFunction"

FAILURE_STATUSES = frozenset(
    {ExecutionState.ABORTED, ExecutionState.TIMED_OUT, ExecutionState.FAILED}
)

Handler = Callable[[dict[str, Any], Any], Any]

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9]+)\}")
_INTERPRETER_LOGGER = "moto.stepfunctions.parser.asl.component.eval_component"


def function_handlers(functions_dir: Path = FUNCTIONS_DIR) -> dict[str, Handler]:
    """The deployed task handlers (`functions/<folder>/app.py`'s `handler`), by logical id:
    what the composition root gives `LocalWorkflow` so the cloud's code runs here."""
    return {
        logical_id: load_function(folder, functions_dir).handler
        for logical_id, folder in TASK_FUNCTIONS.items()
    }


def placeholders(definition: str) -> set[str]:
    """The `${Name}` placeholders of an ASL definition."""
    return set(_PLACEHOLDER.findall(definition))


class LocalWorkflow:
    """`deepmem.ports.Workflow` on moto's interpreter with in-process handlers.

    While it is open, every boto3 call of the process goes to moto (`mock_aws` is
    process-wide), so at most one instance is open at a time.

    `handlers` maps each function of the ASL (its template logical id: `GenerateBatchFunction`,
    `TrainFunction`, `RecordFailureFunction`) to a `handler(event, context)`. Use as a context
    manager, or call `close()`: the AWS mock and the patches live as long as the instance.
    """

    _instance_lock: ClassVar[threading.Lock] = threading.Lock()
    _open_instance: ClassVar[LocalWorkflow | None] = None

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        definition_path: Path | str = DEFINITION_PATH,
        time_scale: float = 0.0,
        function_timeout_seconds: float = 900.0,
        safety_net: str | None = RECORD_FAILURE_FUNCTION,
        region: str = "us-east-1",
        state_machine_name: str = "deepmem-training",
        close_timeout_seconds: float = 10.0,
        interpreter_logs: bool = False,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if safety_net is not None and safety_net not in handlers:
            raise ValueError(f"safety net handler {safety_net!r} is not among the handlers")
        self._handlers = dict(handlers)
        self._time_scale = time_scale
        self._function_timeout = function_timeout_seconds
        self._safety_net = safety_net
        self._region = region
        self._lock = threading.Lock()
        self._watchers: dict[str, threading.Thread] = {}
        self._stop_causes: dict[str, tuple[str | None, str | None]] = {}
        self._close_timeout = close_timeout_seconds
        self._closing = False
        self._closed = False
        # Held while the watchers talk to the mock, so none calls out once the mock is stopped.
        self._alive = threading.Lock()
        self._interpreter_log = logging.getLogger(_INTERPRETER_LOGGER)
        self._interpreter_log_level = self._interpreter_log.level
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._patches: list[Any] = [
            mock.patch.object(LambdaFunction, "invoke", self._make_invoke()),
            mock.patch.object(retrier_decl, "time", self._make_retry_clock()),
            mock.patch.object(WaitFunction, "_wait_interval", self._make_wait()),
        ]
        with LocalWorkflow._instance_lock:
            # The AWS mock and the patches are process-wide: a second instance would take the
            # first one's executions over.
            if LocalWorkflow._open_instance is not None:
                raise WorkflowError("another LocalWorkflow is open in this process; close it first")
            LocalWorkflow._open_instance = self
        try:
            if not interpreter_logs:
                # moto logs every failed state at ERROR, retried ones too; the execution
                # history and record_failure's logs already tell that story.
                self._interpreter_log.setLevel(logging.CRITICAL)
            self._mock.start()
            for patch in self._patches:
                patch.start()
            self._sfn = boto3.client("stepfunctions", region_name=region)
            definition = Path(definition_path).read_text(encoding="utf-8")
            self.definition = self._substitute(definition)
            self.state_machine_arn = self._sfn.create_state_machine(
                name=state_machine_name,
                definition=self.definition,
                roleArn=self._role_arn("deepmem-state-machine"),
            )["stateMachineArn"]
            self._remote = StepFunctionsWorkflow(self._sfn, self.state_machine_arn)
        except BaseException:
            self.close()
            raise

    # the Workflow port

    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        with self._lock:
            execution = self._remote.start(run_id, phase, attempt)
            if execution.arn not in self._watchers:
                watcher = threading.Thread(
                    target=self._watch,
                    args=(execution.arn,),
                    name=f"watch-{execution.name}",
                    daemon=True,
                )
                self._watchers[execution.arn] = watcher
                watcher.start()
        return execution

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None:
        arn = self._execution_arn(execution_name(run_id, phase, attempt))
        # moto drops the error and cause of a stop; the safety-net event carries them.
        self._stop_causes[arn] = ("Cancelled", cause)
        self._remote.stop(run_id, phase, attempt, cause)

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None:
        return self._remote.describe(run_id, phase, attempt)

    # local extras

    def wait(self, run_id: UUID, phase: Phase, attempt: int, timeout: float = 30.0) -> Execution:
        """Block until the execution has ended and, for a failed one, the safety net ran."""
        arn = self._execution_arn(execution_name(run_id, phase, attempt))
        deadline = time.monotonic() + timeout
        watcher = self._watchers.get(arn)
        if watcher is None:
            raise WorkflowError(f"execution {arn} was not started here")
        watcher.join(max(0.0, deadline - time.monotonic()))
        if watcher.is_alive():
            raise TimeoutError(f"execution {arn} still running after {timeout} s")
        described = self._describe_arn(arn)
        assert described is not None
        return described

    def history(self, run_id: UUID, phase: Phase, attempt: int) -> list[dict[str, Any]]:
        """The execution's event history, for tests and the CLI."""
        arn = self._execution_arn(execution_name(run_id, phase, attempt))
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
        while True:
            page = self._sfn.get_execution_history(**kwargs)
            events.extend(dict(e) for e in page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def close(self) -> None:
        """Stop what still runs (the safety net then marks those runs failed, "cancelled"), wait
        a little for it to settle, and take the mock and the patches down."""
        if self._closing:
            return
        self._closing = True
        if hasattr(self, "_remote"):
            for arn in list(self._watchers):
                self._stop_causes.setdefault(arn, ("Cancelled", "the local workflow was closed"))
                # An ended execution ignores the stop.
                with contextlib.suppress(Exception):
                    self._sfn.stop_execution(executionArn=arn)
        deadline = time.monotonic() + self._close_timeout
        for watcher in list(self._watchers.values()):
            watcher.join(max(0.0, deadline - time.monotonic()))
        with self._alive:
            self._closed = True
        for patch in reversed(self._patches):
            with contextlib.suppress(RuntimeError):  # never started
                patch.stop()
        with contextlib.suppress(RuntimeError):
            self._mock.stop()
        self._interpreter_log.setLevel(self._interpreter_log_level)
        with LocalWorkflow._instance_lock:
            if LocalWorkflow._open_instance is self:
                LocalWorkflow._open_instance = None

    def __enter__(self) -> LocalWorkflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals

    def _substitute(self, definition: str) -> str:
        """Fill `${<Function>Arn}` as SAM's DefinitionSubstitutions would, with moto functions."""
        lam = boto3.client("lambda", region_name=self._region)
        role = self._role_arn("deepmem-function")
        values: dict[str, str] = {}
        for placeholder in sorted(placeholders(definition)):
            function = placeholder.removesuffix("Arn")
            if not placeholder.endswith("Arn") or function not in self._handlers:
                raise WorkflowError(f"no handler for the ASL placeholder ${{{placeholder}}}")
            values[placeholder] = lam.create_function(
                FunctionName=function,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": _empty_zip()},
                Timeout=int(self._function_timeout),
            )["FunctionArn"]
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], definition)

    def _role_arn(self, name: str) -> str:
        iam = boto3.client("iam", region_name=self._region)
        try:
            return iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        except ClientError:
            return iam.get_role(RoleName=name)["Role"]["Arn"]

    def _execution_arn(self, name: str) -> str:
        return self._remote.execution_arn(name)

    def _describe_arn(self, arn: str) -> Execution | None:
        return self._remote.describe_arn(arn)

    def _watch(self, arn: str) -> None:
        """Poll until the execution ends; then play EventBridge for a failed one."""
        while True:
            with self._alive:
                if self._closed:
                    return
                execution = self._describe_arn(arn)
            if execution is None or execution.state is not ExecutionState.RUNNING:
                break
            time.sleep(0.01)
        if execution is None or execution.state not in FAILURE_STATUSES:
            return
        if self._safety_net is None:
            return
        error, cause = execution.error, execution.cause
        if execution.state is ExecutionState.ABORTED:
            # moto drops the error and cause given to stop_execution.
            error, cause = self._stop_causes.get(arn, (error, cause))
        event = status_change_event(
            state_machine_arn=self.state_machine_arn,
            execution_arn=arn,
            name=execution.name,
            status=execution.state.value,
            error=error,
            cause=cause,
            region=self._region,
        )
        try:
            self._call(self._safety_net, event)
        except Exception:  # like a failed EventBridge target: logged, not raised
            traceback.print_exc()

    def _call(self, function: str, event: dict[str, Any]) -> Any:
        context = LocalLambdaContext(
            function_name=function,
            timeout_seconds=self._function_timeout,
            invoked_function_arn=(
                f"arn:aws:lambda:{self._region}:{ACCOUNT_ID}:function:{function}"
            ),
        )
        return self._handlers[function](event, context)

    def _make_invoke(self) -> Callable[..., bytes]:
        workflow = self

        def invoke(
            fn: LambdaFunction, body: str, request_headers: Any, response_headers: Any
        ) -> bytes:
            event = json.loads(body) if body else {}
            try:
                result = workflow._call(fn.function_name, event)
            except Exception as exc:  # every error goes back as Lambda's would
                return _function_error(response_headers, type(exc).__name__, exc)
            try:
                return json.dumps(result).encode("utf-8")
            except (TypeError, ValueError) as exc:
                return _function_error(response_headers, "Runtime.MarshalError", exc)

        return invoke

    def _make_retry_clock(self) -> types.SimpleNamespace:
        scale = self._time_scale

        def sleep(seconds: float) -> None:
            if seconds > 0 and scale > 0:
                time.sleep(seconds * scale)

        return types.SimpleNamespace(sleep=sleep, time=time.time)

    def _make_wait(self) -> Callable[..., None]:
        scale = self._time_scale

        def wait_interval(_self: WaitFunction, env: Any, wait_seconds: int) -> None:
            # The program-state event is set on stop, so a stopped execution stops waiting.
            if wait_seconds > 0 and scale > 0:
                env.program_state_event.wait(wait_seconds * scale)

        return wait_interval


def _function_error(response_headers: Any, error_type: str, exc: BaseException) -> bytes:
    """The payload and header the Lambda service answers for a function that raised."""
    response_headers["x-amz-function-error"] = "Unhandled"
    payload = {
        "errorType": error_type,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc)[-5:],
    }
    return json.dumps(payload).encode("utf-8")


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()
