"""The local event source mapping's SQS client (``mapping_sqs_client`` in
llmbatch/local/poller.py) skips the SDK's SigV4 signature and its per-call user agent, and still
reaches the stack's queues (their account and region) over real HTTP, against the local stack's
moto."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.useragent import UserAgentString

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.poller import mapping_sqs_client
from llmbatch.local.provision import aws_client


def test_the_mappings_client_reaches_the_stacks_queue_without_signing_or_rebuilding_its_user_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with MotoServer() as server:
        # GIVEN a message sent to a queue of the stack by a signed client, as submit sends
        producer = aws_client("sqs", server.url)
        queue = producer.create_queue(QueueName="mapping-client")["QueueUrl"]
        producer.send_message(QueueUrl=queue, MessageBody="hello")
        client = mapping_sqs_client(server.url)

        # ... and the SDK's signer and user-agent rebuild made to fail from now on
        def fails(*_: Any, **__: Any) -> Any:
            raise AssertionError("called")

        monkeypatch.setattr(SigV4Auth, "add_auth", fails)
        monkeypatch.setattr(UserAgentString, "to_string", fails)
        # WHEN the mapping's client receives and deletes
        got = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
        deleted = client.delete_message_batch(
            QueueUrl=queue, Entries=[{"Id": "0", "ReceiptHandle": got[0]["ReceiptHandle"]}]
        )
        # THEN it got the queue's message (moto found the queue in the stack's account and
        # region from the credential's scope) and deleted it, with neither of the two
        assert [m["Body"] for m in got] == ["hello"]
        assert [d["Id"] for d in deleted["Successful"]] == ["0"]
        monkeypatch.undo()
        attributes = producer.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
