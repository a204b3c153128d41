"""Console tests: a real moto server with the stack's resources, and the demo stack for snapshots."""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from llmbatch.client.stack import StackResources

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws(service: str, url: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]  # service is any name
        service, region_name=REGION, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _dummy_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buf.getvalue()


def provision_by_hand(url: str, name: str) -> StackResources:
    """The stack's resources, made one by one (used when llmbatch.local's provisioner is absent)."""
    sqs, ddb, ssm, iam, lam = (aws(s, url) for s in ("sqs", "dynamodb", "ssm", "iam", "lambda"))
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{name}-requests",
        Attributes={
            "VisibilityTimeout": "360",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for table, range_key in ((f"{name}-jobs", "item"), (f"{name}-results", "custom_id")):
        ddb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "job_id", "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "job_id", "AttributeType": "S"},
                {"AttributeName": range_key, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    parameter = f"/{name}/limits"
    ssm.put_parameter(
        Name=parameter, Type="String", Value=json.dumps({"max_concurrency": 16, "rpm_limit": None, "tpm_limit": None})
    )
    role = iam.create_role(
        RoleName=f"{name}-worker-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]["Arn"]
    function = f"{name}-worker"
    lam.create_function(
        FunctionName=function, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": _dummy_zip()}
    )
    lam.create_event_source_mapping(
        EventSourceArn=queue_arn,
        FunctionName=function,
        Enabled=False,  # an enabled mapping makes moto run the function in Docker
        BatchSize=10,
        ScalingConfig={"MaximumConcurrency": 5},
    )
    return StackResources(
        name=name,
        region=REGION,
        request_queue_url=queue_url,
        dead_letter_queue_url=dlq_url,
        jobs_table=f"{name}-jobs",
        results_table=f"{name}-results",
        limits_parameter=parameter,
        worker_function=function,
        aws_endpoint_url=url,
    )


@pytest.fixture
def stack(moto_url: str) -> StackResources:
    """A fresh stack (its own names) in the shared moto server."""
    name = f"tui-{uuid.uuid4().hex[:8]}"
    try:
        from llmbatch.local.provision import provision_stack
    except ImportError:
        return provision_by_hand(moto_url, name)
    return provision_stack(moto_url, stack_name=name).resources


@pytest.fixture
def job_files(tmp_path: Path) -> tuple[Path, Path]:
    from tui.demo import write_demo_files

    return write_demo_files(tmp_path / "jobs")
