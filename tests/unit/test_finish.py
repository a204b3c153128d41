"""The job-finished claim (shared/finish.py): one event per finished job, whoever checks it
and however many check at once. Against moto's server over real HTTP (its conditional
writes are the point), with an in-memory publisher in place of EventBridge."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.finish import CLAIM_STALE_S, FinishOutcome, JobFinisher, finished_detail
from shared.jobs import Counts, JobMeta, JobStatus
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.result_store import ResultStore

pytestmark = pytest.mark.functional


@dataclass
class FakeBus:
    """Records what was published; fails the first ``failures`` publications."""

    failures: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0

    async def publish(self, detail: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("EventBridge unreachable")
        self.events.append(detail)


async def new_job(store: ResultStore, total: int, *, sealed: bool = True, **kw: Any) -> str:
    job_id = f"job-test-{uuid.uuid4().hex[:12]}"
    await store.create_job(JobMeta(job_id=job_id, total=total, name="t", sealed=sealed, enqueued=total, **kw))
    return job_id


def result(job_id: str, custom_id: str) -> RequestResult:
    return RequestResult(
        job_id=job_id,
        custom_id=custom_id,
        status=RequestStatus.SUCCEEDED,
        attempt=1,
        endpoint="default",
        line=1,
        usage=Usage(10, 5),
    )


async def test_a_job_not_finished_publishes_nothing(store: ResultStore) -> None:
    # GIVEN a job with one of two requests answered
    job_id = await new_job(store, 2)
    await store.write_terminal(job_id, [result(job_id, "a")])
    bus = FakeBus()
    # WHEN it is checked
    outcome = await JobFinisher(store, bus).check_one(job_id)
    # THEN nothing is published
    assert outcome is FinishOutcome.NOT_FINISHED and bus.events == []


async def test_a_completed_job_is_published_once_however_often_it_is_checked(store: ResultStore) -> None:
    # GIVEN a job whose every request is answered
    job_id = await new_job(store, 2, notify_url="https://example.com/hook")
    await store.write_terminal(job_id, [result(job_id, "a"), result(job_id, "b")])
    bus = FakeBus()
    finisher = JobFinisher(store, bus)
    # WHEN it is checked three times
    outcomes = [await finisher.check_one(job_id) for _ in range(3)]
    # THEN one event, with the job's outcome, and the claim marked sent
    assert outcomes == [FinishOutcome.PUBLISHED, FinishOutcome.CLAIMED_ELSEWHERE, FinishOutcome.CLAIMED_ELSEWHERE]
    assert len(bus.events) == 1
    detail = bus.events[0]
    assert detail["job_id"] == job_id and detail["status"] == "completed"
    assert (detail["total"], detail["succeeded"], detail["failed"], detail["cancelled"]) == (2, 2, 0, 0)
    assert (detail["prompt_tokens"], detail["completion_tokens"]) == (20, 10)
    assert detail["notify_url"] == "https://example.com/hook"
    assert (await store.get_job(job_id)).meta.finished_event == "sent"


async def test_the_last_two_results_written_at_once_by_two_invocations_give_one_event(store: ResultStore) -> None:
    # GIVEN jobs of two requests; WHEN two "invocations" each write one result and then
    # check the job, at the same moment (20 rounds, so interleavings vary)
    for _ in range(20):
        job_id = await new_job(store, 2)
        bus = FakeBus(delay_s=0.01)

        async def invocation(custom_id: str, job_id: str = job_id, bus: FakeBus = bus) -> FinishOutcome:
            await store.write_terminal(job_id, [result(job_id, custom_id)])
            return await JobFinisher(store, bus).check_one(job_id)

        outcomes = await asyncio.gather(invocation("a"), invocation("b"))
        # THEN exactly one of them published, and exactly one event went out
        assert sorted(outcomes).count(FinishOutcome.PUBLISHED) == 1, outcomes
        assert len(bus.events) == 1


async def test_many_concurrent_checkers_of_a_finished_job_publish_once(store: ResultStore) -> None:
    job_id = await new_job(store, 1)
    await store.write_terminal(job_id, [result(job_id, "a")])
    bus = FakeBus(delay_s=0.02)
    outcomes = await asyncio.gather(*(JobFinisher(store, bus).check_one(job_id) for _ in range(8)))
    assert outcomes.count(FinishOutcome.PUBLISHED) == 1 and len(bus.events) == 1


async def test_a_failed_publish_releases_the_claim_so_the_next_check_publishes(store: ResultStore) -> None:
    # GIVEN a finished job and a bus that fails every try of the first check
    job_id = await new_job(store, 1)
    await store.write_terminal(job_id, [result(job_id, "a")])
    bus = FakeBus(failures=3)
    finisher = JobFinisher(store, bus, backoff_s=0.0)
    # WHEN it is checked, then checked again
    first = await finisher.check_one(job_id)
    assert (await store.get_job(job_id)).meta.finished_event == ""
    second = await finisher.check_one(job_id)
    # THEN the first failed without losing the event, the second published it
    assert (first, second) == (FinishOutcome.FAILED, FinishOutcome.PUBLISHED)
    assert len(bus.events) == 1


async def test_a_publish_that_fails_once_is_retried_within_the_check(store: ResultStore) -> None:
    job_id = await new_job(store, 1)
    await store.write_terminal(job_id, [result(job_id, "a")])
    bus = FakeBus(failures=1)
    assert await JobFinisher(store, bus, backoff_s=0.0).check_one(job_id) is FinishOutcome.PUBLISHED
    assert len(bus.events) == 1


async def test_a_pending_claim_is_taken_over_only_once_it_is_stale(store: ResultStore) -> None:
    # GIVEN a finished job claimed by a checker that then died (its claim left pending)
    job_id = await new_job(store, 1)
    await store.write_terminal(job_id, [result(job_id, "a")])
    now = [1_000_000.0]
    assert await JobFinisher(store, FakeBus(), clock=lambda: now[0])._claim(job_id, "dead-checker")
    bus = FakeBus()
    finisher = JobFinisher(store, bus, clock=lambda: now[0])
    # WHEN another checks at once, and again after the stale limit
    fresh = await finisher.check_one(job_id)
    now[0] += CLAIM_STALE_S + 1
    stale = await finisher.check_one(job_id)
    # THEN the fresh claim is respected and the stale one taken over
    assert (fresh, stale) == (FinishOutcome.CLAIMED_ELSEWHERE, FinishOutcome.PUBLISHED)
    assert len(bus.events) == 1


async def test_a_job_cancelled_before_it_was_all_enqueued_is_finished_as_cancelled(store: ResultStore) -> None:
    # GIVEN a job still submitting, then cancelled
    job_id = await new_job(store, 5, sealed=False)
    await store.request_cancel(job_id)
    bus = FakeBus()
    # WHEN it is checked (as `cancel` does)
    outcome = await JobFinisher(store, bus).check_one(job_id)
    # THEN one event says cancelled
    assert outcome is FinishOutcome.PUBLISHED
    assert [e["status"] for e in bus.events] == ["cancelled"]


async def test_check_reports_a_failing_job_without_failing_the_others(store: ResultStore) -> None:
    done = await new_job(store, 1)
    await store.write_terminal(done, [result(done, "a")])
    missing = "job-that-does-not-exist"
    outcomes = await JobFinisher(store, FakeBus()).check([done, missing])
    assert outcomes == {done: FinishOutcome.PUBLISHED, missing: FinishOutcome.NOT_FINISHED}


def test_the_detail_has_the_outcome_and_the_duration_and_no_url_unless_set() -> None:
    status = JobStatus(
        JobMeta(job_id="j", total=3, name="n", sealed=True, created_at="2026-11-30T10:00:00+00:00"),
        Counts(succeeded=2, failed=1, prompt_tokens=7, completion_tokens=9),
    )
    detail = finished_detail(status, now=datetime(2026, 11, 30, 10, 1, 30, tzinfo=UTC))
    assert detail["status"] == "completed" and detail["duration_s"] == 90.0
    assert (detail["succeeded"], detail["failed"], detail["prompt_tokens"]) == (2, 1, 7)
    assert "notify_url" not in detail
