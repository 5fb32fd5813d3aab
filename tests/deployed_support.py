"""What `sam build` produced, run as Lambda runs it: a built handler imported in a fresh isolated
interpreter (`python3.12 -I -S -B`) whose `sys.path` holds exactly the function's folder, its
layers' `python/` folders in the template's order and the runtime's boto3, with the template's
environment and tracing on.

`-B` stands for Lambda's read-only `/var/task` and `/opt`: Python can write no bytecode there, so
a module without a shipped `.pyc` is compiled again on every cold start. Shared by
`tests/artifact/` and `bench/coldstart.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".aws-sam" / "build"

#: boto3 as a Lambda Python 3.12 runtime ships it. The runtime's version moves with AWS's
#: updates and differs by region; 1.40.61 is a recent one, and the one uv.lock resolves (inside
#: the heavy layer's aiobotocore pin, botocore <1.40.62), so the heavy functions, which ship their
#: own botocore, and the API functions, which use the runtime's, see the same version.
RUNTIME_BOTO3_VERSION = "1.40.61"
#: Where that boto3 is installed (gitignored, beside the build; `sam build` leaves it alone).
RUNTIME_SDK = ROOT / ".aws-sam" / "runtime-sdk" / f"boto3-{RUNTIME_BOTO3_VERSION}"

REGION = "us-east-1"
ACCOUNT = "123456789012"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !GetAtt, !Sub...) as `{"Fn": value}`."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


@cache
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return loaded


@dataclass(frozen=True)
class DeployedFunction:
    logical_id: str
    folder: Path  # .aws-sam/build/<LogicalId>
    layers: tuple[Path, ...]  # .aws-sam/build/<Layer>/python, in the template's order
    handler: str  # app.handler
    environment: dict[str, str]  # the template's, placeholders filled with dummies
    memory_mb: int

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]


def _value(value: Any, parameters: dict[str, Any], given: dict[str, str] | None = None) -> str:
    """A template value as a string: what `given` says for a `Ref`/`GetAtt` target (a
    parameter, a resource, `Resource.Attribute`, a pseudo parameter), else a plausible dummy
    (parameter defaults included)."""
    given = given or {}
    if isinstance(value, str | int | float):
        return str(value)
    ((kind, arg),) = value.items()
    if kind == "Fn::GetAtt":
        arg = arg if isinstance(arg, str) else ".".join(arg)
        return given.get(arg, f"bench-{arg}")
    if kind == "Ref":
        if arg in given:
            return given[arg]
        if arg in parameters:
            return _parameter_dummy(arg, parameters[arg])
        if arg == "AWS::Region":
            return REGION
        if arg == "AWS::AccountId":
            return ACCOUNT
        if arg == "AWS::Partition":
            return "aws"
        if arg.endswith("StateMachine"):
            return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:bench-training"
        return f"bench-{arg}"
    if kind == "Fn::Sub":
        text = arg if isinstance(arg, str) else arg[0]
        return re.sub(
            r"\$\{([^}]+)\}", lambda m: _value({"Ref": m.group(1)}, parameters, given), text
        )
    return f"bench-{kind}"


def _parameter_dummy(name: str, spec: dict[str, Any]) -> str:
    if "Default" in spec:
        return str(spec["Default"])
    pattern = str(spec.get("AllowedPattern", ""))
    if "secretsmanager" in pattern:
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bench-{name}"
    if pattern.startswith("^https://"):
        return "https://bench.supabase.co"
    return f"bench-{name}"


def function_folders() -> dict[str, str]:
    """`functions/<folder>/` → the template's logical id of that function."""
    return {
        PurePosixPath(resource["Properties"]["CodeUri"]).name: logical_id
        for logical_id, resource in template()["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def target_of(sample: str) -> str:
    """The function a sample event of `events/` is for: its name starts with the folder's."""
    folders = function_folders()
    (folder,) = [f for f in folders if sample == f or sample.startswith(f"{f}_")]
    return folders[folder]


def resolve(value: Any, given: dict[str, str] | None = None) -> str:
    """One template value, its references filled from `given` (see `_value`)."""
    return _value(value, template().get("Parameters", {}), given)


def deployed_functions(
    build: Path = BUILD, given: dict[str, str] | None = None
) -> list[DeployedFunction]:
    """Every function of template.yaml, as `sam build` laid it out in `build`, its environment
    resolved with `given` (parameters, resources, attributes; dummies for the rest)."""
    tpl = template()
    parameters = tpl.get("Parameters", {})
    globals_ = tpl.get("Globals", {}).get("Function", {})
    found = []
    for logical_id, resource in tpl["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        # Globals' layers come first, the function's own after them (SAM's merge).
        refs = [*globals_.get("Layers", []), *props.get("Layers", [])]
        layers = tuple(build / ref["Ref"] / "python" for ref in refs)
        variables = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        found.append(
            DeployedFunction(
                logical_id=logical_id,
                folder=build / logical_id,
                layers=layers,
                handler=props.get("Handler", globals_.get("Handler", "app.handler")),
                environment={k: _value(v, parameters, given) for k, v in variables.items()},
                memory_mb=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
            )
        )
    return found


def lambda_environment(function: DeployedFunction, sdk: Path) -> dict[str, str]:
    """The template's variables plus what Lambda sets, with active tracing and no daemon.

    Tracing stays on (no POWERTOOLS_TRACE_DISABLED): Powertools' Tracer is enabled when
    AWS_LAMBDA_FUNCTION_NAME is set and AWS_SAM_LOCAL is not. The X-Ray SDK sends segments over
    UDP and only when one ends, which an import never does: no daemon is needed, and no
    _X_AMZN_TRACE_ID (Lambda sets it per invocation, not during Init)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]bench",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "LAMBDA_TASK_ROOT": str(function.folder),
        "LAMBDA_RUNTIME_DIR": str(sdk),
        "_HANDLER": function.handler,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        **function.environment,
    }


def python312() -> str:
    """The real python3.12 executable (not a pyenv shim, whose start-up would be timed too)."""
    found = shutil.which("python3.12")
    if found is None:
        raise RuntimeError("python3.12 is not on PATH (Lambda's runtime is Python 3.12)")
    out = subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def runtime_sdk(offline: bool = False) -> Path:
    """boto3 as the runtime ships it (installed once; bytecode compiled, as the runtime's own
    packages are not on a read-only path anyone could write .pyc to)."""
    marker = RUNTIME_SDK / f"boto3-{RUNTIME_BOTO3_VERSION}.dist-info"
    if marker.is_dir():
        return RUNTIME_SDK
    command = [
        "uv",
        "pip",
        "install",
        "--quiet",
        "--target",
        str(RUNTIME_SDK),
        "--python-version",
        "3.12",
        "--python-platform",
        "x86_64-manylinux_2_28",
        "--compile-bytecode",
        # The runtime ships botocore of boto3's own version (boto3 alone would pull the newest).
        f"boto3=={RUNTIME_BOTO3_VERSION}",
        f"botocore=={RUNTIME_BOTO3_VERSION}",
    ]
    if offline:
        command.insert(3, "--offline")
    subprocess.run(command, check=True, cwd=ROOT)
    return RUNTIME_SDK


def sys_path(function: DeployedFunction, sdk: Path) -> list[str]:
    """Lambda's order: the function, its layers (/opt/python), the runtime's packages."""
    return [str(function.folder), *(str(p) for p in function.layers), str(sdk)]


def run_deployed(
    function: DeployedFunction,
    code: str,
    sdk: Path,
    *,
    python: str | None = None,
    options: tuple[str, ...] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `code` as the function's process would: isolated, no bytecode written, the
    function's environment, `sys.path` set to its folders before `code` runs."""
    prelude = f"import sys\nsys.path[:0] = {json.dumps(sys_path(function, sdk))}\n"
    return subprocess.run(
        [python or python312(), "-I", "-S", "-B", *options, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=lambda_environment(function, sdk),
        cwd=function.folder,
        check=False,
    )


#: Imports the handler module as Lambda's bootstrap does, and says what it cost.
IMPORT_PROBE = """
import importlib, json, time
before = set(sys.modules)
started, cpu = time.perf_counter(), time.process_time()
module = importlib.import_module({module!r})
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
handler = getattr(module, {name!r})
print(json.dumps({{
    "seconds": seconds,
    "cpu_seconds": cpu,
    "callable": callable(handler),
    "modules": sorted(set(sys.modules) - before),
}}))
"""


def import_probe(function: DeployedFunction) -> str:
    module, name = function.handler.rsplit(".", 1)
    return IMPORT_PROBE.format(module=module, name=name)


def parse_probe(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if result.returncode != 0:
        raise RuntimeError(f"the built handler failed to import:\n{result.stderr[-4000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed
