"""moto's Step Functions interpreter, bent to run the deployed ASL in this process: the AWS mock
and four patches of moto's internals. `arn:aws:states:::lambda:invoke` reaches moto's
`LambdaFunction.invoke` (normally Docker), patched to call a Python callable instead; the
retrier's `time.sleep` and `WaitFunction._wait_interval` are scaled by `time_scale` (0 = not
slept at all); `arn:aws:states:::states:startExecution` (the generation's handover) gets its
parameters in boto3's spelling, which moto 5.2.5 omits (it passes `StateMachineArn` as the
ASL names it, and botocore, told not to validate, fails on it with a KeyError).
`deepmem.local.workflow.LocalWorkflow` drives it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
import types
from collections.abc import Callable
from typing import Any
from unittest import mock

from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (  # noqa: E501
    StateTaskServiceSfn,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)

#: The moto release whose interpreter internals (the patched `LambdaFunction.invoke`, the
#: retrier's `time.sleep`, `WaitFunction._wait_interval`) this adapter was verified against.
VERIFIED_MOTO_VERSION = "5.2.5"

_INTERPRETER_LOGGER = "moto.stepfunctions.parser.asl.component.eval_component"

#: `call(function name, event)`: what an invocation of that Lambda function returns.
FunctionCall = Callable[[str, dict[str, Any]], Any]


class MotoInterpreter:
    """The AWS mock and the patches, process-wide from `start()` to `stop()`."""

    def __init__(self, call: FunctionCall, *, time_scale: float, interpreter_logs: bool) -> None:
        self._interpreter_logs = interpreter_logs
        self._log = logging.getLogger(_INTERPRETER_LOGGER)
        self._log_level = self._log.level
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._patches: list[Any] = [
            mock.patch.object(LambdaFunction, "invoke", make_invoke(call)),
            mock.patch.object(retrier_decl, "time", make_retry_clock(time_scale)),
            mock.patch.object(WaitFunction, "_wait_interval", make_wait(time_scale)),
            mock.patch.object(
                StateTaskServiceSfn,
                "_eval_service_task",
                boto_spelling(StateTaskServiceSfn._eval_service_task),
            ),
        ]

    def start(self) -> None:
        if not self._interpreter_logs:
            # moto logs every failed state at ERROR, retried ones too; the execution
            # history and record_failure's logs already tell that story.
            self._log.setLevel(logging.CRITICAL)
        self._mock.start()
        for patch in self._patches:
            patch.start()

    def stop(self) -> None:
        """Undo what `start` did, as far as it got."""
        for patch in reversed(self._patches):
            with contextlib.suppress(RuntimeError):  # never started
                patch.stop()
        with contextlib.suppress(RuntimeError):
            self._mock.stop()
        self._log.setLevel(self._log_level)


def make_invoke(call: FunctionCall) -> Callable[..., bytes]:
    """`LambdaFunction.invoke`, answering as the Lambda service does with what `call` returns
    or raises."""

    def invoke(fn: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> bytes:
        event = json.loads(body) if body else {}
        try:
            result = call(fn.function_name, event)
        except Exception as exc:  # every error goes back as Lambda's would
            return function_error(response_headers, type(exc).__name__, exc)
        try:
            return json.dumps(result).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return function_error(response_headers, "Runtime.MarshalError", exc)

    return invoke


def make_retry_clock(scale: float) -> types.SimpleNamespace:
    """The retrier's `time` module: its sleeps scaled by `scale`."""

    def sleep(seconds: float) -> None:
        if seconds > 0 and scale > 0:
            time.sleep(seconds * scale)

    return types.SimpleNamespace(sleep=sleep, time=time.time)


def make_wait(scale: float) -> Callable[..., None]:
    """`WaitFunction._wait_interval`, its wait scaled by `scale`."""

    def wait_interval(_self: WaitFunction, env: Any, wait_seconds: int) -> None:
        # The program-state event is set on stop, so a stopped execution stops waiting.
        if wait_seconds > 0 and scale > 0:
            env.program_state_event.wait(wait_seconds * scale)

    return wait_interval


def boto_spelling(evaluate: Callable[..., Any]) -> Callable[..., Any]:
    """`StateTaskServiceSfn._eval_service_task` with the ASL's parameter names (`StateMachineArn`,
    `Name`, `Input`) spelled as boto3's Step Functions client takes them."""

    def eval_service_task(
        self: StateTaskServiceSfn,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> Any:
        spelled = {key[:1].lower() + key[1:]: value for key, value in normalised_parameters.items()}
        return evaluate(self, env, resource_runtime_part, spelled, state_credentials)

    return eval_service_task


def function_error(response_headers: Any, error_type: str, exc: BaseException) -> bytes:
    """The payload and header the Lambda service answers for a function that raised."""
    response_headers["x-amz-function-error"] = "Unhandled"
    payload = {
        "errorType": error_type,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc)[-5:],
    }
    return json.dumps(payload).encode("utf-8")
