"""template.yaml's ``BedrockBatchRole``: the service role of Bedrock batch inference jobs is
least-privilege, and what it grants is exactly where the adapter (shared/lanes/bedrock_batch.py)
puts a part's input and where Bedrock writes its output."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import Resolver, load_template, parameter_values
from shared.lanes.bedrock_batch import input_key, output_prefix
from shared.lanes.native import NativePart

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
ACCOUNT = "123456789012"
PSEUDO = {"AWS::StackName": "s", "AWS::Region": "us-east-1", "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
BUCKET_ARN = "arn:aws:s3:::s-payloadbucket"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODELS = (
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0",
)
PART = NativePart(job_id="job-20261201T020000Z-3f9a1c2e", endpoint="claude", part=7, input_key="unused", records=100)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resolve(template: dict[str, Any], value: Any, **overrides: str) -> Any:
    r = Resolver(template, parameter_values(template, overrides), PSEUDO)
    for name in template["Resources"]:
        r.refs[name] = f"s-{name}"
        r.attrs[name] = {"Arn": f"arn:aws:x:::{name}"}
    r.attrs["PayloadBucket"] = {"Arn": BUCKET_ARN}
    return r.resolve(value)


def role(template: dict[str, Any], **overrides: str) -> dict[str, Any]:
    resolved: dict[str, Any] = resolve(template, template["Resources"]["BedrockBatchRole"]["Properties"], **overrides)
    return resolved


def statements(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(props: dict[str, Any], action: str, resource: str) -> bool:
    return any(
        action in as_list(s["Action"]) and any(fnmatchcase(resource, pattern) for pattern in as_list(s["Resource"]))
        for s in statements(props)
        if s["Effect"] == "Allow"
    )


def test_only_bedrock_jobs_of_this_account_can_assume_the_role(template: dict[str, Any]) -> None:
    (trust,) = role(template)["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    assert trust["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-invocation-job/*"
    }


@pytest.mark.parametrize("overrides", [{}, {"BedrockModelArns": ",".join(MODELS), "KmsKeyArn": KEY_ARN}])
def test_no_statement_grants_every_action_or_every_resource(
    template: dict[str, Any], overrides: dict[str, str]
) -> None:
    found = statements(role(template, **overrides))
    assert len(found) >= 3
    for statement in found:
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        for action in as_list(statement["Action"]):
            assert action != "*" and not action.endswith(":*"), statement
        for resource in as_list(statement["Resource"]):
            assert resource != "*" and not resource.endswith(":*"), statement


def test_s3_access_is_the_batch_prefix_of_the_payload_bucket_and_output_writes_only(template: dict[str, Any]) -> None:
    props = role(template)
    s3 = [s for s in statements(props) if any(str(a).startswith("s3:") for a in as_list(s["Action"]))]
    assert {a for s in s3 for a in as_list(s["Action"])} == {"s3:GetObject", "s3:ListBucket", "s3:PutObject"}
    (listing,) = [s for s in s3 if "s3:ListBucket" in as_list(s["Action"])]
    assert listing["Resource"] == BUCKET_ARN
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "batch/*"}}

    # What the adapter writes and Bedrock reads and writes is granted...
    assert granted(props, "s3:GetObject", f"{BUCKET_ARN}/{input_key(PART)}")
    out = f"{BUCKET_ARN}/{output_prefix(PART)}abcdefghijkl/input.jsonl.out"
    assert granted(props, "s3:PutObject", out)
    assert granted(props, "s3:PutObject", f"{BUCKET_ARN}/{output_prefix(PART)}abcdefghijkl/manifest.json.out")
    # ...and nothing beyond: not the input, not results or dead letters, not another bucket.
    assert not granted(props, "s3:PutObject", f"{BUCKET_ARN}/{input_key(PART)}")
    assert not granted(props, "s3:GetObject", f"{BUCKET_ARN}/results/job/part-0.jsonl")
    assert not granted(props, "s3:GetObject", f"{BUCKET_ARN}/deadletters/x")
    assert not granted(props, "s3:GetObject", f"arn:aws:s3:::other-bucket/{input_key(PART)}")


def test_models_may_be_invoked_only_when_configured_and_only_those(template: dict[str, Any]) -> None:
    without = role(template)
    assert not [s for s in statements(without) if any(str(a).startswith("bedrock:") for a in as_list(s["Action"]))]

    props = role(template, BedrockModelArns=",".join(MODELS))
    (invoke,) = [s for s in statements(props) if any(str(a).startswith("bedrock:") for a in as_list(s["Action"]))]
    assert invoke["Action"] == "bedrock:InvokeModel"
    assert invoke["Resource"] == list(MODELS)


def test_a_customer_key_is_usable_only_when_given(template: dict[str, Any]) -> None:
    kms = [s for s in statements(role(template)) if any(str(a).startswith("kms:") for a in as_list(s["Action"]))]
    assert kms == []
    (key,) = [
        s
        for s in statements(role(template, KmsKeyArn=KEY_ARN))
        if any(str(a).startswith("kms:") for a in as_list(s["Action"]))
    ]
    assert key["Resource"] == KEY_ARN and set(key["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}


def test_the_stack_outputs_the_roles_arn(template: dict[str, Any]) -> None:
    value = resolve(template, template["Outputs"]["BedrockBatchRoleArn"]["Value"])
    assert value == f"arn:aws:iam::{ACCOUNT}:role/s-BedrockBatchRole"
