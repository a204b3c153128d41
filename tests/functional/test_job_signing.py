"""Job membership: every message ``submit`` (or an SDK producer through ``create_job``)
sends carries its job's signature, and the key that makes it stays in the job's record.

No worker runs here: each test reads the queue itself, against moto's server over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmbatch.client import enqueue
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from shared.errors import ConfigError
from shared.jobs import JobMeta, NewJob, new_job_id
from shared.messages import MESSAGE_VERSION, SIGN_KEY_HEX_LEN, RequestMessage, belongs_to, decode_message
from tests.functional.conftest import chat_line, write_jobfile


@pytest.fixture(scope="module")
def resources() -> Iterator[StackResources]:
    with MotoServer() as moto:
        yield provision_stack(moto.url).resources


def drain(res: StackResources) -> list[RequestMessage]:
    """Every message on the request queue, received and deleted."""
    sqs = boto3.client("sqs", **res.client_kwargs())
    out: list[RequestMessage] = []
    while True:
        got = sqs.receive_message(QueueUrl=res.request_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            return out
        for m in messages:
            out.append(decode_message(m["Body"]))
            sqs.delete_message(QueueUrl=res.request_queue_url, ReceiptHandle=m["ReceiptHandle"])


async def test_submit_signs_every_message_with_the_key_kept_in_the_job(
    resources: StackResources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drain(resources)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(12)])
    async with LlmbatchClient(resources) as client:
        # WHEN a job file is submitted
        job_id = await client.submit(job_file)
        job = await client.status(job_id)
    sent = drain(resources)

    # THEN the job has a key of its own, every message is signed with it, and the key is
    # shown nowhere: not in the job's status, its repr, or any output
    key = job.meta.sign_key
    assert len(key) == SIGN_KEY_HEX_LEN
    assert sorted(m.custom_id for m in sent) == sorted(f"r{i}" for i in range(12))
    assert all(m.sig and belongs_to(key, m) for m in sent)
    assert key not in json.dumps(job.to_dict()) and key not in repr(job)
    out = capsys.readouterr()
    assert key not in out.out + out.err


async def test_resume_signs_with_the_stored_key(
    resources: StackResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a submit of 30 requests in checkpoints of 10 whose connection dies after one batch
    drain(resources)
    monkeypatch.setattr(enqueue, "SUBMIT_CHECKPOINT", 10)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(30)])
    calls = 0
    real_send = enqueue.send_batch

    async def send_then_die(sqs: Any, queue_url: str, batch: list[str], group: str | None) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("the submitting laptop went to sleep")
        await real_send(sqs, queue_url, batch, group)

    async with LlmbatchClient(resources) as client:
        monkeypatch.setattr(enqueue, "send_batch", send_then_die)
        with pytest.raises(ConnectionError):
            await client.submit(job_file)
        monkeypatch.setattr(enqueue, "send_batch", real_send)
        job = (await client.list_jobs(limit=1))[0]
        assert job.meta.enqueued == 10

        # WHEN it is resumed
        await client.submit(job_file, resume_job_id=job.job_id)
        after = await client.status(job.job_id)
    sent = drain(resources)

    # THEN the key is the one the job was made with, and every message (both runs) verifies
    assert after.meta.sign_key == job.meta.sign_key != ""
    assert len(sent) == 30
    assert all(belongs_to(job.meta.sign_key, m) for m in sent)


async def test_a_job_made_before_keys_is_resumed_unsigned(resources: StackResources, tmp_path: Path) -> None:
    # GIVEN a job record without a key (as every job made before keys), half enqueued
    drain(resources)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(4)])
    job_id = new_job_id()
    async with LlmbatchClient(resources) as client:
        await client.store.create_job(JobMeta(job_id=job_id, total=4, enqueued=0))

        # WHEN it is resumed
        await client.submit(job_file, resume_job_id=job_id)
        job = await client.status(job_id)
    sent = drain(resources)

    # THEN its messages go unsigned, and belong to it as before
    assert job.meta.sign_key == ""
    assert [m.sig for m in sent] == [None] * 4
    assert all(belongs_to("", m) for m in sent)


async def test_an_sdk_producer_creates_a_job_and_signs_its_own_messages(resources: StackResources) -> None:
    drain(resources)
    async with LlmbatchClient(resources) as client:
        # WHEN a program creates a job for the messages it will send itself
        job = await client.create_job(2, name="from my program", endpoint="default")
        job_id, sign_key = job
        stored = await client.status(job_id)
        body = {"model": "m", "input": "x"}
        messages = [
            RequestMessage(
                v=MESSAGE_VERSION,
                job_id=job_id,
                custom_id=f"doc-{i}",
                line=i,
                url="/v1/embeddings",
                body=body,
                sig=job.sign(f"doc-{i}", i),
            ).encode()
            for i in (1, 2)
        ]
        await client.enqueue(messages)
    sent = drain(resources)

    # THEN the job is ready (sealed, both enqueued), its key is the one returned, its
    # messages belong to it, and the returned value never shows the key
    assert isinstance(job, NewJob)
    assert stored.meta.sign_key == sign_key and stored.total == 2
    assert stored.meta.sealed and stored.meta.enqueued == 2
    assert stored.to_dict()["status"] == "queued"
    assert all(belongs_to(sign_key, m) for m in sent)
    assert sign_key not in repr(job) and sign_key not in str(job)


async def test_create_job_refuses_a_job_of_no_requests(resources: StackResources) -> None:
    async with LlmbatchClient(resources) as client:
        with pytest.raises(ConfigError):
            await client.create_job(0)
