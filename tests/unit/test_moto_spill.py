"""The local stack's tables kept on disk (llmbatch/local/moto_spill.py) answer exactly as
moto's in-memory ones: the same sequence of writes (puts, conditional puts, in-place updates,
transactions that fail and roll back, deletes, batch writes) leaves the same items, read
back through every read the project makes; and between requests nothing is held in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models import dynamodb_backends

from llmbatch.local import moto_spill
from llmbatch.local.moto_server import MotoServer, MotoServerProcess
from llmbatch.local.provision import REGION


def make_table(ddb: Any, name: str, *, index: bool = False) -> None:
    extra: dict[str, Any] = {}
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
    if index:
        attrs.append({"AttributeName": "kind", "AttributeType": "S"})
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": "by-kind",
                "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ]
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=attrs,
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


def moto_table(name: str) -> Any:
    (account,) = [a for a in dynamodb_backends if name in dynamodb_backends[a][REGION].tables]
    return dynamodb_backends[account][REGION].tables[name]


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    with MotoServer() as server:
        yield boto3.client(
            "dynamodb", endpoint_url=server.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
        )


@pytest.fixture
def tables(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A table on disk and the same table in moto's memory."""
    disk, memory = f"disk-{uuid.uuid4().hex[:6]}", f"mem-{uuid.uuid4().hex[:6]}"
    make_table(ddb, disk)
    with monkeypatch.context() as m:
        m.setattr(moto_spill, "spills", lambda table: False)
        make_table(ddb, memory)
    assert isinstance(moto_table(disk).items, moto_spill.SpilledItems)
    assert not isinstance(moto_table(memory).items, moto_spill.SpilledItems)
    return disk, memory


#: Sort keys whose UTF-8 order is not their UTF-16 order, and prefixes of each other.
KEYS = ["a", "a\x00", "ab", "b", "z", "é", "\uffff", "\U0001f600", "count#00", "count#01", "r0001", "r0010"]


def item(pk: str, sk: str, **attrs: Any) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **attrs}


def outcome(call: Any, **kwargs: Any) -> Any:
    """The answer without its request id, or the error's code and message."""
    try:
        resp = call(**kwargs)
    except ClientError as e:
        return ("error", e.response["Error"]["Code"], e.response.get("CancellationReasons"))
    resp.pop("ResponseMetadata", None)
    return resp


