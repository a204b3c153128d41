"""The DeadLetter function checks the jobs it recorded failures of (one may be finished), and
hands a record back when a job's finished event could not be published (shared/container.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.poller import sqs_record
from shared.container import DeadLetterContainer
from shared.finish import FinishOutcome


class FakeRecorder:
    """Records every letter as a failure of the job named in its body."""

    def __init__(self) -> None:
        self.touched: dict[str, str] = {}

    async def handle_record(self, record: Any) -> str:
        self.touched.setdefault(record.body, record.message_id)
        return "recorded"

    def take_touched(self) -> dict[str, str]:
        touched, self.touched = self.touched, {}
        return touched


class FakeFinisher:
    def __init__(self, outcomes: dict[str, FinishOutcome]) -> None:
        self.outcomes = outcomes
        self.checked: list[set[str]] = []

    async def check(self, job_ids: Iterable[str]) -> dict[str, FinishOutcome]:
        ids = set(job_ids)
        self.checked.append(ids)
        return {j: self.outcomes[j] for j in ids}


def test_a_job_whose_event_failed_gets_one_record_handed_back_and_the_others_none() -> None:
    # GIVEN dead letters of two jobs, and a bus that fails the event of one of them
    loop = asyncio.new_event_loop()
    finisher = FakeFinisher({"job-a": FinishOutcome.FAILED, "job-b": FinishOutcome.PUBLISHED})
    container = DeadLetterContainer(loop, FakeRecorder(), AsyncExitStack(), finisher)  # type: ignore[arg-type]
    letters = [("m1", "job-a"), ("m2", "job-a"), ("m3", "job-b")]
    event = {"Records": [sqs_record({"MessageId": m, "ReceiptHandle": m, "Body": j}, "arn:q") for m, j in letters]}
    try:
        # WHEN the batch is handled
        response = container.handle(event, FakeLambdaContext("deadletter", 128, 30))
    finally:
        loop.close()
    # THEN both jobs were checked once, and one record of the failed job comes back
    assert finisher.checked == [{"job-a", "job-b"}]
    assert response["batchItemFailures"] == [{"itemIdentifier": "m1"}]
