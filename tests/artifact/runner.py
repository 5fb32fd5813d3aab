"""A built function kept alive as Lambda keeps a warm container: one isolated interpreter
(`python3.12 -I -S -B`, `sys.path` = the function's folder, its layers, the runtime's boto3; the
template's environment) that imports the handler once (its Init) and then answers invocations
read from stdin, one JSON line each, on a result pipe of its own.

The function's own output (Powertools' JSON log lines, print) goes to stderr, kept here line by
line, as CloudWatch keeps a function's logs. One invocation at a time, as in one container.
"""

from __future__ import annotations

import json
import select
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deployed_support import DeployedFunction, lambda_environment, python312, sys_path

#: Runs inside the function's interpreter, after `sys.path` is set. An error at import is the
#: Init error Lambda reports on every invocation (`Runtime.ImportModuleError`, the module named).
_RUNNER = """
import importlib, json, os, time, traceback, uuid
import botocore.client
calls = []
_make_api_call = botocore.client.BaseClient._make_api_call
def _recorded(client, operation, params):
    # What IAM would be asked: the service's IAM prefix, the operation, the resource's names.
    model = client.meta.service_model
    named = {{k: v for k, v in params.items() if isinstance(v, str) and k in {resources!r}}}
    calls.append({{"service": model.signing_name, "operation": operation, "params": named}})
    return _make_api_call(client, operation, params)
botocore.client.BaseClient._make_api_call = _recorded
results = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # the function's stdout (its logs) joins stderr: results alone use the pipe
init_error = None
try:
    module = importlib.import_module({module!r})
    handler = getattr(module, {name!r})
except Exception as exc:
    init_error = {{
        "errorType": "Runtime.ImportModuleError",
        "errorMessage": f"Unable to import module {module!r}: {{type(exc).__name__}}: {{exc}}",
        "stackTrace": traceback.format_exception(exc)[-8:],
    }}

class Context:
    function_name = {function!r}
    function_version = "$LATEST"
    memory_limit_in_mb = {memory}
    invoked_function_arn = {arn!r}
    log_group_name = "/aws/lambda/" + {function!r}
    log_stream_name = "2026/01/01/[$LATEST]artifact"
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + {timeout}
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

results.write(json.dumps({{"ready": init_error is None, "init_error": init_error}}) + "\\n")
for line in iter(sys.stdin.readline, ""):
    event = json.loads(line)
    # Lambda sets the trace header per invocation.
    os.environ["_X_AMZN_TRACE_ID"] = (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    calls.clear()
    if init_error is not None:
        reply = init_error
    else:
        try:
            reply = {{"result": handler(event, Context())}}
        except Exception as exc:
            reply = {{
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exception(exc)[-8:],
            }}
    sys.stdout.flush()
    reply["calls"] = calls
    try:
        results.write(json.dumps(reply) + "\\n")
    except (TypeError, ValueError) as exc:
        marshal = {{"errorType": "Runtime.MarshalError", "errorMessage": str(exc)}}
        results.write(json.dumps(marshal) + "\\n")
"""


#: The request parameters that name the resource an AWS call acts on (what IAM checks).
RESOURCE_PARAMETERS = ("SecretId", "Name", "stateMachineArn", "executionArn", "Bucket", "Key")


@dataclass(frozen=True)
class AwsCall:
    service: str  # IAM's prefix: states, secretsmanager, s3, ssm
    operation: str
    params: dict[str, str]


@dataclass(frozen=True)
class Invocation:
    """What one invocation gave: the handler's return value, or Lambda's error payload."""

    function: str
    result: Any = None
    error: dict[str, Any] | None = None
    logs: tuple[str, ...] = ()
    calls: tuple[AwsCall, ...] = ()

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))

    def value(self) -> Any:
        """The result, or an AssertionError naming the function and its error."""
        if self.error is not None:
            raise AssertionError(f"{self.function} raised {_describe(self.error)}")
        return self.result


def _describe(error: dict[str, Any]) -> str:
    trace = "".join(error.get("stackTrace") or [])
    return f"{error.get('errorType')}: {error.get('errorMessage')}\n{trace}"


class BuiltFunction:
    """One warm instance of a built function. `invoke(event)` → `Invocation`."""

    def __init__(
        self,
        function: DeployedFunction,
        sdk: Path,
        environment: dict[str, str],
        *,
        timeout_seconds: float = 900.0,
    ) -> None:
        self.function = function
        self.name = function.logical_id
        self._lock = threading.Lock()
        self._logs: list[str] = []
        self._logs_lock = threading.Lock()
        module, name = function.handler.rsplit(".", 1)
        code = _RUNNER.format(
            resources=RESOURCE_PARAMETERS,
            module=module,
            name=name,
            function=self.name,
            memory=function.memory_mb,
            arn=f"arn:aws:lambda:us-east-1:123456789012:function:{self.name}",
            timeout=timeout_seconds,
        )
        prelude = f"import sys\nsys.path[:0] = {json.dumps(sys_path(function, sdk))}\n"
        self._process = subprocess.Popen(
            [python312(), "-I", "-S", "-B", "-c", prelude + code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**lambda_environment(function, sdk), **environment},
            cwd=function.folder,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        ready = self._read_reply()
        self.init_ok = bool(ready.get("ready"))
        #: Lambda's Init error ("Unable to import module 'app': ..."), None when it started.
        self.init_error: str | None = None
        if not self.init_ok:
            self.init_error = _describe(ready["init_error"])

    def _read_logs(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            with self._logs_lock:
                self._logs.append(line.rstrip("\n"))

    def _read_reply(self, timeout: float = 300.0) -> dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not ready:
            self._process.kill()
            self._process.wait(timeout=10)
            raise AssertionError(
                f"{self.name} gave no answer in {timeout} s:\n" + "\n".join(self.logs()[-40:])
            )
        line = self._process.stdout.readline()
        if not line:
            self._process.wait(timeout=10)
            raise AssertionError(
                f"{self.name} exited ({self._process.returncode}):\n" + "\n".join(self.logs()[-40:])
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    def logs(self) -> list[str]:
        with self._logs_lock:
            return list(self._logs)

    def invoke(self, event: dict[str, Any], timeout: float = 300.0) -> Invocation:
        with self._lock:
            before = len(self.logs())
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(event) + "\n")
            self._process.stdin.flush()
            reply = self._read_reply(timeout)
            logs = tuple(self.logs()[before:])
        calls = tuple(AwsCall(**call) for call in reply.pop("calls", []))
        if "result" in reply:
            return Invocation(self.name, result=reply["result"], logs=logs, calls=calls)
        return Invocation(self.name, error=reply, logs=logs, calls=calls)

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._reader.join(timeout=5)
