"""Create the template's resources in moto's server, as CloudFormation would in AWS.

Queues (with their redrive policy), tables, SSM parameters, and each function with its SQS
event source mapping, all taken from ``template.yaml``. The mapping is created disabled:
an enabled one makes moto try to run the function in Docker (see field notes); our poller
plays the mapping instead, reading its settings back from moto.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from llmbatch.client.stack import StackResources
from llmbatch.local.template import (
    Resolver,
    creation_order,
    function_spec,
    load_template,
    parameter_values,
)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = ROOT / "template.yaml"


def template_copy(directory: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """``template.yaml`` with a change applied (a shorter timeout for a drill, say), written
    as JSON, which CloudFormation reads too; code paths stay those of the real template."""
    template = load_template(DEFAULT_TEMPLATE)
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = str((DEFAULT_TEMPLATE.parent / props[key]).resolve())
    change(template)
    out = directory / "template.json"
    out.write_text(json.dumps(template))
    return out


@dataclass(frozen=True)
class EventSource:
    uuid: str
    queue_url: str
    queue_arn: str


@dataclass(frozen=True)
class Schedule:
    """A function's ``Schedule``/``ScheduleV2`` event: its expression and its period."""

    event_id: str
    expression: str
    #: The period a ``rate(...)`` expression gives (None for ``cron(...)``).
    rate_s: float | None


def schedule_period_s(expression: str) -> float | None:
    """``rate(2 minutes)`` -> 120.0; ``cron(...)`` -> None."""
    m = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not m:
        return None
    unit = {"minute": 60, "hour": 3600, "day": 86400}[m.group(2).rstrip("s")]
    return float(int(m.group(1)) * unit)


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    name: str
    code_dir: Path
    handler: str
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    event_sources: list[EventSource] = field(default_factory=list)
    #: Scheduled events (EventBridge Scheduler or a rule): the local stack runs them.
    schedules: list[Schedule] = field(default_factory=list)


@dataclass(frozen=True)
class ProvisionedStack:
    resources: StackResources
    functions: dict[str, LocalFunction]
    parameters: dict[str, str]


#: The local stack's credentials (moto takes any; this access key is its default account's).
ACCESS_KEY_ID = "testing"


def aws_client(service: str, endpoint_url: str, *, config: Config | None = None) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key="testing",
        config=config,
    )


def provision_stack(
    aws_endpoint_url: str,
    *,
    stack_name: str = "llmbatch-local",
    template_path: Path = DEFAULT_TEMPLATE,
    parameter_overrides: Mapping[str, str] | None = None,
    model_endpoint_url: str | None = None,
) -> ProvisionedStack:
    template = load_template(template_path)
    params = parameter_values(template, parameter_overrides)
    resolver = Resolver(
        template,
        params,
        {
            "AWS::StackName": stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        },
    )
    creator = _Creator(aws_endpoint_url, stack_name, resolver, template_path.parent)
    resources = template["Resources"]
    for logical_id in creation_order(resources):
        creator.create(logical_id, resources[logical_id], template)

    outputs = {name: str(resolver.resolve(spec["Value"])) for name, spec in template.get("Outputs", {}).items()}
    stack = StackResources.from_outputs(
        stack_name, REGION, outputs, aws_endpoint_url=aws_endpoint_url, model_endpoint_url=model_endpoint_url
    )
    return ProvisionedStack(resources=stack, functions=creator.functions, parameters=params)


