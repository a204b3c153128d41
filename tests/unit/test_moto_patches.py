"""The local stack's patches to moto keep moto's (and AWS's) semantics.

``llmbatch/local/moto_sqs.py`` makes standard queues O(1) in their depth and
``llmbatch/local/moto_dynamodb.py`` rolls transactions back item by item: each test here is a
behaviour those patches must not change, checked over real HTTP against the patched server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from llmbatch.local import moto_sqs, moto_sqs_cold
from llmbatch.local.moto_server import MotoServer

REGION = "us-east-1"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


def client(service: str, url: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture(params=["in memory", "backlog on disk"])
def sqs(request: pytest.FixtureRequest, url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param == "backlog on disk":
        # Each behaviour holds as well when a queue's backlog waits on disk: the queues this
        # test makes keep 4 available messages in memory and thaw the rest 3 at a time.
        on_disk_limits(monkeypatch)
    return client("sqs", url)


def on_disk_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 available messages of a queue in memory, the rest thawed 3 at a time, rows written 2
    at a time (so some are on disk and some not yet written at every step)."""
    monkeypatch.setattr(moto_sqs, "HOT_READY_MAX", 4)
    monkeypatch.setattr(moto_sqs, "THAW_CHUNK", 3)
    monkeypatch.setattr(moto_sqs_cold, "_WRITE_CHUNK", 2)


@pytest.fixture
def ddb(url: str) -> Any:
    return client("dynamodb", url)


_names = iter(range(1_000_000))


def new_queue(sqs: Any, **attributes: str) -> str:
    return str(sqs.create_queue(QueueName=f"q{next(_names)}", Attributes=attributes)["QueueUrl"])


def counts(sqs: Any, queue: str) -> tuple[int, int, int]:
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return (
        int(a["ApproximateNumberOfMessages"]),
        int(a["ApproximateNumberOfMessagesNotVisible"]),
        int(a["ApproximateNumberOfMessagesDelayed"]),
    )


def receive(sqs: Any, queue: str, n: int = 10, **kw: Any) -> list[dict[str, Any]]:
    resp = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=n, AttributeNames=["All"], **kw)
    return list(resp.get("Messages", []))


def wait_until(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return got


# ---- SQS ------------------------------------------------------------------------------------


def test_a_message_is_given_once_until_its_visibility_timeout_ends_then_again_with_a_higher_count(sqs: Any) -> None:
    q = new_queue(sqs, VisibilityTimeout="1")
    sqs.send_message(QueueUrl=q, MessageBody="m")
    (first,) = receive(sqs, q)
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert receive(sqs, q) == []
    assert counts(sqs, q) == (0, 1, 0)
    again = wait_until(lambda: receive(sqs, q))
    assert again[0]["MessageId"] == first["MessageId"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again[0]["ReceiptHandle"] != first["ReceiptHandle"]


def test_messages_come_oldest_first_and_each_to_one_receiver(sqs: Any) -> None:
    q = new_queue(sqs)
    for start in range(0, 30, 10):
        sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)])
    assert counts(sqs, q) == (30, 0, 0)
    bodies = [m["Body"] for _ in range(3) for m in receive(sqs, q)]
    assert bodies == [f"m{i}" for i in range(30)]
    assert receive(sqs, q) == []
    assert counts(sqs, q) == (0, 30, 0)


def send_group(sqs: Any, queue: str, group: str | None, n: int) -> None:
    for start in range(0, n, 10):
        entries = [{"Id": str(i), "MessageBody": f"{group}-{start + i}"} for i in range(min(10, n - start))]
        for e in entries:
            if group is not None:
                e["MessageGroupId"] = group
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)


def test_a_quiet_tenant_is_served_before_a_noisy_one_with_a_backlog(sqs: Any) -> None:
    # GIVEN a big job with 40 of its messages in flight and more waiting, then a small job
    # sent after all of them (SQS fair queues: MessageGroupId is the tenant)
    q = new_queue(sqs)
    send_group(sqs, q, "big", 100)
    for _ in range(4):
        receive(sqs, q)
    send_group(sqs, q, "small", 5)
    # WHEN a consumer receives
    got = [m["Body"] for m in receive(sqs, q)]
    # THEN the small job's messages come first, then the big job's backlog in order
    assert got[:5] == [f"small-{i}" for i in range(5)]
    assert got[5:] == [f"big-{i}" for i in range(40, 45)]
    assert receive(sqs, q)[0]["Attributes"]["MessageGroupId"] == "big"


