"""The job counters behind the cost estimate (shared/store/jobs_table.py), against moto's server over
real HTTP: the write units of result transactions, and each invocation's metering."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from shared.jobs import JobMeta, Metering
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import item_bytes
from shared.store.result_store import ResultStore
from shared.store.terminal_writes import TRANSACTION_WRITE_UNITS_PER_KB

pytestmark = pytest.mark.functional


async def new_job(store: ResultStore, total: int) -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total))
    return job_id


def result(job_id: str, custom_id: str, body: Any) -> RequestResult:
    return RequestResult(
        job_id=job_id,
        custom_id=custom_id,
        line=1,
        status=RequestStatus.SUCCEEDED,
        attempt=1,
        endpoint="default",
        status_code=200,
        response_body=body,
        usage=Usage(3, 4),
    )


async def test_a_result_transaction_counts_two_write_units_per_kb_of_each_item(store: ResultStore) -> None:
    # GIVEN a small answer and one of about 5 KB
    job_id = await new_job(store, 2)
    small, big = result(job_id, "s", {"a": 1}), result(job_id, "b", {"text": "x" * 5000})

    # WHEN both are written in one transaction
    await store.write_terminal(job_id, [small, big])

    # THEN the job counts 2 units per started KB of each item, and 2 for its counter update
    kb = [math.ceil(item_bytes(r.to_item()) / 1024) for r in (small, big)]
    assert kb[0] == 1 and kb[1] >= 5
    assert TRANSACTION_WRITE_UNITS_PER_KB == 2
    assert (await store.get_job(job_id)).metering.write_units == 2 * (1 + sum(kb))


async def test_metering_adds_up_across_invocations_and_skips_jobs_that_do_not_exist(store: ResultStore) -> None:
    # GIVEN a job, and two invocations' use of it (one also naming a job that does not exist)
    job_id = await new_job(store, 10)
    first = Metering(compute_ms=1200, invocations=1, deliveries=6, delivered_bytes=3000, claim_checks=1)
    second = Metering(compute_ms=800, invocations=1, deliveries=4, delivered_bytes=2000)

    # WHEN both are added
    await store.add_metering({job_id: first, "job-test-nobody": first})
    await store.add_metering({job_id: second})

    # THEN the job holds their sum, and nothing was created for the stranger
    assert (await store.get_job(job_id)).metering == first + second
    assert await store.items_with_prefix("count#", "job-test-nobody") == []
