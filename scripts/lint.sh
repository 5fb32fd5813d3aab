#!/usr/bin/env bash
# Every static check, and `sam build`. The AWS tools run through uvx, pinned here and kept out
# of the project's environment (their botocore pins would fight deeplake's and moto's).
# Needs uv, make and python3.12 on PATH; no Docker, no AWS account.
set -euo pipefail
cd "$(dirname "$0")/.."

SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
STATELINT_VERSION=3.1.0
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

step() { printf '\n== %s\n' "$*"; }

step "ruff"
uv run ruff check .
uv run ruff format --check .

step "sizes (files <= 400 lines, functions <= 60 code lines)"
uv run python scripts/check_sizes.py

step "mypy"
uv run mypy

step "sam validate --lint"
uvx --from "aws-sam-cli==${SAM_CLI_VERSION}" sam validate --lint

step "cfn-lint"
uvx "cfn-lint==${CFN_LINT_VERSION}" template.yaml

step "statelint (placeholders \${...} stand where ARNs go: --ignore URI)"
uvx "statelint==${STATELINT_VERSION}" --ignore URI statemachine/training.asl.json

step "sample events match their builders"
uv run python scripts/make_events.py --check

step "sam build (no container)"
uvx --from "aws-sam-cli==${SAM_CLI_VERSION}" sam build

echo
echo "lint: all clean"