def test_below_the_noisy_threshold_messages_come_in_send_order_whatever_their_tenant(sqs: Any) -> None:
    # GIVEN a tenant with 20 in flight (under SQS's 30) and a second tenant's messages behind its backlog
    q = new_queue(sqs)
    send_group(sqs, q, "a", 30)
    receive(sqs, q)
    receive(sqs, q)
    send_group(sqs, q, "b", 3)
    # WHEN a consumer receives THEN it gets the oldest first: fairness has nothing to correct
    assert [m["Body"] for m in receive(sqs, q)] == [f"a-{i}" for i in range(20, 30)]


def test_between_two_noisy_tenants_the_one_with_fewer_in_flight_goes_first(sqs: Any) -> None:
    # GIVEN tenant a with 50 in flight and tenant b with 30, both with a backlog
    q = new_queue(sqs)
    send_group(sqs, q, "a", 60)
    for _ in range(5):
        receive(sqs, q)
    send_group(sqs, q, "b", 40)
    for _ in range(3):
        receive(sqs, q)
    before = counts(sqs, q)
    # WHEN a consumer receives THEN it gets b's, the noisy tenant with fewer in flight
    assert {m["Attributes"]["MessageGroupId"] for m in receive(sqs, q)} == {"b"}
    assert before == (20, 80, 0)


def test_a_message_without_a_group_is_a_tenant_of_its_own_and_counts_as_quiet(sqs: Any) -> None:
    q = new_queue(sqs)
    send_group(sqs, q, "big", 50)
    for _ in range(4):
        receive(sqs, q)
    send_group(sqs, q, None, 2)
    assert [m["Body"] for m in receive(sqs, q)][:2] == ["None-0", "None-1"]


def test_deleting_a_noisy_tenants_messages_makes_it_quiet_again(sqs: Any) -> None:
    # GIVEN a noisy tenant (40 in flight) and a quiet one, both with messages waiting
    q = new_queue(sqs)
    send_group(sqs, q, "a", 50)
    in_flight = [m for _ in range(4) for m in receive(sqs, q)]
    send_group(sqs, q, "b", 20)
    # WHEN the noisy tenant's messages are deleted (processed)
    for m in in_flight:
        sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
    # THEN send order applies again: a's older messages come first
    assert [m["Body"] for m in receive(sqs, q)] == [f"a-{i}" for i in range(40, 50)]


def test_delete_by_current_or_old_handle_and_a_second_delete_succeed_a_forged_handle_does_not(sqs: Any) -> None:
    q = new_queue(sqs)
    sqs.send_message(QueueUrl=q, MessageBody="a")
    sqs.send_message(QueueUrl=q, MessageBody="b")
    a, b = receive(sqs, q)
    sqs.change_message_visibility(QueueUrl=q, ReceiptHandle=a["ReceiptHandle"], VisibilityTimeout=0)
    (a2,) = wait_until(lambda: receive(sqs, q))
    # an old handle of a message received again still deletes it (as in moto)
    sqs.delete_message(QueueUrl=q, ReceiptHandle=a["ReceiptHandle"])
    sqs.delete_message(QueueUrl=q, ReceiptHandle=b["ReceiptHandle"])
    # deleting again succeeds
    sqs.delete_message(QueueUrl=q, ReceiptHandle=a2["ReceiptHandle"])
    resp = sqs.delete_message_batch(QueueUrl=q, Entries=[{"Id": "0", "ReceiptHandle": b["ReceiptHandle"]}])
    assert [s["Id"] for s in resp["Successful"]] == ["0"]
    assert counts(sqs, q) == (0, 0, 0)
    with pytest.raises(ClientError) as e:
        sqs.delete_message(QueueUrl=q, ReceiptHandle="not-a-handle")
    assert e.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=q, ReceiptHandle=a["ReceiptHandle"], VisibilityTimeout=5)
    assert e.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"