class _Creator:
    def __init__(self, endpoint: str, stack_name: str, resolver: Resolver, base_dir: Path) -> None:
        self.endpoint = endpoint
        self.stack = stack_name
        self.r = resolver
        self.base_dir = base_dir
        self.functions: dict[str, LocalFunction] = {}
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.endpoint)
        return self._clients[service]

    def create(self, logical_id: str, resource: dict[str, Any], template: dict[str, Any]) -> None:
        condition = resource.get("Condition")
        if condition and not self.r.condition(condition):
            return
        kind = resource["Type"]
        handler = {
            "AWS::SQS::Queue": self._queue,
            "AWS::DynamoDB::Table": self._table,
            "AWS::SSM::Parameter": self._parameter,
            "AWS::S3::Bucket": self._bucket,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::Events::Rule": self._rule,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Serverless::Function": lambda lid, props: self._function(lid, template),
        }.get(kind)
        if handler is None:  # layers, alarms, dashboards: nothing to emulate locally
            self.r.refs[logical_id] = f"{self.stack}-{logical_id}"
            return
        handler(logical_id, self.r.resolve(resource.get("Properties", {})))

    def _queue(self, logical_id: str, props: dict[str, Any]) -> None:
        name = props.get("QueueName") or f"{self.stack}-{logical_id}"
        attributes: dict[str, str] = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds",
            "DelaySeconds",
            "SqsManagedSseEnabled",
        ):
            if key in props:
                attributes[key] = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
        self.r.refs[logical_id] = url
        self.r.attrs[logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}

    def _table(self, logical_id: str, props: dict[str, Any]) -> None:
        name = props.get("TableName") or f"{self.stack}-{logical_id}"
        ddb = self.client("dynamodb")
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("SSESpecification", {}).get("SSEEnabled"):
            kwargs["SSESpecification"] = {"Enabled": True}
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in props:
                kwargs[key] = props[key]
        ddb.create_table(**kwargs)
        pitr = props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")
        if pitr:
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"}

    def _bucket(self, logical_id: str, props: dict[str, Any]) -> None:
        name = (props.get("BucketName") or f"{self.stack}-{logical_id}").lower()
        self.client("s3").create_bucket(Bucket=name)
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:s3:::{name}"}

    def _event_bus(self, logical_id: str, props: dict[str, Any]) -> None:
        name = props.get("Name") or f"{self.stack}-{logical_id}"
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": arn, "Name": name}

    def _rule(self, logical_id: str, props: dict[str, Any]) -> None:
        """A rule with its targets: moto's EventBridge delivers PutEvents on a custom bus to
        a rule's SQS target (checked with moto 5.2.5), so the webhook path runs as in AWS."""
        events = self.client("events")
        name = props.get("Name") or f"{self.stack}-{logical_id}"
        bus = props.get("EventBusName", "default")
        kwargs: dict[str, Any] = {"Name": name, "EventBusName": bus, "State": props.get("State", "ENABLED")}
        if "EventPattern" in props:
            kwargs["EventPattern"] = json.dumps(props["EventPattern"])
        if "ScheduleExpression" in props:
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        arn = events.put_rule(**kwargs)["RuleArn"]
        targets = [{"Id": t["Id"], "Arn": t["Arn"]} for t in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": arn}

    def _secret(self, logical_id: str, props: dict[str, Any]) -> None:
        """A secret; a generated one gets a random value of the asked length, as AWS makes it."""
        name = props.get("Name") or f"{self.stack}-{logical_id}"
        value = props.get("SecretString")
        if value is None:
            length = int(props.get("GenerateSecretString", {}).get("PasswordLength", 32))
            value = secrets.token_urlsafe(length)[:length]
        arn = self.client("secretsmanager").create_secret(Name=name, SecretString=str(value))["ARN"]
        self.r.refs[logical_id] = arn  # Ref of a secret is its ARN
        self.r.attrs[logical_id] = {"Id": arn}

    def _parameter(self, logical_id: str, props: dict[str, Any]) -> None:
        name = props.get("Name") or f"{self.stack}-{logical_id}"
        self.client("ssm").put_parameter(
            Name=name, Value=str(props["Value"]), Type=props.get("Type", "String"), Overwrite=True
        )
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Type": props.get("Type", "String"), "Value": str(props["Value"])}

    def _function(self, logical_id: str, template: dict[str, Any]) -> None:
        spec = self.r.resolve(function_spec(template, logical_id))
        name = spec.get("FunctionName") or f"{self.stack}-{logical_id}"
        env = {k: str(v) for k, v in spec.get("Environment", {}).get("Variables", {}).items()}
        role_arn = self._role(name)
        lam = self.client("lambda")
        lam.create_function(
            FunctionName=name,
            Runtime=spec.get("Runtime", "python3.11"),
            Role=role_arn,
            Handler=spec["Handler"],
            Code={"ZipFile": _placeholder_zip()},
            Timeout=int(spec.get("Timeout", 3)),
            MemorySize=int(spec.get("MemorySize", 128)),
            Environment={"Variables": env},
        )
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"}
        sources: list[EventSource] = []
        schedules: list[Schedule] = []
        for event_id, event in spec.get("Events", {}).items():
            if event.get("Type") in ("Schedule", "ScheduleV2"):
                expression = str(
                    event["Properties"]["Schedule" if event["Type"] == "Schedule" else "ScheduleExpression"]
                )
                schedules.append(Schedule(event_id, expression, schedule_period_s(expression)))
                continue
            if event.get("Type") != "SQS":
                continue
            props = event["Properties"]
            kwargs: dict[str, Any] = {
                "EventSourceArn": props["Queue"],
                "FunctionName": name,
                "Enabled": False,
                "BatchSize": int(props.get("BatchSize", 10)),
                "MaximumBatchingWindowInSeconds": int(props.get("MaximumBatchingWindowInSeconds", 0)),
                "FunctionResponseTypes": list(props.get("FunctionResponseTypes", [])),
            }
            if "ScalingConfig" in props:
                kwargs["ScalingConfig"] = {"MaximumConcurrency": int(props["ScalingConfig"]["MaximumConcurrency"])}
            mapping = lam.create_event_source_mapping(**kwargs)
            queue_name = props["Queue"].rsplit(":", 1)[-1]
            queue_url = self.client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
            sources.append(EventSource(uuid=mapping["UUID"], queue_url=queue_url, queue_arn=props["Queue"]))
            self.r.refs[f"{logical_id}{event_id}"] = mapping["UUID"]
        self.functions[logical_id] = LocalFunction(
            logical_id=logical_id,
            name=name,
            code_dir=(self.base_dir / spec["CodeUri"]).resolve(),
            handler=spec["Handler"],
            timeout_s=int(spec.get("Timeout", 3)),
            memory_mb=int(spec.get("MemorySize", 128)),
            environment=env,
            event_sources=sources,
            schedules=schedules,
        )

    def _role(self, function_name: str) -> str:
        iam = self.client("iam")
        role = iam.create_role(
            RoleName=f"{function_name}-role"[:64],
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )
        return str(role["Role"]["Arn"])


def _placeholder_zip() -> bytes:
    """moto needs code to create a function; ours runs in the local poller, not in moto."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def lambda_handler(event, context):\n    raise RuntimeError('runs locally')\n")
    return buf.getvalue()
