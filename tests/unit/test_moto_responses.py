"""moto's response layer with its per-request lookups remembered (llmbatch/local/moto_responses.py)
writes what moto's own path writes: the same action found, the same JSON for every kind of
response the local stack's services give, the same request-id handling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.core import responses
from moto.core.responses import BaseResponse
from moto.core.serialize import JSONSerializer, ResponseSerializer, XFormedAttributePicker
from moto.core.utils import get_service_model, method_names_from_class
from moto.sqs.responses import SQSResponse

from llmbatch.local import moto_responses
from llmbatch.local.moto_responses import remember_per_process_lookups

# In this test process, as in the local stack's moto processes: from here on every in-process
# moto of the test run has them (they are moto's own results, as these tests check).
remember_per_process_lookups()


class _MotosOwn(JSONSerializer):
    """moto's own way to find a member's value (what every serializer did before the patch)."""

    get_value = ResponseSerializer.get_value.__wrapped__  # type: ignore[attr-defined]


def _body(cls: type[JSONSerializer], service: str, operation: str, result: Any, **picker: Any) -> Any:
    model = get_service_model(service).operation_model(operation)
    return json.loads(
        cls(operation_model=model, value_picker=XFormedAttributePicker(**picker)).serialize(result)["body"]
    )


#: Responses as the local stack's moto services build them: dicts, nested lists and maps,
#: booleans, numbers, bytes, members under their snake_case names and under their shapes'
#: names, members the model does not have, and absent and None members.
RESPONSES: list[tuple[str, str, Any]] = [
    (
        "sqs",
        "ReceiveMessage",
        {
            "Messages": [
                {
                    "MessageId": "m-1",
                    "ReceiptHandle": "h" * 185,
                    "MD5OfBody": "0" * 32,
                    "Body": '{"custom_id": "a", "x": "<RequestId>kept</RequestId>"}',
                    "Attributes": {"ApproximateReceiveCount": "2", "MessageGroupId": "job-1"},
                    "MessageAttributes": {
                        "kind": {"StringValue": "req", "DataType": "String"},
                        "raw": {"BinaryValue": b"\x00\xff", "DataType": "Binary"},
                    },
                    "MD5OfMessageAttributes": "1" * 32,
                },
                {"MessageId": "m-2", "ReceiptHandle": "g", "MD5OfBody": "2", "Body": "", "Attributes": {}},
            ]
        },
    ),
    (
        "sqs",
        "SendMessageBatch",
        {
            "Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": "5", "SequenceNumber": None}],
            "Failed": [{"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue", "Message": "too long"}],
        },
    ),
    ("sqs", "GetQueueAttributes", {"Attributes": {"ApproximateNumberOfMessages": "3", "FifoQueue": "false"}}),
    ("sqs", "ListQueues", {"QueueUrls": ["http://q/1", "http://q/2"], "next_token": "t"}),
    (
        "ssm",
        "GetParameter",
        {"Parameter": {"Name": "/l/limits", "Type": "String", "Value": "{}", "Version": 3, "data_type": "text"}},
    ),
    (
        "lambda",
        "ListEventSourceMappings",
        {
            "EventSourceMappings": [
                {
                    "UUID": "u",
                    "BatchSize": 10,
                    "MaximumBatchingWindowInSeconds": 1,
                    "ScalingConfig": {"MaximumConcurrency": 4},
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    "State": "Enabled",
                    "unknown_member": "dropped",
                }
            ]
        },
    ),
]


@pytest.mark.parametrize(("service", "operation", "result"), RESPONSES, ids=[f"{s}-{o}" for s, o, _ in RESPONSES])
def test_a_response_is_written_as_motos_own_path_writes_it(service: str, operation: str, result: Any) -> None:
    # GIVEN a response as moto's service builds it / WHEN it is serialised with the remembered
    # keys, twice (the second from what the first remembered), and by moto's own lookups
    first, second = (_body(JSONSerializer, service, operation, result) for _ in range(2))
    own = _body(_MotosOwn, service, operation, result)

    # THEN all three are the same JSON, and hold what went in
    assert first == second == own
    assert first and json.dumps(first) != "{}"


def test_a_member_under_its_snake_case_name_is_found_as_moto_finds_it() -> None:
    # GIVEN a structure whose members are under their Python names, as some moto models keep them
    result = {"Parameter": {"name": "/l/limits", "type": "String", "value": "{}", "version": 3}}

    # WHEN it is serialised / THEN its members are found by their other names, as moto finds them
    fast = _body(JSONSerializer, "ssm", "GetParameter", result)
    assert fast == _body(_MotosOwn, "ssm", "GetParameter", result)
    assert fast["Parameter"] == {"Name": "/l/limits", "Type": "String", "Value": "{}", "Version": 3}


def test_a_picker_with_response_transformers_keeps_motos_path() -> None:
    # GIVEN a response class's transformer of one member (it depends on the member's path)
    result = {"Parameter": {"Name": "/l/limits", "Value": "{}"}}
    marked = {"Parameter.Value": lambda v: f"<{v}>"}

    # WHEN it is serialised / THEN the transformer applied, as in moto's own path
    fast = _body(JSONSerializer, "ssm", "GetParameter", result, response_transformers=marked)
    assert fast == _body(_MotosOwn, "ssm", "GetParameter", result, response_transformers=marked)
    assert fast["Parameter"] == {"Name": "/l/limits", "Value": "<{}>"}


def test_the_action_names_are_moto_own_once_per_class() -> None:
    # GIVEN the remembered names / WHEN asked twice for SQS's response class
    first, second = responses.method_names_from_class(SQSResponse), responses.method_names_from_class(SQSResponse)

    # THEN the same object, holding exactly the methods moto lists
    assert first is second
    assert first == frozenset(method_names_from_class(SQSResponse))
    assert {"send_message_batch", "receive_message", "delete_message_batch"} <= first


def test_the_request_id_is_written_where_a_body_has_one_and_nothing_else_changes() -> None:
    # GIVEN an XML body with a RequestId, a JSON body (none), bytes (moto's substitution skips them)
    xml = "<R><RequestId>old</RequestId></R>"
    plain = json.dumps({"Messages": [{"Body": "RequestId: a user's text"}]})
    raw = b"<RequestId>x</RequestId>"

    # WHEN each is enriched
    xml_headers, xml_out = BaseResponse._enrich_response({"status": 200}, xml)
    json_headers, json_out = BaseResponse._enrich_response({"status": 201}, plain)
    bytes_headers, bytes_out = BaseResponse._enrich_response({}, raw)

    # THEN the XML's id is the response's new one; the others are unchanged; each has an id
    assert xml_out == f"<R><RequestId>{xml_headers['x-amzn-requestid']}</RequestId></R>"
    assert json_out == plain and bytes_out == raw
    assert xml_headers["status"] == "200" and json_headers["status"] == "201"
    assert all(len(h["x-amzn-requestid"]) == 52 for h in (xml_headers, json_headers, bytes_headers))


def test_with_its_memory_of_keys_capped_every_response_is_still_motos(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN room for two members' keys only (it starts again whenever full)
    monkeypatch.setattr(moto_responses, "KNOWN_MAX", 2)

    # WHEN every response is serialised / THEN each is what moto's own path writes
    for service, operation, result in RESPONSES:
        assert _body(JSONSerializer, service, operation, result) == _body(_MotosOwn, service, operation, result)
