"""The backlog drill: a binding rate limit far below what the workers pull, run long enough
for every record to be received more often than the queue's ``maxReceiveCount``.

Records that wait for the rate limit are deferred (sent back as fresh messages), which must
never count as attempts: every request succeeds, none reaches the dead-letter queue, each
is called exactly once, and the job runs at the limit (the figure of merit: requests/s
against the limit).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.drill import (
    DRILL_ENV,
    drill_template,
    queue_settles,
    sim_stats,
    terminal_line,
    verdict_lines,
    wait_finished,
    write_chat_job,
)
from llmbatch.local.runner import LocalStack

#: The endpoint is fast and never refuses: only the rate limit holds requests back.
BACKLOG_SIMULATOR = {"slots": 64, "base_latency_s": 0.02, "per_output_token_s": 0.0, "jitter_s": 0.005, "seed": 5}
#: Four invocations of 100 records pull 400 at once; the limit serves 20 a second.
BACKLOG_PARAMETERS = {"WorkerMaxConcurrency": "4", "BatchSize": "100", "MaxAttempts": "2"}
BACKLOG_RPM = 1200


@dataclass
class BacklogReport:
    requests: int
    rpm_limit: int
    max_attempts: int
    status: dict[str, Any]
    results: int
    highest_attempt: int
    endpoint_calls: int
    answered_429: int
    dead_letters: int
    left_in_queue: int
    records_delivered: int
    wall_s: float
    #: From the first answer to the last: the rate once the workers are up.
    answering_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate_vs_limit(self) -> float:
        """Requests per second from the first answer to the last, as a fraction of what the
        limit allows (the figure of merit; end to end adds the containers' start)."""
        if self.answering_s <= 0:
            return 0.0
        return ((self.requests - 1) / self.answering_s) / (self.rpm_limit / 60)

    def lines(self) -> list[str]:
        s = self.status
        out = [
            f"requests            {self.requests} behind a limit of {self.rpm_limit} RPM "
            f"(queue maxReceiveCount {self.max_attempts})",
            terminal_line(s),
            f"deliveries          {self.records_delivered} records handed to the worker "
            f"({self.records_delivered / max(1, self.requests):.1f} per request); highest attempt recorded: "
            f"{self.highest_attempt}",
            f"endpoint calls      {self.endpoint_calls} (429s: {self.answered_429})",
            f"dead letters        {self.dead_letters}; left in the request queue: {self.left_in_queue}",
            f"rate                {self.rate_vs_limit:.2f} of the limit from the first answer to the last "
            f"({(self.requests - 1) / max(self.answering_s, 1e-9):.1f} requests/s in {self.answering_s:.1f}s)",
            f"wall time           {self.wall_s:.1f}s from submit to completed",
        ]
        return out + verdict_lines(self.problems, "every request called once, none dead-lettered")


def run_backlog(requests: int = 1200, *, rpm: int = BACKLOG_RPM, timeout_s: float = 600.0) -> BacklogReport:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        job_file = write_chat_job(tmp_path / "backlog.jsonl", requests, prefix="backlog")
        stack = LocalStack(
            template_path=drill_template(tmp_path),
            simulator_config=BACKLOG_SIMULATOR,
            container_env=DRILL_ENV,
            parameter_overrides=BACKLOG_PARAMETERS,
            write_state=False,
        )
        with stack:
            return asyncio.run(_backlog(stack, job_file, requests, rpm, timeout_s))


async def _backlog(stack: LocalStack, job_file: Path, requests: int, rpm: int, timeout_s: float) -> BacklogReport:
    res = stack.resources
    async with LlmbatchClient(res) as client:
        await client.set_limits((await client.get_limits()).with_changes(rpm_limit=rpm))
        started = time.monotonic()
        job_id = await client.submit(job_file)
        final = await wait_finished(client, job_id, timeout_s)
        wall_s = time.monotonic() - started
        results = await client.results(job_id)
        left = await queue_settles(res, res.request_queue_url)
        await queue_settles(res, res.dead_letter_queue_url)
        kept = await client.dead_letters()
    stats = sim_stats(res.model_endpoint_url or "")
    report = BacklogReport(
        requests=requests,
        rpm_limit=rpm,
        max_attempts=int(BACKLOG_PARAMETERS["MaxAttempts"]),
        status=final.to_dict(),
        results=len(results),
        highest_attempt=max((r.attempt for r in results), default=0),
        endpoint_calls=int(stats.get("requests_total", 0)),
        answered_429=int(stats.get("rate_limited_429", 0)),
        dead_letters=len(kept),
        left_in_queue=left,
        records_delivered=stack.pollers[0].stats.records,
        wall_s=wall_s,
        answering_s=_span_s([r.finished_at for r in results]),
    )
    _check(report)
    return report


def _check(r: BacklogReport) -> None:
    s = r.status
    if s["status"] != "completed" or s["succeeded"] != r.requests:
        r.problems.append(f"not every request succeeded: {s}")
    if r.dead_letters or r.left_in_queue:
        r.problems.append(f"{r.dead_letters} dead letters, {r.left_in_queue} messages left in the queue")
    if r.highest_attempt > 1:
        r.problems.append(f"a request used {r.highest_attempt} attempts: waiting for the limit was counted")
    if r.endpoint_calls != r.requests:
        r.problems.append(f"{r.endpoint_calls} endpoint calls for {r.requests} requests")
    if r.records_delivered <= r.requests * r.max_attempts:
        # More deliveries than requests x maxReceiveCount means some request was received
        # more often than the queue allows; fewer, and the run was too short to prove anything.
        r.problems.append(
            f"only {r.records_delivered} deliveries: the backlog never outlasted maxReceiveCount "
            f"({r.max_attempts}) for every request; raise the requests or lower the limit"
        )


def _span_s(stamps: list[str]) -> float:
    """Seconds from the earliest to the latest ISO timestamp."""
    if len(stamps) < 2:
        return 0.0
    times = sorted(datetime.fromisoformat(t) for t in stamps)
    return (times[-1] - times[0]).total_seconds()
