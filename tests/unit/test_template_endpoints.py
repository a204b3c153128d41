"""Tests of template.yaml's named endpoints: the ``Endpoints`` parameter reaches the worker as
``ENDPOINTS``, and model permissions exist only for the ARNs given, resolved the way the
local stack (and CloudFormation) resolves them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import Resolver, function_spec, load_template, parameter_values

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
PSEUDO = {"AWS::StackName": "s", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
SAGEMAKER_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/llama-3-8b"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resolver(template: dict[str, Any], **overrides: str) -> Resolver:
    r = Resolver(template, parameter_values(template, overrides), PSEUDO)
    for name in template["Resources"]:  # stand-ins for what CloudFormation would create
        r.refs[name] = f"s-{name}"
        r.attrs[name] = {"Arn": f"arn:aws:x:::{name}", "QueueName": name}
    return r


def worker_statements(template: dict[str, Any], **overrides: str) -> list[dict[str, Any]]:
    policies = resolver(template, **overrides).resolve(function_spec(template, "Worker")["Policies"])
    return [s for p in policies if isinstance(p, dict) for s in p.get("Statement", [])]


def test_the_endpoints_parameter_reaches_the_worker_as_endpoints(template: dict[str, Any]) -> None:
    # GIVEN an Endpoints value, as `sam deploy --parameter-overrides` or the local stack gives it
    value = json.dumps({"claude": {"kind": "bedrock", "default_model": "anthropic.claude-3-haiku-20240307-v1:0"}})

    # WHEN the worker's environment is resolved, with it and with the default
    env = resolver(template, Endpoints=value).resolve(function_spec(template, "Worker")["Environment"])
    default_env = resolver(template).resolve(function_spec(template, "Worker")["Environment"])

    # THEN ENDPOINTS carries it unchanged, and is empty by default
    assert env["Variables"]["ENDPOINTS"] == value
    assert default_env["Variables"]["ENDPOINTS"] == ""


@pytest.mark.parametrize(
    ("parameter", "arn", "action"),
    [
        ("BedrockModelArns", MODEL_ARN, "bedrock:InvokeModel"),
        ("SageMakerEndpointArns", SAGEMAKER_ARN, "sagemaker:InvokeEndpoint"),
    ],
)
def test_model_permissions_exist_only_for_the_arns_given(
    template: dict[str, Any], parameter: str, arn: str, action: str
) -> None:
    # GIVEN the template with no ARNs (the default), and with one
    without = worker_statements(template)
    with_arn = worker_statements(template, **{parameter: arn})

    # WHEN / THEN no statement grants the action by default; with the ARN, exactly that ARN
    assert not [s for s in without if action in json.dumps(s)]
    granted = [s for s in with_arn if action in json.dumps(s)]
    assert len(granted) == 1
    assert granted[0]["Action"] == action
    assert granted[0]["Resource"] == [arn]


def test_named_endpoints_keys_are_readable_only_when_listed(template: dict[str, Any]) -> None:
    # GIVEN the template with no key ARNs (the default), and with a secret and a parameter
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llmbatch/vllm-key-AbCdEf"
    parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/llmbatch/ollama-key"
    without = worker_statements(template)
    with_keys = worker_statements(template, EndpointKeyArns=f"{secret},{parameter}")

    # WHEN / THEN no statement reads endpoint keys by default; with them, exactly those ARNs
    assert not [s for s in without if s.get("Sid") == "ReadEndpointKeys"]
    (granted,) = [s for s in with_keys if s.get("Sid") == "ReadEndpointKeys"]
    assert granted["Action"] == ["secretsmanager:GetSecretValue", "ssm:GetParameter"]
    assert granted["Resource"] == [secret, parameter]
