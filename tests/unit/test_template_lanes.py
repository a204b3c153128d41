"""The LanePoller function in template.yaml: its schedule (from LanePollMinutes, and what
the local stack runs of it) and its least-privilege IAM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import DEFAULT_TEMPLATE, Schedule, provision_stack, schedule_period_s
from llmbatch.local.template import Resolver, function_spec, load_template, parameter_values

PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws", "AWS::StackName": "s"}
MODEL = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
JOBS = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/*"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(DEFAULT_TEMPLATE)


def poller(template: dict[str, Any], **overrides: str) -> dict[str, Any]:
    r = Resolver(template, parameter_values(template, overrides), PSEUDO)
    for name in template["Resources"]:
        r.refs[name] = f"s-{name}"
        r.attrs[name] = {"Arn": f"arn:aws:x:::{name}"}
    resolved: dict[str, Any] = r.resolve(function_spec(template, "LanePoller"))
    return resolved


def statements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in spec["Policies"] if isinstance(p, dict) for s in p.get("Statement", [])]


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def test_the_poller_runs_on_a_schedule_from_its_parameter(template: dict[str, Any]) -> None:
    events = poller(template, LanePollMinutes="5")["Events"]
    assert events == {
        "Poll": {
            "Type": "ScheduleV2",
            "Properties": {"ScheduleExpression": "rate(5 minutes)", "Description": "Runs the lane poller."},
        }
    }
    assert template["Parameters"]["LanePollMinutes"]["MinValue"] >= 2  # "rate(1 minutes)" is not a rate


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(2 minutes)", 120.0), ("rate(1 minute)", 60.0), ("rate(1 hour)", 3600.0), ("cron(0 12 * * ? *)", None)],
)
def test_schedule_periods(expression: str, seconds: float | None) -> None:
    assert schedule_period_s(expression) == seconds


def test_without_bedrock_models_the_poller_gets_no_bedrock_or_pass_role(template: dict[str, Any]) -> None:
    actions = {a for s in statements(poller(template)) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith(("bedrock:", "iam:"))}


def test_bedrock_batch_is_scoped_to_the_models_the_jobs_and_the_one_role(template: dict[str, Any]) -> None:
    spec = poller(template, BedrockModelArns=MODEL)
    grants = {(a, r) for s in statements(spec) for a in as_list(s["Action"]) for r in as_list(s["Resource"])}
    bedrock = {g for g in grants if g[0].startswith(("bedrock:", "iam:"))}
    role = "arn:aws:iam::123456789012:role/s-BedrockBatchRole"
    assert bedrock == {
        ("bedrock:CreateModelInvocationJob", MODEL),
        ("bedrock:CreateModelInvocationJob", JOBS),
        ("bedrock:GetModelInvocationJob", JOBS),
        ("bedrock:StopModelInvocationJob", JOBS),
        ("iam:PassRole", role),
    }
    [pass_role] = [s for s in statements(spec) if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}
    assert spec["Environment"]["Variables"]["BATCH_ROLE_ARN"] == role


def test_the_poller_reaches_only_the_bucket_prefixes_it_uses(template: dict[str, Any]) -> None:
    s3 = {
        (a, r)
        for s in statements(poller(template))
        for a in as_list(s["Action"])
        for r in as_list(s["Resource"])
        if a.startswith("s3:")
    }
    bucket = "arn:aws:x:::PayloadBucket"
    assert s3 == {
        ("s3:GetObject", f"{bucket}/batch/*"),
        ("s3:PutObject", f"{bucket}/batch/*"),
        ("s3:ListBucket", bucket),
        ("s3:PutObject", f"{bucket}/results/*"),
        ("s3:PutObject", f"{bucket}/failed/*"),
    }
    assert all("*" not in a for s in statements(poller(template)) for a in as_list(s["Action"]))


@pytest.fixture(scope="module")
def provisioned() -> Iterator[Any]:
    with MotoServer() as server:
        yield provision_stack(server.url)


def test_the_local_stack_reads_the_schedule_to_run_it(provisioned: Any) -> None:
    lane = provisioned.functions["LanePoller"]
    assert lane.schedules == [Schedule("Poll", "rate(2 minutes)", 120.0)]
    assert lane.handler == "app.lambda_handler" and lane.code_dir.name == "lanes"
    assert provisioned.functions["Worker"].schedules == []
