"""The Workflow port on one machine: the deployed ASL, executed by moto's Step Functions
interpreter, with our handlers invoked in process (no Docker, no AWS account).

The contract between `statemachine/training.asl.json` and the task handlers: docs/architecture.md.

Here
----
moto 5.2.5 runs the ASL in background threads; `arn:aws:states:::lambda:invoke` calls moto's
Lambda backend, whose `LambdaFunction.invoke` (normally Docker) is replaced by a dispatch to the
Python callables given to `LocalWorkflow`. Retry intervals and Wait states are scaled by
`time_scale` (0 = not slept at all). EventBridge rules do not run under moto, so when an
execution ends ABORTED, TIMED_OUT or FAILED this adapter hands the status-change event to the
record-failure handler itself, as the deployed rule would. A generation that hands over starts
its next execution from the ASL (`arn:aws:states:::states:startExecution`, which moto runs for
real): the watcher of an execution that succeeded with a handover watches its successor, and
`wait` follows the chain to its end.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import boto3
from botocore.exceptions import ClientError

from deepmem.adapters.workflow.step_functions import StepFunctionsWorkflow
from deepmem.domain.errors import WorkflowError
from deepmem.domain.executions import execution_name
from deepmem.domain.status import Phase
from deepmem.local.functions import functions_dir, load_function
from deepmem.local.lambda_runtime import ACCOUNT_ID, LocalLambdaContext, status_change_event
from deepmem.local.lease import LeaseKeeper
from deepmem.local.moto_interpreter import MotoInterpreter
from deepmem.local.paths import repo_root
from deepmem.ports import Execution, ExecutionState, RunLeases

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

    With `leases` (the run store), each execution holds a lease on its run for
    `lease_seconds`, taken when it starts and renewed while it runs, so the run of a process
    that was killed is found and failed by the next command (`RunService.fail_lost_local_runs`).
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
        leases: RunLeases | None = None,
        lease_seconds: float = 15.0,
    ) -> None:
        _check_options(handlers, time_scale, safety_net)
        self._leases = None if leases is None else LeaseKeeper(leases, lease_seconds)
        self._handlers = dict(handlers)
        self._function_timeout = function_timeout_seconds
        self._safety_net = safety_net
        self._region = region
        self._lock = threading.Lock()
        self._watchers: dict[str, threading.Thread] = {}
        self._successors: dict[str, str] = {}  # execution ARN -> the one it handed over to
        self._stop_causes: dict[str, tuple[str | None, str | None]] = {}
        self._close_timeout = close_timeout_seconds
        self._closing = False
        self._closed = False
        # Held while the watchers talk to the mock, so none calls out once the mock is stopped.
        self._alive = threading.Lock()
        self._interpreter = MotoInterpreter(
            self._call, time_scale=time_scale, interpreter_logs=interpreter_logs
        )
        self._claim_the_process()
        try:
            self._interpreter.start()
            self._deploy(Path(definition_path), state_machine_name)
        except BaseException:
            self.close()
            raise

    # the Workflow port

    def start(self, run_id: UUID, phase: Phase, attempt: int) -> Execution:
        with self._lock:
            execution = self._remote.start(run_id, phase, attempt)
            self._start_watching(execution.arn, execution.name, run_id, attempt)
        return execution

    def _start_watching(self, arn: str, name: str, run_id: UUID, attempt: int) -> None:
        """Under `_lock`: one watcher per execution, which keeps the run's lease."""
        if arn in self._watchers:
            return
        if self._leases is not None:
            self._leases.renew(run_id, attempt)
        watcher = threading.Thread(
            target=self._watch, args=(arn, run_id, attempt), name=f"watch-{name}", daemon=True
        )
        self._watchers[arn] = watcher
        watcher.start()

    def stop(self, run_id: UUID, phase: Phase, attempt: int, cause: str) -> None:
        latest = self._remote.describe(run_id, phase, attempt)
        arn = latest.arn if latest else self._execution_arn(execution_name(run_id, phase, attempt))
        # moto drops the error and cause of a stop; the safety-net event carries them.
        self._stop_causes[arn] = ("Cancelled", cause)
        self._remote.stop(run_id, phase, attempt, cause)

    def describe(self, run_id: UUID, phase: Phase, attempt: int) -> Execution | None:
        return self._remote.describe(run_id, phase, attempt)

    # local extras

    def wait(self, run_id: UUID, phase: Phase, attempt: int, timeout: float = 30.0) -> Execution:
        """Block until the attempt's last execution has ended (following its handovers) and,
        for a failed one, the safety net ran."""
        arn = self._execution_arn(execution_name(run_id, phase, attempt))
        deadline = time.monotonic() + timeout
        while True:
            watcher = self._watchers.get(arn)
            if watcher is None:
                raise WorkflowError(f"execution {arn} was not started here")
            watcher.join(max(0.0, deadline - time.monotonic()))
            if watcher.is_alive():
                raise TimeoutError(f"execution {arn} still running after {timeout} s")
            successor = self._successors.get(arn)
            if successor is None:
                break
            arn = successor
        described = self._describe_arn(arn)
        assert described is not None
        return described

    def chain(self, run_id: UUID, phase: Phase, attempt: int) -> list[str]:
        """The names of the attempt's executions so far, in order (one unless it handed over)."""
        arn = self._execution_arn(execution_name(run_id, phase, attempt))
        arns = [arn]
        while arns[-1] in self._successors:
            arns.append(self._successors[arns[-1]])
        return [a.rsplit(":", 1)[-1] for a in arns]

    def history(
        self, run_id: UUID, phase: Phase, attempt: int, segment: int = 0
    ) -> list[dict[str, Any]]:
        """The execution's event history, for tests and the CLI."""
        arn = self._execution_arn(execution_name(run_id, phase, attempt, segment))
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
        self._interpreter.stop()
        with LocalWorkflow._instance_lock:
            if LocalWorkflow._open_instance is self:
                LocalWorkflow._open_instance = None

    def __enter__(self) -> LocalWorkflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals

    def _claim_the_process(self) -> None:
        with LocalWorkflow._instance_lock:
            # The AWS mock and the patches are process-wide: a second instance would take the
            # first one's executions over.
            if LocalWorkflow._open_instance is not None:
                raise WorkflowError("another LocalWorkflow is open in this process; close it first")
            LocalWorkflow._open_instance = self

    def _deploy(self, definition_path: Path, state_machine_name: str) -> None:
        """The state machine on the mock, its functions created first."""
        self._sfn = boto3.client("stepfunctions", region_name=self._region)
        definition = definition_path.read_text(encoding="utf-8")
        self.definition = self._substitute(definition)
        self.state_machine_arn = self._sfn.create_state_machine(
            name=state_machine_name,
            definition=self.definition,
            roleArn=self._role_arn("deepmem-state-machine"),
        )["stateMachineArn"]
        self._remote = StepFunctionsWorkflow(self._sfn, self.state_machine_arn)

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

    def _watch(self, arn: str, run_id: UUID, attempt: int) -> None:
        """Poll until the execution ends, renewing its lease; then play EventBridge for a
        failed one."""
        while True:
            with self._alive:
                if self._closed:
                    return
                execution = self._describe_arn(arn)
            if execution is None or execution.state is not ExecutionState.RUNNING:
                break
            if self._leases is not None:
                self._leases.renew_if_due(run_id, attempt)
            time.sleep(0.01)
        if self._leases is not None:
            self._leases.forget(run_id, attempt)
        if execution is not None and execution.state is ExecutionState.SUCCEEDED:
            self._follow_handover(arn, run_id, attempt)
            return
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

    def _follow_handover(self, arn: str, run_id: UUID, attempt: int) -> None:
        """An execution that handed over started its successor (StartNextExecution) before
        it succeeded: watch that one too."""
        with self._alive:
            if self._closed:
                return
            output = self._sfn.describe_execution(executionArn=arn).get("output") or "{}"
        result = json.loads(output)
        if not isinstance(result, dict) or result.get("handover") is not True:
            return
        name = result["next_execution"]["name"]
        successor = self._execution_arn(name)
        with self._lock:
            self._successors[arn] = successor
            self._start_watching(successor, name, run_id, attempt)

    def _call(self, function: str, event: dict[str, Any]) -> Any:
        context = LocalLambdaContext(
            function_name=function,
            timeout_seconds=self._function_timeout,
            invoked_function_arn=(
                f"arn:aws:lambda:{self._region}:{ACCOUNT_ID}:function:{function}"
            ),
        )
        return self._handlers[function](event, context)


def _check_options(
    handlers: Mapping[str, Handler], time_scale: float, safety_net: str | None
) -> None:
    if time_scale < 0:
        raise ValueError("time_scale must be >= 0")
    if safety_net is not None and safety_net not in handlers:
        raise ValueError(f"safety net handler {safety_net!r} is not among the handlers")


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()
