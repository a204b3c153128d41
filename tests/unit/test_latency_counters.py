"""The latency figures in the job's counter shards (shared/store/terminal_writes.py), against
moto's server over real HTTP: written with each result, counted once, and small."""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace

import pytest

from shared.jobs import Counts, JobMeta, Metering
from shared.latency import BUCKETS, RESOLUTION, JobTiming, bucket_attribute
from shared.results import RequestResult, RequestStatus
from shared.store.item_size import item_bytes
from shared.store.jobs_table import COUNT_ATTRIBUTES
from shared.store.result_store import ResultStore
from shared.store.terminal_writes import COUNTER_ITEM_KB, COUNTER_UPDATE_BYTES

pytestmark = pytest.mark.functional


#: The store fixture (tests/unit/conftest.py) spreads counts over this many shards.
COUNTER_SHARDS = 4


def result(job_id: str, n: int, latency_ms: int, status: RequestStatus = RequestStatus.SUCCEEDED) -> RequestResult:
    return RequestResult(
        job_id=job_id,
        custom_id=f"r-{n}",
        line=n,
        status=status,
        attempt=1,
        endpoint="default",
        latency_ms=latency_ms,
        status_code=200 if status is RequestStatus.SUCCEEDED else 400,
        response_body={"ok": n},
    )


async def test_a_result_written_twice_counts_its_latency_once(store: ResultStore) -> None:
    # GIVEN a job of 20 requests answered in 100..290 ms, and one refused in 40 ms
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=21, sealed=True, enqueued=21))
    answered = [result(job_id, n, 100 + 10 * n) for n in range(20)]
    refused = result(job_id, 20, 40, RequestStatus.FAILED)

    # WHEN they are written in batches, and the first batch again (a redelivery)
    await store.write_terminal(job_id, answered[:10])
    await store.write_terminal(job_id, [*answered[10:], refused])
    again = await store.write_terminal(job_id, [replace(r, latency_ms=9999) for r in answered[:10]])

    # THEN the histogram holds each answered request once, and the failure not at all
    job = await store.get_job(job_id)
    assert len(again.duplicates) == 10
    assert job.counts == Counts(succeeded=20, failed=1)
    assert job.timing.answered == 20
    assert job.timing.latency_sum_ms == sum(r.latency_ms for r in answered)
    assert job.timing.percentile_ms(50) == pytest.approx(190, rel=RESOLUTION)
    # and the first start is before the last write
    assert job.timing.active_s is not None and job.timing.active_s >= 0
    assert job.figures()["error_rate"] == round(1 / 21, 4)


def test_a_full_counter_shard_fits_the_room_kept_for_it_and_one_kb() -> None:
    # A shard with every count, metering figure and bucket at 12 digits
    item: dict[str, object] = {"job_id": "job-20261129T061500Z-3f9a1c2e", "item": "count#7"}
    for name in [*asdict(Counts()), *asdict(Metering())]:
        item[name] = 10**12 - 1
    for bucket in range(BUCKETS):
        item[bucket_attribute(bucket)] = 10**12 - 1
    item["latency_sum_ms"] = 10**15 - 1
    item["updated_at"] = item["first_started_at"] = "2026-11-29T06:15:00.123+00:00"
    size = item_bytes(item)
    assert size <= COUNTER_ITEM_KB * 1024
    assert size <= COUNTER_UPDATE_BYTES
    assert JobTiming.from_item(item).answered == BUCKETS * (10**12 - 1)


async def test_the_state_read_takes_the_counts_and_leaves_the_histograms(store: ResultStore) -> None:
    # GIVEN a job with results written across its counter shards, histograms and all
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=12, name="s", sealed=True, enqueued=12))
    for n in range(12):  # one write each: each goes to a random shard of the four
        await store.write_terminal(job_id, [result(job_id, n, 100 + n)])

    # WHEN the job's state is read (what the finished-job check reads after every invocation)
    state = await store.get_job_state(job_id)
    shards = await store.items_with_prefix("count#", job_id, consistent=True, attributes=COUNT_ATTRIBUTES)

    # THEN it has the record and the counts of the full read, so the same state
    full = await store.get_job(job_id)
    assert state.meta == full.meta and state.counts == full.counts == Counts(succeeded=12)
    assert state.finished and state.state == full.state
    # and the shards came back with the counters only: no bucket, no metering, no times
    assert len(shards) > 1
    assert all(set(i) <= {"job_id", "item", *COUNT_ATTRIBUTES} for i in shards)
    assert any(
        bucket_attribute(b) in i for i in await store.items_with_prefix("count#", job_id) for b in range(BUCKETS)
    )