def writes(ddb: Any, table: str) -> list[Any]:
    """The same sequence of writes, each one's outcome."""
    out = []
    for pk in ("job-1", "job-2"):
        for i, sk in enumerate(KEYS):
            body = {"M": {"text": {"S": sk * 3}, "n": {"N": str(i)}, "l": {"L": [{"S": "x"}, {"N": "1.5"}]}}}
            out.append(outcome(ddb.put_item, TableName=table, Item=item(pk, sk, body=body, size={"S": "y" * 40_000})))
    # a conditional put that fails, and one that succeeds
    cond = {"ConditionExpression": "attribute_not_exists(pk)"}
    out.append(outcome(ddb.put_item, TableName=table, Item=item("job-1", "a", v={"N": "9"}), **cond))
    out.append(outcome(ddb.put_item, TableName=table, Item=item("job-1", "new", v={"N": "9"}), **cond))
    # in-place updates: counters, a nested attribute, a removal; one returns the new values
    for _ in range(3):
        out.append(
            outcome(
                ddb.update_item,
                TableName=table,
                Key=item("job-1", "count#00"),
                UpdateExpression="ADD hits :one SET body.text = :t REMOVE size",
                ExpressionAttributeValues={":one": {"N": "1"}, ":t": {"S": "changed"}},
                ReturnValues="ALL_NEW",
            )
        )
    # an update that creates its item, and one refused by its condition
    out.append(
        outcome(
            ddb.update_item,
            TableName=table,
            Key=item("job-3", "only"),
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"S": "made"}},
        )
    )
    out.append(
        outcome(
            ddb.update_item,
            TableName=table,
            Key=item("job-1", "b"),
            UpdateExpression="SET v = :v",
            ConditionExpression="attribute_exists(nothing)",
            ExpressionAttributeValues={":v": {"S": "never"}},
        )
    )
    # a transaction that fails on its last action: its update and put are rolled back
    tx = [
        {
            "Update": {
                "TableName": table,
                "Key": item("job-1", "count#01"),
                "UpdateExpression": "ADD hits :one",
                "ExpressionAttributeValues": {":one": {"N": "5"}},
            }
        },
        {"Put": {"TableName": table, "Item": item("job-2", "tx-put")}},
        {"Delete": {"TableName": table, "Key": item("job-2", "z")}},
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": item("job-1", "ab"),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]
    out.append(outcome(ddb.transact_write_items, TransactItems=tx))
    # and the same without the failing check: all of it applies
    out.append(outcome(ddb.transact_write_items, TransactItems=tx[:3]))
    # deletes (one of an absent item), and a batch of puts and deletes
    out.append(outcome(ddb.delete_item, TableName=table, Key=item("job-2", "é"), ReturnValues="ALL_OLD"))
    out.append(outcome(ddb.delete_item, TableName=table, Key=item("job-2", "absent")))
    batch = [{"PutRequest": {"Item": item("job-4", f"r{i:03d}", n={"N": str(i)})}} for i in range(20)]
    batch += [{"DeleteRequest": {"Key": item("job-1", "z")}}]
    out.append(outcome(ddb.batch_write_item, RequestItems={table: batch}))
    return out


def pages(ddb: Any, table: str, **query: Any) -> list[Any]:
    out, start = [], None
    while True:
        resp = outcome(ddb.query, TableName=table, **query, **({"ExclusiveStartKey": start} if start else {}))
        out.append(resp)
        start = resp.get("LastEvaluatedKey") if isinstance(resp, dict) else None
        if not start:
            return out


def reads(ddb: Any, table: str) -> list[Any]:
    job = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "job-1"}}}
    out: list[Any] = []
    out += pages(ddb, table, **job)  # 1 MB pages (the items are 40 KB)
    out += pages(ddb, table, **job, Limit=3)
    out += pages(ddb, table, **job, Limit=4, ScanIndexForward=False)
    out += pages(
        ddb,
        table,
        KeyConditionExpression="pk = :p AND begins_with(sk, :c)",
        ExpressionAttributeValues={":p": {"S": "job-1"}, ":c": {"S": "count#"}},
        ConsistentRead=True,
    )
    out += pages(
        ddb,
        table,
        KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
        ExpressionAttributeValues={":p": {"S": "job-2"}, ":a": {"S": "a"}, ":b": {"S": "é"}},
        ProjectionExpression="sk, body.n",
    )
    out += pages(ddb, table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "nobody"}})
    out += pages(ddb, table, **{**job, "ExpressionAttributeValues": {":p": {"S": "job-4"}}}, Select="COUNT")
    for pk, sk in [("job-1", "count#00"), ("job-1", "count#01"), ("job-2", "tx-put"), ("job-2", "z"), ("x", "y")]:
        out.append(outcome(ddb.get_item, TableName=table, Key=item(pk, sk), ConsistentRead=True))
    keys = [item("job-1", k) for k in KEYS]
    got = outcome(ddb.batch_get_item, RequestItems={table: {"Keys": keys, "ProjectionExpression": "pk, sk, hits"}})
    out.append(sorted((i["pk"]["S"], i["sk"]["S"], str(i.get("hits"))) for i in got["Responses"][table]))
    scanned = outcome(ddb.scan, TableName=table, ProjectionExpression="pk, sk")
    out.append(sorted((i["pk"]["S"], i["sk"]["S"]) for i in scanned["Items"]))
    out.append(ddb.describe_table(TableName=table)["Table"]["ItemCount"])
    return out


def named(answers: list[Any], table: str) -> list[Any]:
    """The answers with the table's name (in consumed capacities) made one."""
    return [json.loads(json.dumps(a).replace(table, "TABLE")) for a in answers]


def test_a_table_on_disk_answers_as_motos_own(ddb: Any, tables: tuple[str, str]) -> None:
    disk, memory = tables

    # WHEN the same writes are made to both
    on_disk, in_memory = named(writes(ddb, disk), disk), named(writes(ddb, memory), memory)

    # THEN each write's outcome is the same (the failed conditions and transaction included),
    # and so is every read of what they left
    assert on_disk == in_memory
    assert named(reads(ddb, disk), disk) == named(reads(ddb, memory), memory)
    assert on_disk[-5][:2] == ["error", "TransactionCanceledException"]  # and its rollback compared


