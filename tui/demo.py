"""A stack in memory with fixed data and a frozen clock: for snapshots, screenshots and demos.

It has the async methods of ``LlmbatchClient`` that the console uses; job files are checked
with the real ``read_job_file``, so a bad file is refused exactly as the stack would refuse it.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmbatch.client.client import ESM_CONCURRENCY_BOUNDS, ExportSummary, ProgressCallback, QueueStats
from llmbatch.client.cost import PRICES_ENV, Pricing
from llmbatch.client.estimate import JobEstimate, Latency, LiveLimits, estimate_job
from llmbatch.client.jobfile import JobFile, read_job_file
from shared.config import RuntimeLimits
from shared.deadletter import UNASSIGNED, DeadLetter, is_redrivable
from shared.errors import ConfigError, JobNotFoundError
from shared.jobs import Counts, JobMeta, JobStatus, Metering
from shared.latency import JobTiming, started_at
from shared.limits.rate_math import RateLimits
from shared.messages import RequestMessage
from shared.priority import DEFAULT_PRIORITY, Priority
from shared.results import RequestResult, RequestStatus, Usage
from tui.screens.queue import Sample

FIXED_NOW = datetime(2026, 11, 29, 6, 15, 0, tzinfo=UTC)
#: The demo stack's event source mapping BatchSize and typical model latency (its estimates).
DEMO_BATCH_SIZE = 100
DEMO_LATENCY_S = 0.8


def _at(minutes_ago: float) -> str:
    return (FIXED_NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")


def _job(
    job_id: str,
    name: str,
    total: int,
    minutes_ago: float,
    counts: Counts,
    metering: Metering | None = None,
    timing: JobTiming | None = None,
    **meta: Any,
) -> JobStatus:
    meta.setdefault("sealed", True)
    return JobStatus(
        JobMeta(job_id=job_id, total=total, name=name, created_at=_at(minutes_ago), enqueued=total, **meta),
        counts,
        metering or Metering(),
        timing or JobTiming(),
    )


def demo_timing(job_id: str, total: int) -> JobTiming:
    """What the counters of a job with :func:`demo_results` hold: its answered requests'
    latencies, its first call's start and its last result."""
    results = demo_results(job_id, total)
    return JobTiming.of_latencies(
        (r.latency_ms for r in results if r.status is RequestStatus.SUCCEEDED),
        first_started_at=min(started_at(r.finished_at, r.latency_ms) for r in results),
        last_finished_at=max(r.finished_at for r in results),
    )


#: eval-set-a's use of the stack: three batches for its 250 requests, two more for retries.
EVAL_SET_METERING = Metering(
    compute_ms=41_730, invocations=5, deliveries=262, delivered_bytes=110_040, write_units=1_020
)


def demo_jobs() -> list[JobStatus]:
    return [
        _job("job-20261129T061400Z-3f9a1c2e", "support-tickets.jsonl", 5000, 1, Counts(1830, 12, 0, 402_611, 188_020)),
        _job(
            "job-20261129T055000Z-77b0e4d1",
            "eval-set-a.jsonl",
            250,
            25,
            Counts(244, 6, 0, 61_200, 30_855),
            EVAL_SET_METERING,
            timing=demo_timing("job-20261129T055000Z-77b0e4d1", 250),
        ),
        _job("job-20261129T051200Z-c01d9a33", "embeddings.jsonl", 1200, 63, Counts(0, 0, 0, 0, 0)),
        _job(
            "job-20261128T221500Z-5e5e0b12",
            "nightly-summaries.jsonl",
            80,
            480,
            Counts(40, 0, 40, 9_100, 4_012),
            cancel_requested=True,
        ),
        _job(
            "job-20261128T180000Z-9a8b7c6d",
            "smoke.jsonl",
            3,
            735,
            Counts(3, 0, 0, 96, 41),
            timing=demo_timing("job-20261128T180000Z-9a8b7c6d", 3),
        ),
    ]


def demo_jobs_before(seconds: float = 30.0) -> list[JobStatus]:
    """The demo jobs as a poll ``seconds`` earlier saw them: support-tickets ran at 12 req/s."""
    jobs = demo_jobs()
    tickets = jobs[0]
    done = max(0, tickets.counts.succeeded - round(12 * seconds))
    jobs[0] = JobStatus(tickets.meta, replace(tickets.counts, succeeded=done))
    return jobs


