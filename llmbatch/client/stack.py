"""Where a stack's resources are: from a deployed stack's outputs, or from the state file
the local stack writes when it comes up. Both are the template's ``Outputs``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, StackNotFoundError
from shared.priority import Priority

#: Where ``llmbatch local up`` records what it started (relative to the working directory).
DEFAULT_STATE_PATH = Path(".llmbatch") / "local.json"


def state_path() -> Path:
    return Path(os.environ.get("LLMBATCH_STATE", str(DEFAULT_STATE_PATH)))


@dataclass(frozen=True)
class StackResources:
    name: str
    region: str
    request_queue_url: str
    dead_letter_queue_url: str
    jobs_table: str
    results_table: str
    limits_parameter: str
    worker_function: str
    #: The claim-check bucket (empty for stacks deployed before it existed).
    payload_bucket: str = ""
    #: Set for the local stack: every AWS call goes to moto's server here.
    aws_endpoint_url: str | None = None
    #: The model endpoint the local stack points its worker at (informational).
    model_endpoint_url: str | None = None
    #: The bus of the jobs' "Job Finished" events (empty for stacks deployed before it existed).
    event_bus: str = ""
    #: The high- and low-priority request queues (empty for stacks deployed before priorities;
    #: ``request_queue_url`` is the normal one).
    high_priority_queue_url: str = ""
    low_priority_queue_url: str = ""

    @classmethod
    def from_outputs(
        cls, name: str, region: str, outputs: dict[str, str], *, aws_endpoint_url: str | None = None, **extra: Any
    ) -> StackResources:
        try:
            return cls(
                name=name,
                region=region,
                request_queue_url=outputs["RequestQueueUrl"],
                dead_letter_queue_url=outputs["DeadLetterQueueUrl"],
                jobs_table=outputs["JobsTableName"],
                results_table=outputs["ResultsTableName"],
                limits_parameter=outputs["LimitsParameterName"],
                worker_function=outputs["WorkerFunctionName"],
                payload_bucket=outputs.get("PayloadBucketName", ""),
                event_bus=outputs.get("EventBusName", ""),
                high_priority_queue_url=outputs.get("HighPriorityQueueUrl", ""),
                low_priority_queue_url=outputs.get("LowPriorityQueueUrl", ""),
                aws_endpoint_url=aws_endpoint_url,
                **extra,
            )
        except KeyError as e:
            raise StackNotFoundError(f"stack {name!r} has no output {e.args[0]}") from e

    def queue_url(self, priority: Priority) -> str:
        """The request queue of ``priority``; a ConfigError on a stack without one."""
        url = {
            Priority.HIGH: self.high_priority_queue_url,
            Priority.NORMAL: self.request_queue_url,
            Priority.LOW: self.low_priority_queue_url,
        }[Priority(priority)]
        if not url:
            raise ConfigError(
                f"stack {self.name!r} has no {priority} priority queue (deployed before priorities: update it)"
            )
        return url

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for every boto3 / aiobotocore client aimed at this stack."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.aws_endpoint_url:
            kwargs.update(
                endpoint_url=self.aws_endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing"
            )
            if self.aws_endpoint_url.startswith("http://"):
                # Plain HTTP has no certificate to check: without this every client loads the
                # CA bundle into a TLS context it never uses (~50 ms of CPU each; a submit
                # opens six clients).
                kwargs["verify"] = False
        return kwargs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, raw: str) -> StackResources:
        return cls(**json.loads(raw))


def locate_stack(stack_name: str | None = None, *, region: str | None = None) -> StackResources:
    """The deployed stack named, or else the running local stack."""
    if stack_name:
        import boto3

        cfn = boto3.client("cloudformation", region_name=region)
        try:
            desc = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        except Exception as e:
            raise StackNotFoundError(f"cannot read stack {stack_name!r}: {e}") from e
        outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
        return StackResources.from_outputs(stack_name, cfn.meta.region_name, outputs)
    path = state_path()
    if not path.exists():
        raise StackNotFoundError(
            f"no local stack is running (no {path}); start one with `llmbatch local up`, or name a deployed one with --stack"
        )
    return StackResources.from_json(path.read_text())
