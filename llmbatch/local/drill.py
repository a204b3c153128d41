"""The fault drill: a job run through the local stack with faults injected together, then
checked request by request.

Faults: 20% of calls answered 429, 10% answered 5xx, 1% hanging past the call timeout, 5%
of messages delivered twice, a worker container killed mid-batch, and unreadable messages
mixed into the queue. The stack runs a copy of ``template.yaml`` with a 6 s function
timeout (visibility 36 s, still six times it) so a lost container's batch comes back
within a minute rather than the production twelve.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.jobfile import read_job_file
from llmbatch.client.stack import StackResources
from llmbatch.local.provision import template_copy
from llmbatch.local.runner import LocalStack
from shared.jobs import JobStatus
from shared.messages import RequestMessage

DRILL_FUNCTION_TIMEOUT_S = 6
DRILL_SIMULATOR = {
    "slots": 32,
    "base_latency_s": 0.03,
    "per_output_token_s": 0.0005,
    "jitter_s": 0.01,
    "error_rate_429": 0.20,
    "error_rate_5xx": 0.10,
    "hang_rate": 0.01,
    "hang_s": 30.0,
    "retry_after_s": 1.0,
    "seed": 11,
}
DRILL_ENV = {
    "RETRY_BASE_S": "0.5",
    "RETRY_MAX_S": "3",
    "CALL_TIMEOUT_S": "2",
    "MIN_CALL_S": "0.5",
    "WRITE_RESERVE_S": "2",
}


@dataclass
class DrillReport:
    requests: int
    duplicates_sent: int
    malformed_sent: int
    killed_containers: int
    status: dict[str, Any]
    results: int
    distinct_results: int
    endpoint_calls: int
    faults_sent: int
    dead_letters: int
    left_in_queue: int
    poller_timeouts: int
    longest_invocation_s: float
    wall_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        s = self.status
        out = [
            f"requests            {self.requests} (+{self.duplicates_sent} duplicate deliveries, "
            f"+{self.malformed_sent} malformed messages, {self.killed_containers} container(s) killed)",
            terminal_line(s),
            f"results stored      {self.results} ({self.distinct_results} distinct custom_ids)",
            f"endpoint calls      {self.endpoint_calls} (faults answered: {self.faults_sent})",
            f"dead letters        {self.dead_letters}; left in the request queue: {self.left_in_queue}",
            f"invocations         longest {self.longest_invocation_s:.1f}s of a {DRILL_FUNCTION_TIMEOUT_S}s timeout; "
            f"timed out: {self.poller_timeouts}",
            f"wall time           {self.wall_s:.1f}s",
        ]
        return out + verdict_lines(self.problems, "every request answered exactly once")


def terminal_line(status: dict[str, Any]) -> str:
    """A report's line of a job's terminal counts and status (every drill prints it)."""
    s = status
    return (
        f"terminal            succeeded {s['succeeded']}, failed {s['failed']}, cancelled {s['cancelled']}, "
        f"pending {s['pending']} -> {s['status']}"
    )


def verdict_lines(problems: list[str], all_good: str) -> list[str]:
    """A report's last lines: each problem found, or the one line that says none was."""
    return [f"PROBLEM: {p}" for p in problems] or [all_good]


def drill_template(directory: Path) -> Path:
    def shorter_timeout(template: dict[str, Any]) -> None:
        template["Globals"]["Function"]["Timeout"] = DRILL_FUNCTION_TIMEOUT_S
        template["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"] = 6 * DRILL_FUNCTION_TIMEOUT_S

    return template_copy(directory, shorter_timeout)


def run_drill(requests: int = 2000, *, seed: int = 1, timeout_s: float = 600.0) -> DrillReport:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        job_file = write_chat_job(tmp_path / "drill.jsonl", requests, prefix="drill")
        stack = LocalStack(
            template_path=drill_template(tmp_path),
            simulator_config=DRILL_SIMULATOR,
            container_env=DRILL_ENV,
            parameter_overrides={"WorkerMaxConcurrency": "4"},
            write_state=False,
        )
        with stack:
            return asyncio.run(_drill(stack, job_file, requests, rng, timeout_s))