def demo_results(job_id: str, total: int = 250) -> list[RequestResult]:
    failures = {
        17: ("rate_limited", "429 Too Many Requests after 5 attempts"),
        42: ("context_length_exceeded", "This model's maximum context length is 8192 tokens"),
        99: ("context_length_exceeded", "This model's maximum context length is 8192 tokens"),
        120: ("invalid_request", "body.messages: field required"),
        171: ("context_length_exceeded", "This model's maximum context length is 8192 tokens"),
        203: ("rate_limited", "429 Too Many Requests after 5 attempts"),
    }
    results = []
    for line in range(1, total + 1):
        custom_id = f"request-{line:04d}"
        finished = (FIXED_NOW - timedelta(seconds=total - line)).isoformat(timespec="milliseconds")
        if line in failures:
            code, message = failures[line]
            results.append(
                RequestResult(
                    job_id,
                    custom_id,
                    line,
                    RequestStatus.FAILED,
                    attempt=5 if code == "rate_limited" else 1,
                    endpoint="default",
                    latency_ms=310,
                    status_code=429 if code == "rate_limited" else 400,
                    request_id=f"req_{line:06d}",
                    response_body={"error": {"code": code, "message": message}},
                    error_code=code,
                    error_message=message,
                    finished_at=finished,
                )
            )
            continue
        prompt, completion = 180 + (line * 37) % 200, 90 + (line * 53) % 150
        body = {
            "id": f"chatcmpl-{line:06d}",
            "object": "chat.completion",
            "model": "smollm2-135m-instruct",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Summary {line}: the customer asks about billing."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        results.append(
            RequestResult(
                job_id,
                custom_id,
                line,
                RequestStatus.SUCCEEDED,
                attempt=1,
                endpoint="default",
                latency_ms=800 + (line * 97) % 1500,
                status_code=200,
                request_id=f"req_{line:06d}",
                response_body=body,
                usage=Usage(prompt, completion),
                finished_at=finished,
            )
        )
    return results


def _request(job_id: str, custom_id: str, line: int, content: str) -> str:
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}], "max_tokens": 256}
    return RequestMessage(
        v=1, job_id=job_id, custom_id=custom_id, line=line, url="/v1/chat/completions", body=body
    ).encode()


def demo_dead_letters() -> list[DeadLetter]:
    """Three requests that used up their retries, and two messages no job could claim."""
    tickets, evals = "job-20261129T061400Z-3f9a1c2e", "job-20261129T055000Z-77b0e4d1"
    exhausted = "retries exhausted after 5 attempts; last error: "
    return [
        DeadLetter(
            tickets,
            "ticket-01102",
            _request(tickets, "ticket-01102", 1102, "Summarise this ticket: the invoice for October is missing."),
            exhausted + "timeout: the endpoint did not answer within 60 s",
            _at(2),
        ),
        DeadLetter(
            UNASSIGNED,
            "8c1f6a7e-52d4-4f0b-9a51-0e6a2b7d3c19",
            _request("job-20261101T090000Z-0badc0de", "row-7", 7, "Translate to French: good morning"),
            "unknown job 'job-20261101T090000Z-0badc0de'",
            _at(9),
        ),
        DeadLetter(
            evals,
            "request-0203",
            _request(evals, "request-0203", 203, "Rate this answer from 1 to 5: Paris is the capital of France."),
            exhausted + "rate_limited: 429 Too Many Requests",
            _at(21),
        ),
        DeadLetter(
            evals,
            "request-0017",
            _request(evals, "request-0017", 17, "Rate this answer from 1 to 5: water boils at 90 °C."),
            exhausted + "rate_limited: 429 Too Many Requests",
            _at(23),
        ),
        DeadLetter(
            UNASSIGNED,
            "3e0b9d42-7a61-4c8e-b2f5-91d7c6a0e845",
            '{"custom_id": "x-1", "prompt": "hello"',
            "message body is not JSON: Expecting ',' delimiter",
            _at(47),
        ),
    ]


def demo_queue_samples(start_terminal: int, n: int = 40) -> list[Sample]:
    """A queue draining for two minutes, then a burst of retries, then recovering."""
    samples = []
    terminal = start_terminal
    for k in range(n):
        visible = max(0, int(3100 - 70 * k + 400 * math.sin(k / 3)))
        in_flight = 40 + int(20 * math.sin(k / 2)) + (30 if 18 <= k <= 24 else 0)
        delayed = 120 if 18 <= k <= 24 else 5 + k % 4
        dead = 2 if k < 20 else 3
        terminal += 35 + int(10 * math.cos(k / 4)) - (25 if 18 <= k <= 24 else 0)
        oldest = 60.0 + 3 * k + (45 * (k - 17) if 18 <= k <= 24 else 0) - (10 * (k - 24) if k > 24 else 0)
        samples.append(
            Sample(
                FIXED_NOW + timedelta(seconds=3 * (k + 1)),
                QueueStats(visible, in_flight, delayed, dead),
                terminal,
                max(0.0, oldest),
            )
        )
    return samples


