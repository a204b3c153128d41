"""``llmbatch demo``: the whole pipeline on the local stack, from a job file to a summary."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from cli.commands import wait_for
from cli.sample_job import write_sample_job
from local_stack.runner import LocalStack
from shared.control import LlmbatchClient
from shared.stats import RunSummary

#: The simulator the demo runs against: 16 slots, ~0.1 s per call plus a little per token.
DEMO_SIMULATOR = {"slots": 16, "base_latency_s": 0.08, "per_output_token_s": 0.002, "jitter_s": 0.02, "seed": 7}


def run_demo(*, requests: int, out: Path, endpoint_url: str | None, model: str, timeout_s: float = 600.0) -> RunSummary:
    print(
        f"starting the local stack (moto on 127.0.0.1, {'endpoint ' + endpoint_url if endpoint_url else 'the endpoint simulator'}) ...",
        file=sys.stderr,
    )
    with LocalStack(endpoint_url=endpoint_url, simulator_config=DEMO_SIMULATOR, write_state=False) as stack:
        res = stack.resources
        print(f"  AWS (moto)      {res.aws_endpoint_url}", file=sys.stderr)
        print(f"  model endpoint  {res.model_endpoint_url}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            job_path = write_sample_job(Path(tmp) / "demo-job.jsonl", requests, model=model)
            return asyncio.run(_run(stack, job_path, out, timeout_s))


async def _run(stack: LocalStack, job_path: Path, out: Path, timeout_s: float) -> RunSummary:
    async with LlmbatchClient(stack.resources) as client:
        started = time.monotonic()
        job_id = await client.submit(job_path, name="demo")
        print(f"submitted {job_id} ({job_path.name})", file=sys.stderr)
        final = await wait_for(client, job_id, timeout_s=timeout_s)
        wall = time.monotonic() - started
        await client.export_results(job_id, out)
        results = await client.results(job_id)
    return RunSummary(
        requests=final.total,
        succeeded=final.counts.succeeded,
        failed=final.counts.failed,
        wall_s=wall,
        latencies_ms=tuple(float(r.latency_ms) for r in results if r.latency_ms),
    )
