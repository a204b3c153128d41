"""template.yaml's optional VPC, as SAM transforms it after CloudFormation's language
extensions (the template's first transform): the functions join a VPC, and SAM attaches its
VPC access policy (ENI actions on every resource), only when SubnetIds and SecurityGroupIds
are given. SAM alone would attach that policy to every stack (aws/serverless-application-model#3502)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
FUNCTIONS = ("Worker", "DeadLetter", "Notifier", "LanePoller")
#: Where `make lint` installs the SAM CLI (the Makefile's SAM_VENV).
SAM_PYTHON = ROOT / os.environ.get("SAM_VENV", ".venv-sam") / "bin" / "python"
VPC_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"

# language_extensions_enabled: the SAM CLI's copy of CloudFormation's AWS::LanguageExtensions,
# which runs before the SAM transform as it does on deploy.
TRANSLATE = """
import json, sys
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse
validator = SamTemplateValidator(
    yaml_parse(open(sys.argv[1]).read()), None, region="us-east-1",
    parameter_overrides=json.loads(sys.argv[2]), language_extensions_enabled=True,
)
resources = yaml_parse(validator.get_translated_template_if_valid())["Resources"]
print(json.dumps({
    name: {
        "vpc": resources[name]["Properties"].get("VpcConfig"),
        "policies": resources[name + "Role"]["Properties"].get("ManagedPolicyArns", []),
    }
    for name in sys.argv[3:]
}))
"""


def sam_translate(**overrides: str) -> dict[str, Any]:
    """The functions and their roles as CloudFormation would deploy them for these parameters."""
    proc = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSLATE, str(TEMPLATE_PATH), json.dumps(overrides), *FUNCTIONS],
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def translated() -> dict[str, dict[str, Any]]:
    return {
        "default": sam_translate(),
        "vpc": sam_translate(SubnetIds="subnet-1,subnet-2", SecurityGroupIds="sg-1"),
    }


@pytest.mark.parametrize("function", FUNCTIONS)
def test_by_default_no_function_is_in_a_vpc_nor_may_manage_network_interfaces(
    translated: dict[str, dict[str, Any]], function: str
) -> None:
    # GIVEN / WHEN the function and its role with the default (empty) SubnetIds and SecurityGroupIds
    default = translated["default"][function]

    # THEN it has no VpcConfig, and its role no VPC access policy
    assert default["vpc"] is None
    assert VPC_POLICY not in default["policies"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_with_subnets_and_groups_the_function_runs_in_the_vpc(
    translated: dict[str, dict[str, Any]], function: str
) -> None:
    # GIVEN / WHEN the function and its role with two subnets and a security group
    in_vpc = translated["vpc"][function]

    # THEN it runs in them, and SAM gives its role what Lambda needs for the network interfaces
    assert in_vpc["vpc"] == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert VPC_POLICY in in_vpc["policies"]
