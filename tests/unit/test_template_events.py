"""template.yaml's job-finished event and webhooks: the bus the functions publish to, the
rule and queue that feed the Notifier, and permissions scoped to them (shared/finish.py,
shared/notify.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import function_spec, load_template
from shared.finish import EVENT_DETAIL_TYPE, EVENT_SOURCE

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    policies = template["Resources"][function]["Properties"]["Policies"]
    return [s for p in policies if isinstance(p, dict) for s in p.get("Statement", [])]


@pytest.mark.parametrize("function", ["Worker", "DeadLetter"])
def test_the_functions_that_finish_jobs_may_put_events_on_the_stacks_bus_only(
    template: dict[str, Any], function: str
) -> None:
    spec = function_spec(template, function)
    assert spec["Environment"]["Variables"]["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
    (put,) = [s for s in statements(template, function) if s["Action"] == "events:PutEvents"]
    assert put["Resource"] == {"Fn::GetAtt": ["EventBus", "Arn"]}


def test_the_webhook_rule_takes_job_finished_events_with_a_url_to_the_notify_queue(template: dict[str, Any]) -> None:
    rule = template["Resources"]["WebhookRule"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "EventBus"}
    assert rule["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "detail-type": [EVENT_DETAIL_TYPE],
        "detail": {"notify_url": [{"exists": True}]},
    }
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["NotifyQueue", "Arn"]}]
    # ... and only that rule may send to the queue
    (grant,) = template["Resources"]["NotifyQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"} and grant["Action"] == "sqs:SendMessage"
    assert grant["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["WebhookRule", "Arn"]}


def test_the_notifier_reads_the_notify_queue_with_room_for_its_retries(template: dict[str, Any]) -> None:
    spec = function_spec(template, "Notifier")
    queue = template["Resources"]["NotifyQueue"]["Properties"]
    (event,) = spec["Events"].values()
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["NotifyQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert queue["VisibilityTimeout"] >= 6 * spec["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]}
    env = spec["Environment"]["Variables"]
    assert env["WEBHOOK_SECRET_ARN"] == {"Ref": "WebhookSecret"} and env["NOTIFY_QUEUE_URL"] == {"Ref": "NotifyQueue"}
    # ... may read the webhook secret and delay its own queue's messages, nothing more of its own
    own = {s["Action"]: s["Resource"] for s in statements(template, "Notifier") if s.get("Sid") != "UseTheStackKey"}
    assert own == {
        "secretsmanager:GetSecretValue": {"Ref": "WebhookSecret"},
        "sqs:ChangeMessageVisibility": {"Fn::GetAtt": ["NotifyQueue", "Arn"]},
    }


def test_the_webhook_secret_is_generated_by_the_stack(template: dict[str, Any]) -> None:
    secret = template["Resources"]["WebhookSecret"]["Properties"]
    assert "SecretString" not in secret and secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert template["Outputs"]["EventBusName"]["Value"] == {"Ref": "EventBus"}