class DemoClient:
    """An in-memory stand-in for ``LlmbatchClient`` (also its own async context manager)."""

    def __init__(self) -> None:
        self.jobs = {j.job_id: j for j in demo_jobs()}
        self.limits = RuntimeLimits(max_concurrency=16, rpm_limit=600, tpm_limit=None)
        self.worker_concurrency = 5
        self.stats = QueueStats(visible=3158, in_flight=42, delayed=6, dead_letters=2)
        self.oldest_age_s: float | None = 84.0
        self.limits_at = FIXED_NOW - timedelta(hours=2, minutes=4)
        self.workers_at = FIXED_NOW - timedelta(days=1, hours=3)
        self.submitted = 0
        self.letters = demo_dead_letters()
        self.redriven: list[DeadLetter] = []

    async def __aenter__(self) -> DemoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]:
        return sorted(self.jobs.values(), key=lambda j: j.meta.created_at, reverse=True)[:limit]

    async def status(self, job_id: str) -> JobStatus:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFoundError(f"no job {job_id!r}") from None

    async def worker_configuration(self) -> dict[str, Any]:
        """The parts of Lambda's GetFunctionConfiguration the cost estimate reads."""
        prices = {"endpoints": {"default": {"input_per_million": 0.15, "output_per_million": 0.60}}}
        return {
            "FunctionName": "llmbatch-Worker",
            "MemorySize": 512,
            "Architectures": ["arm64"],
            "Environment": {"Variables": {PRICES_ENV: json.dumps(prices)}},
        }

    async def results(self, job_id: str, limit: int | None = None) -> list[RequestResult]:
        job = await self.status(job_id)
        results = demo_results(job_id, job.total) if job.total <= 250 and job.counts.terminal else []
        return results[:limit]

    async def export_results(self, job_id: str, out: Path, errors: Path | None = None) -> ExportSummary:
        results = await self.results(job_id)
        text = "".join(json.dumps(r.to_output_line()) + "\n" for r in results)
        await asyncio.to_thread(out.write_text, text)
        return ExportSummary(written=len(results), errors=0, missing=self.jobs[job_id].pending)

    async def queue_stats(self) -> QueueStats:
        return self.stats

    async def oldest_message_age_s(self) -> float | None:
        return self.oldest_age_s

    async def get_limits(self) -> RuntimeLimits:
        return self.limits

    async def set_limits(self, limits: RuntimeLimits) -> None:
        self.limits = limits
        self.limits_at = FIXED_NOW

    async def limits_changed_at(self) -> datetime:
        return self.limits_at

    async def get_worker_concurrency(self) -> int | None:
        return self.worker_concurrency

    async def set_worker_concurrency(self, value: int) -> None:
        lo, hi = ESM_CONCURRENCY_BOUNDS
        if not lo <= value <= hi:
            raise ConfigError(f"maximum concurrency must be from {lo} to {hi}, got {value}")
        self.worker_concurrency = value
        self.workers_at = FIXED_NOW

    async def worker_concurrency_changed_at(self) -> datetime:
        return self.workers_at

    async def check_file(self, path: Path, *, endpoint: str = "default") -> JobFile:
        return read_job_file(path, endpoint=endpoint)

    async def estimate(self, path: Path, *, endpoint: str = "default") -> JobEstimate:
        """The estimate ``submit --dry-run`` prints, at the demo stack's prices and limits."""
        limits = LiveLimits(
            workers=self.worker_concurrency,
            calls_per_worker=self.limits.max_concurrency,
            batch_size=DEMO_BATCH_SIZE,
            rate=RateLimits(self.limits.rpm_limit, self.limits.tpm_limit),
        )
        return estimate_job(
            await self.check_file(path, endpoint=endpoint),
            endpoint=endpoint,
            pricing=Pricing.from_function_configuration(await self.worker_configuration()),
            limits=limits,
            latency=Latency(DEMO_LATENCY_S, "the demo stack's"),
        )

    async def dead_letters(self, job_id: str | None = None) -> list[DeadLetter]:
        return [d for d in self.letters if job_id is None or d.job_id == job_id]

    async def redrive(self, job_id: str | None = None) -> int:
        moved = [d for d in await self.dead_letters(job_id) if is_redrivable(d)]
        self.letters = [d for d in self.letters if d not in moved]
        self.redriven += moved
        return len(moved)

    async def submit(
        self,
        path: Path,
        *,
        name: str | None = None,
        endpoint: str = "default",
        on_progress: ProgressCallback | None = None,
        priority: Priority | str = DEFAULT_PRIORITY,
    ) -> str:
        job_file = await self.check_file(path, endpoint=endpoint)
        self.submitted += 1
        job_id = f"job-20261129T061500Z-demo{self.submitted:04d}"
        if on_progress:
            on_progress(job_file.total, job_file.total)
        self.jobs[job_id] = JobStatus(
            JobMeta(
                job_id,
                job_file.total,
                name or path.name,
                endpoint,
                FIXED_NOW.isoformat(timespec="seconds"),
                sealed=True,
                enqueued=job_file.total,
                priority=Priority(priority).value,
            ),
            Counts(),
        )
        return job_id


def job_line(custom_id: str, content: str) -> str:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 64}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def write_demo_files(directory: Path) -> tuple[Path, Path]:
    """A valid job file and one with problems on lines 2, 3 and 5."""
    directory.mkdir(parents=True, exist_ok=True)
    good = directory / "requests.jsonl"
    good.write_text("".join(job_line(f"req-{i}", f"Summarise ticket {i}") + "\n" for i in range(1, 4)))
    bad = directory / "broken.jsonl"
    bad.write_text(
        job_line("a-1", "hello")
        + "\n"
        + '{"custom_id": "a-2", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n'
        + "{not json\n"
        + job_line("a-4", "fine")
        + "\n"
        + job_line("a-1", "duplicate id")
        + "\n"
    )
    return good, bad
