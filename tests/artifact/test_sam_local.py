"""`sam local invoke` on the built authorizer, where Docker with a bridge network exists (SAM
runs the function in the Lambda base image and must reach the container). `sam local invoke`
exits 0 even when the container failed or timed out: the answer printed is what counts."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.deployed_support import ROOT

SAM_CLI_VERSION = "1.170.0"  # scripts/lint.sh's
PARAMETERS = (
    "SupabaseUrl=https://project.supabase.co DatasetPath=hub://org/dataset "
    "SupabaseServiceKeySecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:key "
    "OpenAIApiKeySecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:openai"
)


def docker_with_a_bridge() -> str | None:
    """None when `sam local` can run here, else why not (one line)."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker on PATH: sam local needs Docker"
    probe = subprocess.run(
        [docker, "network", "inspect", "bridge"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or ["no answer"])[0]
        return f"no Docker bridge network for sam local to reach its container: {said}"
    return None


def test_sam_local_invoke_runs_the_built_authorizer() -> None:
    reason = docker_with_a_bridge()
    if reason is not None:
        pytest.skip(reason)
    sam = ["uvx", "--from", f"aws-sam-cli=={SAM_CLI_VERSION}", "sam"]
    invoke = ["local", "invoke", "AuthorizerFunction", "-e", "events/authorizer.json"]
    result = subprocess.run(
        [*sam, *invoke, "--parameter-overrides", PARAMETERS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    answers = [line for line in result.stdout.splitlines() if line.startswith("{")]

    assert answers, f"no answer printed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    # The sample's token is a placeholder: refused by the authorizer, not an error.
    assert json.loads(answers[-1]) == {
        "isAuthorized": False,
        "context": {"reason": "invalid_token"},
    }
