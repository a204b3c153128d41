"""template.yaml's Tracing and Prices parameters: tracing is off unless asked for, SAM grants
X-Ray permissions only when it is on, and the prices reach the worker's configuration."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.cost import PRICES_ENV, PriceList
from llmbatch.local.template import Resolver, function_spec, load_template, parameter_values
from shared.observability import TRACE_DISABLED_ENV, tracing_enabled

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
TEMPLATE = load_template(TEMPLATE_PATH)
FUNCTIONS = ("Worker", "DeadLetter", "LanePoller")
#: Where `make lint` installs the SAM CLI (the Makefile's SAM_VENV).
SAM_PYTHON = ROOT / os.environ.get("SAM_VENV", ".venv-sam") / "bin" / "python"
XRAY_POLICY = "AWSXrayWriteOnlyAccess"
PSEUDO = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}


def environment(function: str, **overrides: str) -> dict[str, Any]:
    """A function's variables as CloudFormation would set them for these parameter values."""
    resolver = Resolver(TEMPLATE, parameter_values(TEMPLATE, overrides), PSEUDO)
    resolver.refs = {name: name for name in TEMPLATE["Resources"]}
    variables: dict[str, Any] = resolver.resolve(function_spec(TEMPLATE, function)["Environment"]["Variables"])
    return variables


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, False), ("", False), ("true", False), ("1", False), ("false", True), ("False", True), ("0", True)],
)
def test_tracing_is_on_only_when_the_variable_says_it_is_not_disabled(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {TRACE_DISABLED_ENV: value}
    assert tracing_enabled(env) is enabled


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_functions_trace_only_when_the_tracing_parameter_is_active(function: str) -> None:
    # GIVEN / WHEN the functions' variables with the parameter's default, then Active
    default, active = environment(function), environment(function, Tracing="Active")

    # THEN by default tracing is off; Active turns it on, through the same parameter that sets
    # the functions' Tracing property
    assert TEMPLATE["Parameters"]["Tracing"]["Default"] == "Disabled"
    assert tracing_enabled(default) is False
    assert tracing_enabled(active) is True
    assert function_spec(TEMPLATE, function)["Tracing"] == {"Ref": "Tracing"}


def test_the_prices_parameter_reaches_the_worker_and_its_default_is_a_valid_price_list() -> None:
    prices = {"endpoints": {"default": {"input_per_million": 0.15, "output_per_million": 0.6}}}
    assert environment("Worker", Prices=json.dumps(prices))[PRICES_ENV] == json.dumps(prices)
    assert PriceList.from_json(environment("Worker")[PRICES_ENV]) == PriceList()


TRANSLATE = """
import json, sys
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse
validator = SamTemplateValidator(
    yaml_parse(open(sys.argv[1]).read()), None, region="us-east-1", parameter_overrides={"Tracing": sys.argv[2]}
)
resources = yaml_parse(validator.get_translated_template_if_valid())["Resources"]
print(json.dumps({
    name: {
        "tracing": resources[name]["Properties"].get("TracingConfig"),
        "policies": resources[name + "Role"]["Properties"].get("ManagedPolicyArns", []),
    }
    for name in sys.argv[3:]
}))
"""


def sam_translate(tracing: str) -> dict[str, Any]:
    """The template as SAM transforms it for this Tracing value (what CloudFormation deploys)."""
    proc = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSLATE, str(TEMPLATE_PATH), tracing, *FUNCTIONS],
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not SAM_PYTHON.exists(), reason="the SAM CLI is not installed (`make lint` installs it)")
def test_sam_grants_xray_and_active_tracing_only_when_tracing_is_active() -> None:
    # GIVEN / WHEN the template transformed by SAM with tracing Active, then Disabled
    active, disabled = sam_translate("Active"), sam_translate("Disabled")

    # THEN Active gives each function active tracing and the X-Ray write policy; Disabled
    # gives neither (Lambda's default, PassThrough, and no X-Ray permission)
    for function in FUNCTIONS:
        assert active[function]["tracing"] == {"Mode": {"Ref": "Tracing"}}
        assert any(p.endswith(f"/{XRAY_POLICY}") for p in active[function]["policies"])
        assert disabled[function]["tracing"] is None
        assert not any("xray" in p.lower() for p in disabled[function]["policies"])
