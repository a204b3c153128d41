"""The DeadLetter function cannot loop on anything (shared/deadletter.py): big bodies, ids
DynamoDB cannot key, undecodable messages, and errors that keep coming back. Against moto's
server over real HTTP with the stack built from template.yaml."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from llmbatch.client.stack import StackResources
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from shared import deadletter
from shared.container import DeadLetterContainer
from shared.deadletter import (
    UNASSIGNED,
    DeadLetterRecorder,
    dead_letter_body,
    is_redrivable,
    list_dead_letters,
)
from shared.jobs import JobMeta
from shared.messages import sign
from shared.payloads import PayloadStore
from shared.results import RequestStatus
from shared.store.item_size import ITEM_MAX_BYTES, item_bytes
from shared.store.result_store import ResultStore

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def resources() -> Iterator[StackResources]:
    with MotoServer() as server:
        yield provision_stack(server.url).resources


@pytest.fixture
async def clients(resources: StackResources) -> AsyncIterator[tuple[Any, Any]]:
    session = get_session()
    kw = resources.client_kwargs()
    async with session.create_client("dynamodb", **kw) as ddb, session.create_client("s3", **kw) as s3:
        yield ddb, s3


def make_store(resources: StackResources, ddb: Any, s3: Any | None) -> ResultStore:
    payloads = PayloadStore(s3, resources.payload_bucket) if s3 is not None else None
    return ResultStore(ddb, jobs_table=resources.jobs_table, results_table=resources.results_table, payloads=payloads)


@pytest.fixture
def store(resources: StackResources, clients: tuple[Any, Any]) -> ResultStore:
    return make_store(resources, *clients)


@pytest.fixture
def bucketless(resources: StackResources, clients: tuple[Any, Any]) -> ResultStore:
    return make_store(resources, clients[0], None)


async def new_job(store: ResultStore, sign_key: str = "") -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=3, sealed=True, enqueued=3, sign_key=sign_key))
    return job_id


def message(job_id: str, custom_id: str, text: str = "hi", **extra: Any) -> str:
    return json.dumps(
        {
            "v": 1,
            "job_id": job_id,
            "custom_id": custom_id,
            "line": 1,
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
            **extra,
        }
    )


def record(body: str, receives: int = 1, message_id: str | None = None) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": message_id or str(uuid.uuid4()),
            "receiptHandle": "rh",
            "body": body,
            "attributes": {"ApproximateReceiveCount": str(receives)},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }
    )


async def results_of(store: ResultStore, job_id: str) -> dict[str, Any]:
    return {r.custom_id: r async for r in store.iter_results(job_id)}


async def unassigned(store: ResultStore, key: str) -> deadletter.DeadLetter:
    (letter,) = [d for d in await list_dead_letters(store, UNASSIGNED) if d.key == key]
    return letter


async def test_a_body_over_the_item_limit_is_kept_in_the_bucket_by_reference(store: ResultStore) -> None:
    # GIVEN a dead letter of a known job whose message is 600 KB of CJK text (1.8 MB of UTF-8)
    job_id = await new_job(store)
    body = message(job_id, "big", "数" * 600_000)

    # WHEN the DeadLetter function handles it
    outcome = await DeadLetterRecorder(store).handle_record(record(body))

    # THEN the request is failed, and its letter refers to the whole body in the bucket,
    # with its size and hash, and can be redriven
    assert outcome == "recorded"
    assert (await results_of(store, job_id))["big"].error_code == "retries_exhausted"
    (letter,) = await list_dead_letters(store, job_id)
    assert letter.body == "" and (letter.body_ref or "").startswith(f"deadletters/{job_id}/")
    assert letter.body_bytes == len(body.encode()) and letter.body_sha256 == hashlib.sha256(body.encode()).hexdigest()
    assert await dead_letter_body(letter, store.payloads) == body
    assert is_redrivable(letter)


async def test_without_a_bucket_a_big_body_is_cut_to_fit_with_its_size_and_hash(bucketless: ResultStore) -> None:
    # GIVEN the same big dead letter, and no payload bucket
    job_id = await new_job(bucketless)
    body = message(job_id, "big", "数" * 600_000)

    # WHEN it is handled
    await DeadLetterRecorder(bucketless).handle_record(record(body))

    # THEN the letter keeps what fits, says it was cut, keeps the size and hash, and is not redrivable
    (letter,) = await list_dead_letters(bucketless, job_id)
    assert letter.truncated and body.startswith(letter.body) and len(letter.body) > 100_000
    assert letter.body_bytes == len(body.encode()) and letter.body_sha256 == hashlib.sha256(body.encode()).hexdigest()
    assert item_bytes(letter.to_item()) <= ITEM_MAX_BYTES
    assert not is_redrivable(letter)


async def test_ids_over_dynamodbs_key_limits_are_kept_unassigned_by_message_id(store: ResultStore) -> None:
    # GIVEN a dead letter of a known job whose custom_id is 1,100 bytes (over a sort key's 1,024)
    job_id = await new_job(store)
    body = message(job_id, "c" * 1_100)
    message_id = str(uuid.uuid4())

    # WHEN it is handled
    outcome = await DeadLetterRecorder(store).handle_record(record(body, message_id=message_id))

    # THEN it is kept under _unassigned by its message id, and nothing is recorded for the job
    assert outcome == "kept"
    assert (await unassigned(store, message_id)).body == body
    assert await results_of(store, job_id) == {}


async def test_a_decode_error_of_any_kind_is_kept(store: ResultStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a decoder that fails in a way nobody planned for
    def explode(raw: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(deadletter, "decode_message", explode)
    message_id = str(uuid.uuid4())

    # WHEN a message is handled
    outcome = await DeadLetterRecorder(store).handle_record(record('{"deep": [[[[]]]]}', message_id=message_id))

    # THEN it is kept under _unassigned with the reason
    assert outcome == "kept"
    assert "RecursionError" in (await unassigned(store, message_id)).reason


async def test_a_message_that_is_not_its_jobs_is_kept_unassigned_and_not_counted(store: ResultStore) -> None:
    # GIVEN a job with a signing key, and a message claiming it with a wrong signature
    key = "ab" * 16
    job_id = await new_job(store, sign_key=key)
    forged = message(job_id, "r-1", sig="0" * 32)
    genuine = message(job_id, "r-2", sig=sign(key, job_id, "r-2", 1))
    forged_id = str(uuid.uuid4())

    # WHEN both are handled
    recorder = DeadLetterRecorder(store)
    outcomes = [
        await recorder.handle_record(record(forged, message_id=forged_id)),
        await recorder.handle_record(record(genuine)),
    ]

    # THEN the forged one is kept apart and the job counts only the genuine one
    assert outcomes == ["kept", "recorded"]
    assert "signature" in (await unassigned(store, forged_id)).reason
    assert set(await results_of(store, job_id)) == {"r-2"}
    assert (await store.get_job(job_id)).counts.failed == 1


class BrokenWrites:
    """A DynamoDB client whose BatchWriteItem always fails unexpectedly."""

    def __init__(self, real: Any) -> None:
        self._real = real

    async def batch_write_item(self, **kwargs: Any) -> Any:
        raise RuntimeError("the table is on fire")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_an_unexpected_error_is_retried_then_let_go_with_its_hash_logged(
    resources: StackResources, clients: tuple[Any, Any], llmbatch_logs: pytest.LogCaptureFixture
) -> None:
    # GIVEN a DeadLetter function whose writes fail unexpectedly, and an unreadable message
    recorder = DeadLetterRecorder(make_store(resources, BrokenWrites(clients[0]), None))
    body = "not json at all"

    # WHEN it is received the first and second time, the error comes back (SQS will redeliver)
    for receives in (1, 2):
        with pytest.raises(RuntimeError):
            await recorder.handle_record(record(body, receives=receives))

    # THEN the third time it is acknowledged, logged at ERROR with the body's hash and size only
    with llmbatch_logs.at_level(logging.ERROR, logger="llmbatch.deadletter"):
        assert await recorder.handle_record(record(body, receives=3)) == "dropped"
    (entry,) = [r for r in llmbatch_logs.records if r.levelno == logging.ERROR]
    assert entry.body_sha256 == hashlib.sha256(body.encode()).hexdigest()  # type: ignore[attr-defined]
    assert entry.body_bytes == len(body)  # type: ignore[attr-defined]
    assert body not in entry.getMessage()


async def test_a_request_of_a_known_job_is_recorded_once_however_often_it_comes(store: ResultStore) -> None:
    # GIVEN a dead letter of a known job
    job_id = await new_job(store)
    body = message(job_id, "r-1")

    # WHEN it is handled twice (SQS delivers at least once)
    recorder = DeadLetterRecorder(store)
    outcomes = [await recorder.handle_record(record(body)), await recorder.handle_record(record(body))]

    # THEN the request is failed once and the letter kept once
    assert outcomes == ["recorded", "duplicate"]
    assert (await results_of(store, job_id))["r-1"].status is RequestStatus.FAILED
    assert [d.key for d in await list_dead_letters(store, job_id)] == ["r-1"]


def test_the_dead_letter_container_takes_the_payload_bucket_from_its_environment(
    resources: StackResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the DeadLetter function's environment, as the template sets it
    monkeypatch.setenv("AWS_ENDPOINT_URL", resources.aws_endpoint_url or "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", resources.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env = {
        "JOBS_TABLE": resources.jobs_table,
        "RESULTS_TABLE": resources.results_table,
        "PAYLOAD_BUCKET": resources.payload_bucket,
    }

    # WHEN its container is made
    container = DeadLetterContainer.create(env)
    try:
        # THEN its store keeps big bodies in that bucket
        assert container.recorder.store.payloads is not None
        assert container.recorder.store.payloads.bucket == resources.payload_bucket
    finally:
        container.close()