def test_a_message_received_max_receive_count_times_is_moved_to_the_dead_letter_queue(sqs: Any) -> None:
    dlq = new_queue(sqs)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q = new_queue(sqs, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}))
    sqs.send_message(QueueUrl=q, MessageBody="poison")
    for expected in ("1", "2"):
        (m,) = receive(sqs, q)
        assert m["Attributes"]["ApproximateReceiveCount"] == expected
        sqs.change_message_visibility(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        wait_until(lambda: counts(sqs, q)[0] == 1)
    # the third receive finds it past maxReceiveCount: it goes to the DLQ instead
    assert receive(sqs, q) == []
    assert counts(sqs, q) == (0, 0, 0)
    (dead,) = receive(sqs, dlq)
    assert dead["Body"] == "poison"


def test_delayed_messages_are_counted_as_delayed_and_given_after_their_delay(sqs: Any) -> None:
    q = new_queue(sqs)
    sqs.send_message(QueueUrl=q, MessageBody="later", DelaySeconds=1)
    assert counts(sqs, q) == (0, 0, 1)
    assert receive(sqs, q) == []
    (m,) = wait_until(lambda: receive(sqs, q))
    assert m["Body"] == "later"


def test_a_long_poll_returns_as_soon_as_a_message_is_sent(sqs: Any, url: str) -> None:
    import threading

    q = new_queue(sqs)
    got: list[list[dict[str, Any]]] = []
    t = threading.Thread(target=lambda: got.append(receive(client("sqs", url), q, WaitTimeSeconds=20)))
    t.start()
    sqs.send_message(QueueUrl=q, MessageBody="now")
    t.join(timeout=15)
    assert not t.is_alive(), "the long poll did not wake on the send"
    assert [m["Body"] for m in got[0]] == ["now"]


@pytest.mark.parametrize("action", ["send_message", "send_message_batch"])
def test_sends_wait_their_turn_and_a_receive_does_not_wait_for_them(
    url: str, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """While one send is being worked on (held here inside moto), a receive is answered and
    the next send, which has reached the server, waits; released, both sends arrive."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.sqs.responses import SQSResponse

    sqs = client("sqs", url)
    q = new_queue(sqs)
    sqs.send_message(QueueUrl=q, MessageBody="ready")
    entered, release, second_arrived = threading.Event(), threading.Event(), threading.Event()
    held = getattr(SQSResponse, action)

    def held_once(self: Any) -> Any:
        if not entered.is_set():
            entered.set()
            release.wait(30)
        return held(self)

    monkeypatch.setattr(SQSResponse, action, held_once)
    # Outside the local stack's gate: tells when the second send has reached the server.
    served = DomainDispatcherApplication.__call__

    def arriving(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if entered.is_set() and str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("AmazonSQS.Send"):
            second_arrived.set()
        return served(self, environ, start_response)

    monkeypatch.setattr(DomainDispatcherApplication, "__call__", arriving)

    senders = [client("sqs", url), client("sqs", url)]

    def send(sender: Any, body: str) -> threading.Thread:
        if action == "send_message":
            call = lambda: sender.send_message(QueueUrl=q, MessageBody=body)  # noqa: E731
        else:
            call = lambda: sender.send_message_batch(QueueUrl=q, Entries=[{"Id": "0", "MessageBody": body}])  # noqa: E731
        t = threading.Thread(target=call, daemon=True)
        t.start()
        return t

    first = send(senders[0], "first")
    second: threading.Thread | None = None
    try:
        assert entered.wait(15), "the first send never reached moto"
        second = send(senders[1], "second")
        assert second_arrived.wait(15), "the second send never reached the server"
        got: list[list[dict[str, Any]]] = []
        receiver = threading.Thread(target=lambda: got.append(receive(client("sqs", url), q)), daemon=True)
        receiver.start()
        receiver.join(timeout=15)
        assert not receiver.is_alive(), "the receive waited for the send being worked on"
        assert [m["Body"] for m in got[0]] == ["ready"]
        second.join(timeout=1.0)  # unadmitted, a send here takes milliseconds
        assert second.is_alive(), "a second send was worked on beside the first"
    finally:
        release.set()  # a failure above must not leave the server's sends held
        first.join(timeout=15)
        if second is not None:
            second.join(timeout=15)
    assert not first.is_alive() and not second.is_alive()
    bodies = {m["Body"] for m in receive(sqs, q, VisibilityTimeout=0)}
    bodies |= {m["Body"] for m in receive(sqs, q)}
    assert {"first", "second"} <= bodies


def test_purge_empties_the_queue_and_old_handles_no_longer_change_visibility(sqs: Any) -> None:
    q = new_queue(sqs)
    sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)])
    (m, *_) = receive(sqs, q, 2)
    sqs.purge_queue(QueueUrl=q)
    assert counts(sqs, q) == (0, 0, 0)
    with pytest.raises(ClientError) as e:
        sqs.change_message_visibility(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    assert e.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    assert receive(sqs, q) == []
    sqs.send_message(QueueUrl=q, MessageBody="after")
    assert [x["Body"] for x in receive(sqs, q)] == ["after"]


def index_of(queue_url: str) -> moto_sqs.MessageIndex:
    """The index of a queue of the in-process server (its default account)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    return moto_sqs._index(sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[queue_url.rsplit("/", 1)[1]])


def on_disk(ix: moto_sqs.MessageIndex) -> int:
    return 0 if ix._cold_id is None else moto_sqs_cold.store().count(ix._cold_id)


@pytest.fixture
def deep_sqs(url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client whose new queues keep their backlog on disk (:func:`on_disk_limits`)."""
    on_disk_limits(monkeypatch)
    return client("sqs", url)


def test_a_deep_queues_backlog_waits_on_disk_and_comes_back_in_send_order(deep_sqs: Any) -> None:
    # GIVEN a queue that keeps 4 available messages in memory, thawing 3 at a time
    sqs = deep_sqs
    q = new_queue(sqs)
    ix = index_of(q)
    # WHEN a backlog of two tenants and messages without a group is sent
    send_group(sqs, q, "a", 12)
    send_group(sqs, q, None, 6)
    send_group(sqs, q, "b", 12)
    # THEN memory holds the first 4 and each tenant's first one, the rest are on disk, all counted
    assert len(ix.live) == 6 and on_disk(ix) == 24
    assert counts(sqs, q) == (30, 0, 0)
    assert [m.body for m in ix.in_order()][:13] == [f"a-{i}" for i in range(12)] + ["None-0"]
    # AND receivers get every message once, each tenant's in send order
    got = [m["Body"] for _ in range(4) for m in receive(sqs, q)]
    assert sorted(got) == sorted(
        [f"a-{i}" for i in range(12)] + [f"None-{i}" for i in range(6)] + [f"b-{i}" for i in range(12)]
    )
    for tenant, n in (("a", 12), ("None", 6), ("b", 12)):
        assert [x for x in got if x.startswith(f"{tenant}-")] == [f"{tenant}-{i}" for i in range(n)]
    assert counts(sqs, q) == (0, 30, 0) and on_disk(ix) == 0 and ix.frozen == {}


def test_a_purged_or_deleted_deep_queue_leaves_nothing_on_disk(deep_sqs: Any) -> None:
    import gc

    sqs = deep_sqs
    purged, deleted = new_queue(sqs), new_queue(sqs)
    for q in (purged, deleted):
        send_group(sqs, q, None, 20)
    ix = index_of(purged)
    cold_id = index_of(deleted)._cold_id
    assert ix.frozen_total == 16 and index_of(deleted).frozen_total == 16 and cold_id is not None
    # WHEN one is purged and the other deleted
    sqs.purge_queue(QueueUrl=purged)
    sqs.delete_queue(QueueUrl=deleted)
    gc.collect()
    # THEN neither has a message left on disk, and the purged one works on
    assert on_disk(ix) == 0 and moto_sqs_cold.store().count(cold_id) == 0
    assert counts(sqs, purged) == (0, 0, 0)
    send_group(sqs, purged, None, 6)
    assert [m["Body"] for m in receive(sqs, purged)] == [f"None-{i}" for i in range(6)]


def test_dead_letters_moved_to_a_deep_dead_letter_queue_all_arrive_in_order(deep_sqs: Any) -> None:
    # GIVEN a queue whose messages go to its dead-letter queue after one receive, both deep
    sqs = deep_sqs
    dlq = new_queue(sqs)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q = new_queue(sqs, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}))
    send_group(sqs, q, "job", 10)
    got = [m for _ in range(2) for m in receive(sqs, q)]
    assert len(got) == 10
    for m in got:  # each fails once and comes back
        sqs.change_message_visibility(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    # WHEN the queue is received from again: every message is past maxReceiveCount
    assert receive(sqs, q) == []
    # THEN all ten wait in the dead-letter queue, six of them on disk, and come out in order
    assert counts(sqs, dlq) == (10, 0, 0) and index_of(dlq).frozen_total == 6
    dead = [m["Body"] for _ in range(4) for m in receive(sqs, dlq)]
    assert dead == [f"job-{i}" for i in range(10)]


def test_messages_lost_from_disk_stop_being_counted() -> None:
    # A store that lost its rows (not expected: it is the process's own file) must not leave
    # the queue counting messages it can never give, nor looking for them at every receive.
    from moto.sqs.models import Message

    ix = moto_sqs.MessageIndex(hot_max=2)
    for i in range(5):
        m = Message(f"{i:08d}-0000-0000-0000-000000000000", f"m{i}")
        m.sent_timestamp = 0
        ix.add(m)
    assert ix.counts[moto_sqs.READY] == 5 and ix.frozen_total == 3
    assert ix._cold_id is not None
    moto_sqs_cold.store().drop(ix._cold_id)
    assert [ix.take().body, ix.take().body, ix.take()] == ["m0", "m1", None]
    assert ix.counts[moto_sqs.READY] == 0 and ix.frozen == {} and ix.frozen_total == 0


def test_a_fifo_queue_keeps_motos_own_deduplication(sqs: Any) -> None:
    q = str(
        sqs.create_queue(
            QueueName=f"f{next(_names)}.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
    )
    for _ in range(2):
        sqs.send_message(QueueUrl=q, MessageBody="same", MessageGroupId="g")
    assert [m["Body"] for m in receive(sqs, q)] == ["same"]


def test_a_send_costs_the_same_on_a_deep_queue(sqs: Any) -> None:
    # Not a timing: the work a send and a receive do does not walk the queue. moto's own
    # code read Queue.attributes (every message) on each; counting those reads shows it.
    from moto.sqs import models

    q = new_queue(sqs)
    for _ in range(200):
        sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(10)])
    walked = {"n": 0}
    original = models.Message.visible

    def counting(self: Any) -> bool:
        walked["n"] += 1
        return bool(original.fget(self))

    models.Message.visible = property(counting)  # type: ignore[assignment]
    try:
        sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": "y"} for i in range(10)])
        receive(sqs, q)
    finally:
        models.Message.visible = original  # type: ignore[assignment]
    assert walked["n"] < 50


# ---- DynamoDB transactions ------------------------------------------------------------------


def new_table(ddb: Any) -> str:
    name = f"t{next(_names)}"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    return name


def items(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {i["sk"]["S"]: i for i in ddb.scan(TableName=table)["Items"]}


def test_a_transaction_with_a_failed_condition_changes_nothing_and_says_which_failed(ddb: Any) -> None:
    t = new_table(ddb)
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "counter"}, "n": {"N": "1"}})
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "gone"}, "v": {"S": "keep"}})
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "taken"}})
    before = items(ddb, t)
    with pytest.raises(ClientError) as e:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": t, "Item": {"pk": {"S": "j"}, "sk": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": t,
                        "Key": {"pk": {"S": "j"}, "sk": {"S": "counter"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"Delete": {"TableName": t, "Key": {"pk": {"S": "j"}, "sk": {"S": "gone"}}}},
                {
                    "Put": {
                        "TableName": t,
                        "Item": {"pk": {"S": "j"}, "sk": {"S": "taken"}},
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                },
            ]
        )
    assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in e.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    # all or nothing: the put, the update (in place) and the delete are undone
    assert items(ddb, t) == before


def test_a_transaction_that_succeeds_applies_every_action(ddb: Any) -> None:
    t = new_table(ddb)
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "counter"}, "n": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": t, "Item": {"pk": {"S": "j"}, "sk": {"S": f"r{i}"}}}} for i in range(50)]
        + [
            {
                "Update": {
                    "TableName": t,
                    "Key": {"pk": {"S": "j"}, "sk": {"S": "counter"}},
                    "UpdateExpression": "ADD n :k",
                    "ExpressionAttributeValues": {":k": {"N": "50"}},
                }
            }
        ]
    )
    after = items(ddb, t)
    assert len(after) == 51 and after["counter"]["n"] == {"N": "51"}


def test_a_transaction_refused_by_validation_part_way_changes_nothing(ddb: Any) -> None:
    t = new_table(ddb)
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": t, "Item": {"pk": {"S": "j"}, "sk": {"S": "a"}}}},
                {"Put": {"TableName": t, "Item": {"pk": {"S": "j"}, "sk": {"S": "a"}, "x": {"S": "twice"}}}},
            ]
        )
    assert items(ddb, t) == {}


def test_a_transaction_does_not_copy_the_table(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a timing: moto's own code deep-copies every table a transaction names.
    import copy

    from moto.dynamodb.models.table import Table

    t = new_table(ddb)
    copied: list[object] = []
    real = copy.deepcopy

    def spy(obj: object, memo: Any = None) -> object:
        if isinstance(obj, Table):
            copied.append(obj)
        return real(obj, memo)

    monkeypatch.setattr(copy, "deepcopy", spy)
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": t, "Item": {"pk": {"S": "j"}, "sk": {"S": "a"}}}}])
    assert copied == []
    assert set(items(ddb, t)) == {"a"}


def test_the_same_condition_is_judged_against_each_item_afresh(ddb: Any) -> None:
    # The parsed condition is reused (llmbatch/local/moto_dynamodb.py); its verdict is not.
    t = new_table(ddb)
    first_write = {"ConditionExpression": "attribute_not_exists(sk)"}
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "a"}}, **first_write)
    with pytest.raises(ClientError) as e:
        ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "a"}}, **first_write)
    assert e.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "b"}}, **first_write)
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "c"}, "v": {"N": "3"}})
    newer = {"ConditionExpression": "v < :v", "ExpressionAttributeValues": {":v": {"N": "5"}}}
    ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "c"}, "v": {"N": "5"}}, **newer)
    with pytest.raises(ClientError):  # the same expression and value, now false for the stored item
        ddb.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "c"}, "v": {"N": "5"}}, **newer)
    assert set(items(ddb, t)) == {"a", "b", "c"} and items(ddb, t)["c"]["v"] == {"N": "5"}


def test_an_item_over_the_size_limit_is_refused_and_one_under_it_is_stored(ddb: Any) -> None:
    t = new_table(ddb)
    key = {"pk": {"S": "j"}, "sk": {"S": "big"}}
    ddb.put_item(TableName=t, Item={**key, "a": {"S": "x" * 200_000}, "b": {"S": "y" * 190_000}})
    with pytest.raises(ClientError) as e:
        ddb.put_item(TableName=t, Item={**key, "a": {"S": "x" * 200_000}, "b": {"S": "y" * 210_000}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert len(items(ddb, t)["big"]["b"]["S"]) == 190_000


# ---- the server: routing and the DynamoDB process -------------------------------------------


def test_each_service_is_found_for_every_request_on_one_server(url: str) -> None:
    # The dispatcher's lookup is remembered per host name: requests of several services
    # through one server, in turn, each still reach their own.
    for _ in range(2):
        client("sqs", url).list_queues()
        assert isinstance(client("dynamodb", url).list_tables()["TableNames"], list)
        assert client("ssm", url).describe_parameters()["Parameters"] is not None
        assert client("lambda", url).list_functions()["Functions"] == []


def test_dynamodb_calls_to_the_stacks_endpoint_reach_the_dynamodb_process_unchanged() -> None:
    from llmbatch.local.moto_server import MotoServerProcess

    with MotoServerProcess() as dynamodb, MotoServerProcess(forward_dynamodb=dynamodb.url) as main:
        # GIVEN a table made through the stack's one endpoint
        t = new_table(client("dynamodb", main.url))
        # THEN it lives in the DynamoDB process
        assert t in client("dynamodb", dynamodb.url).list_tables()["TableNames"]
        # ... errors come back as DynamoDB's own (a failed condition, through the forwarder)
        via_main = client("dynamodb", main.url)
        via_main.put_item(TableName=t, Item={"pk": {"S": "j"}, "sk": {"S": "a"}})
        with pytest.raises(ClientError) as e:
            via_main.put_item(
                TableName=t,
                Item={"pk": {"S": "j"}, "sk": {"S": "a"}},
                ConditionExpression="attribute_not_exists(sk)",
            )
        assert e.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
        # ... and the other services stay in the stack's own process
        q = client("sqs", main.url).create_queue(QueueName="stays")["QueueUrl"]
        assert q in client("sqs", main.url).list_queues().get("QueueUrls", [])
        assert client("sqs", dynamodb.url).list_queues().get("QueueUrls", []) == []


def json_call(service: str, target: str, body: Any, **headers: str) -> dict[str, Any]:
    """The WSGI environ of a JSON-protocol call as an SDK sends it (``body`` as is if bytes)."""
    from werkzeug.test import EnvironBuilder

    auth = (
        f"AWS4-HMAC-SHA256 Credential=testing/20261130/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
    return dict(
        EnvironBuilder(
            method="POST",
            path="/",
            base_url="http://127.0.0.1:5000",
            headers={
                "X-Amz-Target": target,
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": auth,
                **headers,
            },
            data=body if isinstance(body, bytes) else json.dumps(body),
        ).get_environ()
    )


#: Headers that differ between any two answers (or, the CORS one, that only Flask's path adds).
_VOLATILE_HEADERS = {"x-amzn-requestid", "x-amz-crc32", "date", "access-control-allow-origin"}


def wsgi_answer(app: Any, environ: dict[str, Any]) -> tuple[Any, ...]:
    """Status, lasting headers and body of ``app``'s answer, or the exception it raised."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=headers)

    try:
        body = b"".join(app(environ, start_response))
    except Exception as e:  # compared, not handled
        return ("raised", type(e).__name__, str(e))
    lasting = sorted((k.lower(), v) for k, v in seen["headers"] if k.lower() not in _VOLATILE_HEADERS)
    return seen["status"], lasting, body


def test_json_calls_are_answered_without_flask_exactly_as_through_it(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN moto's dispatcher, patched (the url fixture's server applied the patches), and
    # Flask's entry counted
    from flask import Flask
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    through_flask: list[str] = []
    flask_entry = Flask.wsgi_app

    def counted(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        through_flask.append(str(environ.get("HTTP_X_AMZ_TARGET")))
        return flask_entry(self, environ, start_response)

    monkeypatch.setattr(Flask, "wsgi_app", counted)

    def flask_answer(environ: dict[str, Any]) -> tuple[Any, ...]:  # what moto's dispatch does
        return wsgi_answer(dispatcher.get_application(environ), environ)

    name = f"direct{next(_names)}"
    created = flask_answer(json_call("sqs", "AmazonSQS.CreateQueue", {"QueueName": name}))
    queue = json.loads(created[2])["QueueUrl"]
    flask_answer(
        json_call(
            "dynamodb",
            "DynamoDB_20120810.CreateTable",
            {
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        )
    )
    through_flask.clear()
    calls = [
        ("sqs", "AmazonSQS.GetQueueUrl", {"QueueName": name}),
        ("sqs", "AmazonSQS.GetQueueUrl", {"QueueName": "no-such-queue"}),
        ("sqs", "AmazonSQS.ReceiveMessage", {"QueueUrl": queue, "MaxNumberOfMessages": 10}),
        ("sqs", "AmazonSQS.ReceiveMessage", {"QueueUrl": queue, "MaxNumberOfMessages": 11}),
        ("sqs", "AmazonSQS.GetQueueAttributes", {"QueueUrl": queue, "AttributeNames": ["VisibilityTimeout"]}),
        ("sqs", "AmazonSQS.NoSuchAction", {}),
        ("sqs", "AmazonSQS.", {}),  # no action: moto's 404, with no content type of its own
        ("sqs", "AmazonSQS.SendMessage", b"{not json"),
        ("dynamodb", "DynamoDB_20120810.DescribeTable", {"TableName": "no-such-table"}),
        ("dynamodb", "DynamoDB_20120810.GetItem", {"TableName": name, "Key": {"pk": {"S": "absent"}}}),
        ("dynamodb", "DynamoDB_20120810.GetItem", {"TableName": name, "Key": {"pk": {"N": "1"}}}),
        (
            "dynamodb",
            "DynamoDB_20120810.PutItem",
            {"TableName": name, "Item": {"pk": {"S": "a"}}, "ConditionExpression": "attribute_exists(pk)"},
        ),
    ]
    kinds = set()
    for service, target, body in calls:
        # WHEN a call reaches the dispatcher as it reaches the server
        direct = wsgi_answer(dispatcher, json_call(service, target, body))
        # THEN Flask had no part in it
        assert through_flask == [], target
        # ... and the answer is what Flask's path gives the same call: the same status,
        # headers and body, the same errors (moto's 400s, a refused condition, an action
        # moto does not know raised as it is by Flask in moto's debug mode)
        assert direct == flask_answer(json_call(service, target, body)), target
        through_flask.clear()
        kinds.add(direct[0])
    assert kinds == {"200 OK", "400 BAD REQUEST", "404 NOT FOUND", "raised"}
    # ... and the one header Flask's path adds (Flask-CORS's) is not there
    headers: list[tuple[str, str]] = []
    b"".join(dispatcher(json_call("sqs", "AmazonSQS.GetQueueUrl", {"QueueName": name}), lambda s, h: headers.extend(h)))
    assert "access-control-allow-origin" not in {
        k.lower() for k, _ in headers
    }  # answers, errors and a crash all compared

    # WHEN a browser makes the call (an Origin: CORS) THEN it goes through Flask, with its CORS header
    browser = dispatcher(
        json_call("sqs", "AmazonSQS.GetQueueUrl", {"QueueName": name}, Origin="http://x"), lambda *a: None
    )
    assert b"QueueUrl" in b"".join(browser)
    assert through_flask == ["AmazonSQS.GetQueueUrl"]
    # ... as does another service's JSON call
    b"".join(dispatcher(json_call("ssm", "AmazonSSM.DescribeParameters", {}), lambda *a: None))
    assert through_flask == ["AmazonSQS.GetQueueUrl", "AmazonSSM.DescribeParameters"]


def test_a_cached_condition_still_refuses_unused_names_and_values(ddb: Any) -> None:
    # moto checks the names and values a condition used against the request's, from what
    # the parser found: the cache must answer that too, every time.
    t = new_table(ddb)
    for _ in range(3):
        ddb.update_item(
            TableName=t,
            Key={"pk": {"S": "j"}, "sk": {"S": "meta"}},
            UpdateExpression="SET n = :n",
            ConditionExpression="attribute_not_exists(#g) OR n < :n",
            ExpressionAttributeNames={"#g": "gone"},
            ExpressionAttributeValues={":n": {"N": "1"}},
        )
        with pytest.raises(ClientError) as e:
            ddb.update_item(
                TableName=t,
                Key={"pk": {"S": "j"}, "sk": {"S": "meta"}},
                UpdateExpression="SET n = :n",
                ConditionExpression="attribute_not_exists(sk)",
                ExpressionAttributeNames={"#unused": "x"},
                ExpressionAttributeValues={":n": {"N": "1"}},
            )
        assert e.value.response["Error"]["Code"] == "ValidationException"


def test_a_queue_keeps_nothing_of_the_messages_it_deleted() -> None:
    # Memory flat with the job's size: deleted messages leave no entry behind in the index
    # (moto itself kept every deleted receipt handle forever).
    from moto.sqs.models import Message

    from llmbatch.local.moto_sqs import MessageIndex

    ix = MessageIndex()
    # GIVEN a backlog sent before any is received (as a submit runs ahead of the workers)
    sent = [Message(f"{i:08d}-0000-0000-0000-000000000000", "body") for i in range(5000)]
    for m in sent:
        m.sent_timestamp = 0
        ix.add(m)
    ix.promote(float("inf"))
    # WHEN each is received (in flight for long, as with the stack's 720 s) and deleted
    for m in sent:
        assert ix.take() is m
        m.visible_at = 10**15
        ix.received(m)
        ix.remove(m)
    # THEN nothing of them is left
    assert ix.live == {} and ix.handles == {}
    assert len(ix.ready) + len(ix.waiting) <= 1024 + 1


def test_a_clients_connection_stays_open_between_requests_as_at_aws(url: str) -> None:
    # GIVEN one HTTP/1.1 connection to the local stack's moto
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=10)
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host, Signature=x",
    }
    seen = set()
    for _ in range(3):
        # WHEN requests follow one another on it
        conn.request("POST", "/", body=b"{}", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        # THEN each is answered and none asks to close: the same socket carries them all
        assert resp.status == 200 and "TableNames" in json.loads(body)
        assert (resp.getheader("Connection") or "").lower() != "close"
        assert conn.sock is not None
        seen.add(conn.sock.getsockname())
    assert len(seen) == 1
    conn.close()


def test_no_item_or_message_outlives_its_use(url: str, sqs: Any, ddb: Any) -> None:
    # GIVEN items written and changed, and messages sent, received and deleted
    from moto.dynamodb.models.dynamo_type import Item
    from moto.s3.models import FakeKey
    from moto.sqs.models import Message

    table = new_table(ddb)
    for i in range(20):
        ddb.put_item(TableName=table, Item={"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "n": {"N": "1"}})
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "p"}, "sk": {"S": f"s{i}"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
    q = sqs.create_queue(QueueName=f"q{next(_names)}")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": "b"} for i in range(10)])
    got = receive(sqs, q, 10)
    sqs.delete_message_batch(
        QueueUrl=q, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in got]
    )
    s3 = client("s3", url)
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="k", Body=b"x")

    # THEN moto's dashboard list keeps none of the items or messages, and still keeps S3's
    # objects (moto closes their files through it)
    assert Item.instances_tracked == [] and Message.instances_tracked == []  # type: ignore[attr-defined]
    assert FakeKey.instances_tracked  # type: ignore[attr-defined]