def test_between_requests_nothing_is_held_in_memory(ddb: Any, tables: tuple[str, str]) -> None:
    disk, _ = tables
    spill = moto_spill.store()
    assert spill is not None

    # WHEN items are written, changed in place, and read
    writes(ddb, disk)
    reads(ddb, disk)

    # THEN the store holds none of them after the requests, and the file has them all
    assert spill.held() == 0
    table = moto_table(disk)
    rows = spill.query("SELECT count(*) FROM items WHERE tbl = ?", (table.items.tbl,))[0][0]
    assert rows == ddb.describe_table(TableName=disk)["Table"]["ItemCount"] == len(table) > 40


def test_tables_that_stay_in_memory(ddb: Any) -> None:
    # GIVEN a table with an index (its queries walk every item) and one with a number key
    indexed, numbered = f"idx-{uuid.uuid4().hex[:6]}", f"num-{uuid.uuid4().hex[:6]}"
    make_table(ddb, indexed, index=True)
    ddb.create_table(
        TableName=numbered,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )

    # THEN both keep moto's own dict of items
    assert not isinstance(moto_table(indexed).items, moto_spill.SpilledItems)
    assert not isinstance(moto_table(numbered).items, moto_spill.SpilledItems)


def test_a_deleted_table_leaves_nothing_on_disk(ddb: Any) -> None:
    name = f"gone-{uuid.uuid4().hex[:6]}"
    make_table(ddb, name)
    ddb.put_item(TableName=name, Item=item("p", "s"))
    tbl = moto_table(name).items.tbl
    spill = moto_spill.store()
    assert spill is not None and spill.query("SELECT count(*) FROM items WHERE tbl = ?", (tbl,))[0][0] == 1

    ddb.delete_table(TableName=name)

    assert spill.query("SELECT count(*) FROM items WHERE tbl = ?", (tbl,))[0][0] == 0


def test_a_store_left_by_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    # GIVEN the store of a process that ended without removing it, and one of a live process
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f"llmbatch-ddb-{int(gone.stdout)}-abc"
    live = tmp_path / f"llmbatch-ddb-{os.getpid()}-def"
    for d in (left, live):
        d.mkdir()
        (d / "items.sqlite").write_bytes(b"x")

    # WHEN a new store is made there
    store = moto_spill.SpillStore(str(tmp_path))
    try:
        # THEN the dead process's is gone, the live one's kept
        assert not left.exists() and live.exists()
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_a_stopped_dynamodb_process_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the local stack's DynamoDB process (its temporary directory here), a table on disk
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with MotoServerProcess() as server:
        ddb = boto3.client(
            "dynamodb", endpoint_url=server.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
        )
        make_table(ddb, "results")
        ddb.put_item(TableName="results", Item=item("job", "r1"))
        assert [p.name.split("-")[2] for p in tmp_path.glob("llmbatch-ddb-*")] == [str(server.pid)]

    # WHEN it is stopped as the local stack stops it / THEN its file is gone with it
    assert list(tmp_path.glob("llmbatch-ddb-*")) == []


def test_a_stopped_sqs_process_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the local stack's SQS process with a backlog deeper than it keeps in memory
    from llmbatch.local.moto_sqs import HOT_READY_MAX

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with MotoServerProcess() as server:
        sqs = boto3.client(
            "sqs", endpoint_url=server.url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
        )
        q = sqs.create_queue(QueueName="deep")["QueueUrl"]
        for start in range(0, HOT_READY_MAX + 10, 10):
            sqs.send_message_batch(
                QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": f"{start + i}"} for i in range(10)]
            )
        attrs = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        assert int(attrs["ApproximateNumberOfMessages"]) == HOT_READY_MAX + 10
        assert [p.name.split("-")[2] for p in tmp_path.glob("llmbatch-sqs-*")] == [str(server.pid)]

    # WHEN it is stopped as the local stack stops it / THEN its file is gone with it
    assert list(tmp_path.glob("llmbatch-sqs-*")) == []
