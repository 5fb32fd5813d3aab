"""What a function's role allows, read from template.yaml (its `Policies`: SAM policy templates
and inline statements, references resolved as the stack resolves them), and whether an AWS call
a built function made is allowed. The loopback AWS grants everything; this is the check the real
one would make."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from tests.artifact.runner import AwsCall
from tests.deployed_support import resolve, template

#: SAM's policy templates the template uses, as SAM expands them (policy_templates.json):
#: actions, and resources with `{Parameter}` where the template's argument goes.
POLICY_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "AWSSecretsManagerGetSecretValuePolicy": (
        ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"),
        ("{SecretArn}",),
    ),
    "S3CrudPolicy": (
        (
            "s3:GetObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:PutObjectAcl",
            "s3:GetLifecycleConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:DeleteObject",
        ),
        ("arn:aws:s3:::{BucketName}", "arn:aws:s3:::{BucketName}/*"),
    ),
    "LambdaInvokePolicy": (
        ("lambda:InvokeFunction",),
        ("arn:aws:lambda:us-east-1:123456789012:function:{FunctionName}*",),
    ),
}

#: API operations whose IAM action has another name (the rest: `<prefix>:<Operation>`).
ACTION_OF = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
}


@dataclass(frozen=True)
class Statement:
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, action: str, resource: str) -> bool:
        return any(fnmatchcase(action, a) for a in self.actions) and any(
            fnmatchcase(resource, r) for r in self.resources
        )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions(given: dict[str, str]) -> dict[str, bool]:
    """The template's conditions the functions use, from the given parameter values."""
    token = given.get("ActiveloopTokenSecretArn", "")
    return {"HasActiveloopToken": token != ""}


def _policy(policy: Any, given: dict[str, str]) -> list[Statement]:
    if isinstance(policy, dict) and "Fn::If" in policy:
        condition, when_true, when_false = policy["Fn::If"]
        chosen = when_true if _conditions(given)[condition] else when_false
        return [] if chosen == {"Ref": "AWS::NoValue"} else _policy(chosen, given)
    if isinstance(policy, dict) and "Statement" in policy:
        return [
            Statement(
                tuple(_listed(s["Action"])),
                tuple(resolve(r, given) for r in _listed(s["Resource"])),
            )
            for s in policy["Statement"]
            if s.get("Effect", "Allow") == "Allow"
        ]
    ((name, arguments),) = policy.items()
    if name not in POLICY_TEMPLATES:
        raise KeyError(f"policy template {name} is not known here: add its expansion")
    actions, resources = POLICY_TEMPLATES[name]
    values = {key: resolve(value, given) for key, value in arguments.items()}
    return [Statement(actions, tuple(r.format(**values) for r in resources))]


def statements(logical_id: str, given: dict[str, str]) -> list[Statement]:
    """Every Allow of the function's role."""
    props = template()["Resources"][logical_id]["Properties"]
    return [s for policy in props.get("Policies", []) for s in _policy(policy, given)]


def action_and_resource(call: AwsCall) -> tuple[str, str]:
    action = ACTION_OF.get((call.service, call.operation), f"{call.service}:{call.operation}")
    p = call.params
    if call.service == "s3":
        key = p.get("Key")
        return action, f"arn:aws:s3:::{p['Bucket']}" + (f"/{key}" if key else "")
    resource = p.get("SecretId") or p.get("executionArn") or p.get("stateMachineArn")
    return action, str(resource or p.get("Name") or "*")


def refused(logical_id: str, calls: tuple[AwsCall, ...], given: dict[str, str]) -> list[str]:
    """The calls the function's role does not allow, as "action on resource"."""
    allowed = statements(logical_id, given)
    missing = []
    for call in calls:
        action, resource = action_and_resource(call)
        if not any(s.allows(action, resource) for s in allowed):
            missing.append(f"{action} on {resource}")
    return missing
