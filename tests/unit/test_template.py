"""Tests of template.yaml: the settings the design depends on, least privilege, no secrets in
plain text, and a clean cfn-lint run. The template is read the way the local stack reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import function_spec, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
SQS_EVENT_MAX_CONCURRENCY_MIN = 2  # AWS's lowest accepted ScalingConfig.MaximumConcurrency
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Serverless function, with Globals.Function merged in."""
    return {name: function_spec(template, name) for name in resources_of(template, "AWS::Serverless::Function")}


def ref_target(value: Any) -> str:
    """The logical id behind ``!Ref X`` or ``!GetAtt X.Attr``."""
    assert isinstance(value, dict) and len(value) == 1, value
    ((fn, arg),) = value.items()
    if fn == "Ref":
        return str(arg)
    if fn == "Fn::GetAtt":
        return str(arg[0])
    raise AssertionError(f"not a reference: {value}")


def parameter_bounds(template: dict[str, Any], value: Any) -> tuple[int, int]:
    """(Default, MinValue) of the parameter a ``!Ref`` names, or (value, value) for a literal."""
    if isinstance(value, dict):
        param = template["Parameters"][ref_target(value)]
        return int(param["Default"]), int(param["MinValue"])
    return int(value), int(value)


def worker_sqs_event(template: dict[str, Any]) -> dict[str, Any]:
    """The worker's event source on the normal-priority queue (the others are checked
    against it in test_template_priority.py)."""
    events = functions(template)["Worker"]["Events"]
    sqs = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    (normal,) = [e for e in sqs if ref_target(e["Queue"]) == "RequestQueue"]
    return normal


def statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement (a mapping with Action or Resource) anywhere below ``node``."""
    if isinstance(node, dict):
        if "Action" in node or "Resource" in node or "NotAction" in node or "NotResource" in node:
            yield node
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from statements(value)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------
# Queue and event source
# --------------------------------------------------------------------------------------------


def test_the_request_queue_hides_messages_for_at_least_six_worker_timeouts(template: dict[str, Any]) -> None:
    # GIVEN the queue the worker reads, and the worker's Timeout (from Globals)
    event = worker_sqs_event(template)
    queue = template["Resources"][ref_target(event["Queue"])]["Properties"]
    worker_timeout = int(functions(template)["Worker"]["Timeout"])

    # WHEN / THEN the visibility timeout is at least six times it (AWS's advice for SQS sources)
    assert worker_timeout > 0
    assert int(queue["VisibilityTimeout"]) >= 6 * worker_timeout


def test_the_request_queue_dead_letters_after_at_least_five_receives(template: dict[str, Any]) -> None:
    # GIVEN the queue the worker reads
    queue = template["Resources"][ref_target(worker_sqs_event(template)["Queue"])]["Properties"]

    # WHEN / THEN it has a redrive policy to a queue of this stack, after 5 or more receives by
    # default (the MaxAttempts parameter, which the worker counts its calls against too)
    policy = queue["RedrivePolicy"]
    default, _ = parameter_bounds(template, policy["maxReceiveCount"])
    assert default >= 5
    assert functions(template)["Worker"]["Environment"]["Variables"]["MAX_ATTEMPTS"] == policy["maxReceiveCount"]
    dlq = ref_target(policy["deadLetterTargetArn"])
    assert template["Resources"][dlq]["Type"] == "AWS::SQS::Queue"


def test_the_worker_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the worker's SQS event source
    event = worker_sqs_event(template)

    # THEN failed records alone go back to the queue
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]


def test_the_worker_takes_big_batches_with_a_batching_window(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the worker's SQS event source
    event = worker_sqs_event(template)
    default, lowest = parameter_bounds(template, event["BatchSize"])
    highest = int(template["Parameters"][ref_target(event["BatchSize"])]["MaxValue"])
    window = int(event["MaximumBatchingWindowInSeconds"])

    # THEN every batch size the parameter allows is within SQS's range, and above 10 it has
    # the window AWS requires
    assert 1 <= lowest <= default <= highest <= 10_000
    assert 0 <= window <= 300
    if highest > 10:
        assert window >= 1


def test_the_worker_event_source_concurrency_is_valid_for_aws(template: dict[str, Any]) -> None:
    # GIVEN the event source's maximum concurrency (a parameter reference)
    value = worker_sqs_event(template)["ScalingConfig"]["MaximumConcurrency"]

    # WHEN it is resolved to the parameter's default and lowest allowed value
    default, lowest = parameter_bounds(template, value)

    # THEN neither can go below AWS's minimum of 2
    assert default >= SQS_EVENT_MAX_CONCURRENCY_MIN
    assert lowest >= SQS_EVENT_MAX_CONCURRENCY_MIN


# --------------------------------------------------------------------------------------------
# Tables and functions
# --------------------------------------------------------------------------------------------


def test_every_table_is_on_demand_encrypted_and_recoverable(template: dict[str, Any]) -> None:
    # GIVEN every DynamoDB table of the stack
    tables = resources_of(template, "AWS::DynamoDB::Table")
    assert {"JobsTable", "ResultsTable"} <= set(tables)

    # WHEN / THEN each is pay-per-request, encrypted at rest and has point-in-time recovery
    for name, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
        assert props["SSESpecification"]["SSEEnabled"] is True, name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name


def test_every_function_and_layer_runs_the_python_runtime_parameter(template: dict[str, Any]) -> None:
    # GIVEN every function (Globals merged) and layer, and the PythonRuntime parameter
    specs = functions(template)
    layers = resources_of(template, "AWS::Serverless::LayerVersion")
    runtime = template["Parameters"]["PythonRuntime"]
    assert specs and layers

    # WHEN / THEN all take their Python from it: 3.11 by default, 3.12 and 3.13 as Lambda offers them
    assert runtime["Default"] == "python3.11"
    assert runtime["AllowedValues"] == ["python3.11", "python3.12", "python3.13"]
    assert {name: spec["Runtime"] for name, spec in specs.items()} == {name: {"Ref": "PythonRuntime"} for name in specs}
    for name, layer in layers.items():
        assert layer["Properties"]["CompatibleRuntimes"] == [{"Ref": "PythonRuntime"}], name


def test_no_iam_statement_grants_every_action_or_every_resource(template: dict[str, Any]) -> None:
    # GIVEN every statement of every function's Policies (inline, policy templates, conditional)
    found = [(name, s) for name, spec in functions(template).items() for s in statements(spec.get("Policies", []))]
    assert len(found) >= 3  # the walk reaches the inline statements

    # WHEN / THEN none allows "*" or "service:*", nor applies to every resource
    for name, statement in found:
        for action in as_list(statement.get("Action", [])):
            assert action != "*" and not str(action).endswith(":*"), (name, statement)
        for resource in as_list(statement.get("Resource", [])):
            assert resource != "*", (name, statement)
        assert "NotAction" not in statement and "NotResource" not in statement, (name, statement)


def test_no_function_uses_a_full_access_managed_policy(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the managed policies named as plain strings
    named = [p for spec in functions(template).values() for p in spec.get("Policies", []) if isinstance(p, str)]

    # THEN none is an AWS "FullAccess" or administrator policy
    assert not [p for p in named if "FullAccess" in p or "Administrator" in p]


def test_no_secret_is_set_as_a_plain_text_environment_variable(template: dict[str, Any]) -> None:
    # GIVEN every environment variable of every function (Globals merged)
    env = {
        (fn, var): value
        for fn, spec in functions(template).items()
        for var, value in spec["Environment"]["Variables"].items()
    }
    assert ("Worker", "ENDPOINT_API_KEY_REF") in env

    # WHEN / THEN any variable named like a secret holds a reference (an intrinsic), never a literal
    for (fn, var), value in env.items():
        if any(word in var.upper() for word in SECRET_WORDS):
            assert not (isinstance(value, str) and value), f"{fn}.{var} holds a literal: {value!r}"


# --------------------------------------------------------------------------------------------
# cfn-lint
# --------------------------------------------------------------------------------------------


def test_cfn_lint_finds_nothing_in_the_template() -> None:
    # GIVEN the cfn-lint pinned in pyproject.toml, from this interpreter's environment (not
    # whatever is first on PATH: an older cfn-lint carries older Lambda runtime dates)
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "cfnlint"]

    # WHEN it checks the template
    proc = subprocess.run(
        [*command, str(TEMPLATE_PATH)],
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # THEN it reports no error and no warning
    assert proc.returncode == 0, proc.stdout + proc.stderr