def write_chat_job(path: Path, requests: int, *, prefix: str) -> Path:
    """A job file of ``requests`` short chat requests, ``PREFIX-00000`` onwards."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"{prefix}-{i:05d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "sim-model",
                        "messages": [{"role": "user", "content": f"q{i}"}],
                        "max_tokens": 8,
                    },
                }
            )
            + "\n"
            for i in range(requests)
        )
    )
    return path


async def _drill(stack: LocalStack, job_file: Path, requests: int, rng: random.Random, timeout_s: float) -> DrillReport:
    res = stack.resources
    started = time.monotonic()
    async with LlmbatchClient(res) as client:
        job_id = await client.submit(job_file)
        # Duplicate deliveries: 5% of the requests enqueued a second time (signed, as submit's).
        sign_key = (await client.status(job_id)).meta.sign_key
        parsed = read_job_file(job_file).lines
        dup_lines = rng.sample(range(len(parsed)), k=max(1, requests // 20))
        dups = [
            RequestMessage.from_job_line(
                parsed[i].request, job_id=job_id, line_no=parsed[i].line_no, endpoint="default", sign_key=sign_key
            ).encode()
            for i in dup_lines
        ]
        malformed = [
            "{broken json",
            json.dumps(
                {"v": 1, "job_id": "no-such-job", "custom_id": "x", "line": 1, "url": "/v1/completions", "body": {}}
            ),
            "[]",
        ]
        await client.enqueue(dups + malformed)

        killed = _kill_one_container_when_busy(stack)
        final = await wait_finished(client, job_id, timeout_s)
        killed.join(timeout=1)
        results = await client.results(job_id)
        # Give the pollers a moment to delete the last batches' messages.
        left = await queue_settles(res, res.request_queue_url)
        await queue_settles(res, res.dead_letter_queue_url)
        kept = await client.dead_letters()
    stats = sim_stats(res.model_endpoint_url or "")
    poller = stack.pollers[0].stats
    dlq = len(kept)
    faults = int(stats.get("rate_limited_429", 0)) + int(stats.get("injected_5xx", 0)) + int(stats.get("hangs", 0))
    report = DrillReport(
        requests=requests,
        duplicates_sent=len(dups),
        malformed_sent=len(malformed),
        killed_containers=int(getattr(killed, "killed", 0)),
        status=final.to_dict(),
        results=len(results),
        distinct_results=len({r.custom_id for r in results}),
        endpoint_calls=int(stats.get("requests_total", 0)),
        faults_sent=faults,
        dead_letters=dlq,
        left_in_queue=left,
        poller_timeouts=poller.timeouts,
        longest_invocation_s=poller.longest_invocation_s,
        wall_s=time.monotonic() - started,
    )
    _check(report, poller.records)
    return report


def _check(r: DrillReport, records_delivered: int) -> None:
    s = r.status
    if s["status"] != "completed":
        r.problems.append(f"job ended {s['status']}")
    if s["succeeded"] + s["failed"] + s["cancelled"] != r.requests or s["pending"]:
        r.problems.append(f"counts do not add up to {r.requests}: {s}")
    if r.results != r.requests or r.distinct_results != r.requests:
        r.problems.append(f"{r.results} results for {r.requests} requests ({r.distinct_results} distinct)")
    if r.poller_timeouts or r.longest_invocation_s >= DRILL_FUNCTION_TIMEOUT_S:
        r.problems.append("an invocation ran past its deadline")
    # Calls beyond one per request: those the faults caused, plus at most one per duplicate
    # delivery and per record of the killed container's batch (their answers were lost).
    allowed = r.requests + r.faults_sent + r.duplicates_sent + 100 * r.killed_containers
    if r.endpoint_calls > allowed:
        r.problems.append(f"{r.endpoint_calls} endpoint calls, more than the {allowed} the faults explain")
    if r.left_in_queue:
        r.problems.append(f"{r.left_in_queue} messages left in the request queue")
    if r.dead_letters != r.malformed_sent:
        r.problems.append(f"{r.dead_letters} dead letters for {r.malformed_sent} malformed messages")


class _Killer(threading.Thread):
    def __init__(self, stack: LocalStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.killed = 0

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.killed:
            if self.stack.pollers and self.stack.pollers[0].stats.invocations >= 2:
                self.killed = int(self.stack.pollers[0].kill_busy_container())
            time.sleep(0.2)


def _kill_one_container_when_busy(stack: LocalStack) -> _Killer:
    k = _Killer(stack)
    k.start()
    return k


async def wait_finished(client: LlmbatchClient, job_id: str, timeout_s: float) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        st = await client.status(job_id)
        if st.finished or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.5)


async def queue_settles(res: StackResources, queue_url: str, timeout_s: float = 15.0) -> int:
    """Messages left in the queue (visible or in flight) once it stops changing, or at the timeout."""
    sqs = boto3.client("sqs", **res.client_kwargs())
    deadline = time.monotonic() + timeout_s
    while True:
        a = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        left = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.25)


def sim_stats(model_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(model_url.removesuffix("/v1") + "/_sim/stats", timeout=10) as resp:
        return dict(json.load(resp))
