"""The local stack's DynamoDB responses (llmbatch/local/moto_dynamodb.py
``serialize_attribute_values_directly``) are what moto's own serializer writes, for every
kind of attribute value, and they round-trip through boto3 over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto.core.serialize import JSONSerializer, ResponseSerializer, XFormedAttributePicker
from moto.core.utils import get_service_model

from llmbatch.local.moto_dynamodb import serialize_attribute_values_directly
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION

#: Every kind of attribute value, nested, empty where DynamoDB allows it, with a member that
#: is None (moto's dicts carry none; the serializer leaves it out, an empty value) and bytes that
#: are not UTF-8.
ITEM: dict[str, Any] = {
    "pk": {"S": "job-1"},
    "sk": {"S": "count#3"},
    "empty": {"S": ""},
    "text": {"S": 'naïve ✓ "quoted" \n'},
    "n": {"N": "-12.5"},
    "blob": {"B": b"\x00\xff\xfe binary"},
    "blob_text": {"B": "already text"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02\x03"]},
    "null": {"NULL": True},
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
    "m": {
        "M": {
            "inner": {"L": [{"S": "x"}, {"N": "1"}, {"M": {}}, {"L": []}, {"B": b"\x80"}, None, "not a dict"]},
            "none": {"S": None},
            "absent": None,
            "odd": 7,
        }
    },
    "l": {"L": [{"M": {"deep": {"BOOL": False}}}, {"NULL": True}]},
}


class _Generic(JSONSerializer):
    """moto's own path for every structure (AttributeValue is not a document type, so this is
    what ``BaseJSONSerializer`` did before the patch)."""

    def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
        ResponseSerializer._serialize_type_structure(self, serialized, value, shape, key)


def _body(cls: type[JSONSerializer], operation: str, result: dict[str, Any], service: str = "dynamodb") -> Any:
    model = get_service_model(service).operation_model(operation)
    return json.loads(cls(operation_model=model, value_picker=XFormedAttributePicker()).serialize(result)["body"])


@pytest.mark.parametrize(
    ("operation", "result"),
    [
        ("GetItem", {"Item": ITEM}),
        ("Query", {"Items": [ITEM, {"pk": {"S": "job-1"}, "sk": {"S": "meta"}}], "Count": 2, "ScannedCount": 2}),
        ("BatchGetItem", {"Responses": {"t": [ITEM]}, "UnprocessedKeys": {}}),
        ("UpdateItem", {"Attributes": ITEM}),
    ],
)
def test_attribute_values_are_written_as_moto_writes_them(operation: str, result: dict[str, Any]) -> None:
    # GIVEN the patch in this process (as in the local stack's DynamoDB process)
    serialize_attribute_values_directly()
    assert "serialize_attribute_values_directly" in JSONSerializer._serialize_type_structure.__qualname__

    # WHEN a response is serialised through it and through moto's own path
    fast, generic = _body(JSONSerializer, operation, result), _body(_Generic, operation, result)

    # THEN the two are the same JSON, and it holds what went in
    assert fast == generic
    item = (fast.get("Item") or fast.get("Attributes") or (fast.get("Items") or [None])[0]) or fast["Responses"]["t"][0]
    assert item["blob"] == {"B": "AP/+IGJpbmFyeQ=="} and item["empty"] == {"S": ""}
    assert item["m"]["M"]["none"] == {} and item["m"]["M"]["inner"]["L"][2] == {"M": {}}
    assert "absent" not in item["m"]["M"] and item["m"]["M"]["odd"] == {}
    assert item["m"]["M"]["inner"]["L"][5:] == [None, {}]


def test_another_services_attribute_value_keeps_motos_path() -> None:
    # GIVEN the patch, and the Price List API, whose AttributeValue is {"Value": ...}
    serialize_attribute_values_directly()
    result = {"AttributeValues": [{"Value": "m5.large"}, {"Value": "t3.micro"}]}

    # WHEN its response is serialised / THEN as moto's own path writes it, values kept
    fast = _body(JSONSerializer, "GetAttributeValues", result, service="pricing")
    assert fast == _body(_Generic, "GetAttributeValues", result, service="pricing")
    assert fast["AttributeValues"] == [{"Value": "m5.large"}, {"Value": "t3.micro"}]


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    with MotoServer() as server:
        client = boto3.client(
            "dynamodb", endpoint_url=server.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
        )
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def test_every_kind_of_value_round_trips_over_http(ddb: Any) -> None:
    # GIVEN an item with every kind of value, stored in the local stack's moto
    item = {k: v for k, v in ITEM.items() if k not in ("blob_text", "m")}
    item["m"] = {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}, {"M": {}}, {"L": []}, {"B": b"\x80"}]}}}
    ddb.put_item(TableName="t", Item=item)

    # WHEN it is read back by key and by query, and the query projects two attributes
    got = ddb.get_item(TableName="t", Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True)["Item"]
    queried = ddb.query(
        TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "job-1"}}
    )["Items"]
    projected = ddb.query(
        TableName="t",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "job-1"}},
        ProjectionExpression="n, bs",
    )["Items"]

    # THEN boto3 reads what was written (bytes as bytes, sets as sets' members)
    def norm(i: dict[str, Any]) -> dict[str, Any]:
        return {k: {t: sorted(x) if t in ("SS", "NS", "BS") else x for t, x in v.items()} for k, v in i.items()}

    assert norm(got) == norm(item) and norm(queried[0]) == norm(item)
    assert norm(projected[0]) == norm({"n": item["n"], "bs": item["bs"]})
    assert Decimal(got["n"]["N"]) == Decimal("-12.5")
