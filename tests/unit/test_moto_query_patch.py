"""The local stack's Query on one partition (llmbatch/local/moto_dynamodb.py
``query_one_partition``) answers exactly as moto's own: the same items, pages, keys and
counts, for every kind of Query the project makes and a few it does not, on a table whose
other partitions hold many more items."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb.models.table import Table

from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION

TABLE = "query-patch"


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    with MotoServer() as server:
        client = boto3.client(
            "dynamodb", endpoint_url=server.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
        )
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        # the queried partition: counters, dead letters and results of mixed sizes, inserted
        # out of order; two other partitions far bigger
        rows = [("job-a", f"count#{i:02d}", 10) for i in range(12)]
        rows += [("job-a", f"dead#{i:03d}", 3_000) for i in range(30)]
        rows += [("job-a", f"r{i:04d}", 90_000 if i % 7 == 0 else 200) for i in range(150)]
        rows += [(p, f"r{i:05d}", 50) for p in ("job-b", "job-c") for i in range(400)]
        puts = [
            {
                "PutRequest": {
                    "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "blob": {"S": "x" * size}, "n": {"N": str(size)}}
                }
            }
            for pk, sk, size in reversed(rows)
        ]
        for i in range(0, len(puts), 25):
            assert not client.batch_write_item(RequestItems={TABLE: puts[i : i + 25]}).get("UnprocessedItems")
        yield client


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "job-a"}}},
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "job-a"}}, "Limit": 7},
    {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :c)",
        "ExpressionAttributeValues": {":p": {"S": "job-a"}, ":c": {"S": "count#"}},
        "Limit": 5,
    },
    {
        "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":p": {"S": "job-a"}, ":a": {"S": "dead#010"}, ":b": {"S": "r0040"}},
    },
    {
        "KeyConditionExpression": "pk = :p",
        "FilterExpression": "n > :big",
        "ExpressionAttributeValues": {":p": {"S": "job-a"}, ":big": {"N": "1000"}},
        "Limit": 20,
    },
    {
        "KeyConditionExpression": "pk = :p",
        "ProjectionExpression": "sk, n",
        "ExpressionAttributeValues": {":p": {"S": "job-a"}},
    },
    {
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "job-a"}},
        "ScanIndexForward": False,
        "Limit": 33,
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "nobody"}}},
]


def pages(ddb: Any, query: dict[str, Any]) -> list[tuple[list[str], Any, int, int]]:
    out, start = [], None
    while True:
        resp = ddb.query(TableName=TABLE, **query, **({"ExclusiveStartKey": start} if start else {}))
        out.append(
            ([i["sk"]["S"] for i in resp["Items"]], resp.get("LastEvaluatedKey"), resp["Count"], resp["ScannedCount"])
        )
        start = resp.get("LastEvaluatedKey")
        if not start:
            return out


@pytest.mark.parametrize(
    "query",
    QUERIES,
    ids=lambda q: (
        q["KeyConditionExpression"] + str(sorted(set(q) - {"KeyConditionExpression", "ExpressionAttributeValues"}))
    ),
)
def test_every_page_is_what_motos_own_query_answers(
    ddb: Any, query: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    patched = pages(ddb, query)
    monkeypatch.setattr(Table, "query", Table.query.faithful)
    faithful = pages(ddb, query)
    assert patched == faithful


def test_the_whole_partition_spans_pages_of_one_megabyte(ddb: Any) -> None:
    # 22 answers of 90 KB among the rest: at least two pages, as DynamoDB pages at 1 MB
    assert len(pages(ddb, QUERIES[0])) > 1


def test_an_item_added_or_removed_is_seen_by_the_next_query(ddb: Any) -> None:
    query = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "job-b"}}, "Limit": 1000}
    before = [sk for page in pages(ddb, query) for sk in page[0]]
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "job-b"}, "sk": {"S": "r00000a"}})
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "job-b"}, "sk": {"S": "r00007"}})
    after = [sk for page in pages(ddb, query) for sk in page[0]]
    assert after == sorted((set(before) | {"r00000a"}) - {"r00007"})
