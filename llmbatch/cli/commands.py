"""The CLI's commands against a stack (local or deployed), through ``LlmbatchClient``."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from llmbatch.cli.progress import JobProgress
from llmbatch.client.client import LlmbatchClient, ProgressCallback
from llmbatch.client.cost import CostEstimate, Pricing, estimate_cost
from llmbatch.client.estimate import JobEstimate
from llmbatch.client.lanes import LaneChoice
from llmbatch.client.stack import StackResources
from shared.errors import ConfigError
from shared.jobs import JobStatus
from shared.priority import DEFAULT_PRIORITY


async def submit(
    resources: StackResources,
    path: Path,
    *,
    name: str | None,
    endpoint: str,
    resume: str | None = None,
    on_progress: ProgressCallback | None = None,
    notify_url: str = "",
    priority: str = DEFAULT_PRIORITY.value,
) -> str:
    async with LlmbatchClient(resources) as client:
        return await client.submit(
            path,
            name=name,
            endpoint=endpoint,
            resume_job_id=resume,
            on_progress=on_progress,
            notify_url=notify_url,
            priority=priority,
        )


async def submit_on_lane(
    resources: StackResources,
    path: Path,
    *,
    lane: str,
    within_s: float | None,
    name: str | None,
    endpoint: str,
    on_progress: ProgressCallback | None = None,
    notify_url: str = "",
    priority: str = DEFAULT_PRIORITY.value,
) -> tuple[str, LaneChoice]:
    """``submit --lane``: the job id and the lane chosen, with its reason."""
    async with LlmbatchClient(resources) as client:
        return await client.submit_on_lane(
            path,
            lane=lane,
            within_s=within_s,
            name=name,
            endpoint=endpoint,
            on_progress=on_progress,
            notify_url=notify_url,
            priority=priority,
        )


async def lane_choice(
    resources: StackResources, path: Path, *, lane: str, within_s: float | None, endpoint: str
) -> LaneChoice:
    """The lane ``submit --lane`` would take for the file (``--dry-run``)."""
    async with LlmbatchClient(resources) as client:
        job_file = await client.check_file(path, endpoint=endpoint)
        return await client.choose_lane(job_file, lane=lane, endpoint=endpoint, within_s=within_s)


async def estimate(resources: StackResources, path: Path, *, endpoint: str) -> JobEstimate:
    """``submit --dry-run``: the file checked as submit checks it, and its estimate."""
    async with LlmbatchClient(resources) as client:
        return await client.estimate(path, endpoint=endpoint)


async def status(resources: StackResources, job_id: str) -> JobStatus:
    async with LlmbatchClient(resources) as client:
        return await client.status(job_id)


@dataclass(frozen=True)
class JobReport:
    status: JobStatus
    cost: CostEstimate | None
    #: Why there is no estimate, when there is none.
    cost_unavailable: str = ""


async def report(resources: StackResources, job_id: str) -> JobReport:
    """The job's status and its estimated cost, priced from the worker's configuration."""
    async with LlmbatchClient(resources) as client:
        job = await client.status(job_id)
        try:
            pricing = Pricing.from_function_configuration(await client.worker_configuration())
        except (ClientError, BotoCoreError, ConfigError, KeyError) as e:
            return JobReport(job, None, f"cannot read the worker's configuration: {e}")
    return JobReport(job, estimate_cost(job, pricing))


async def cancel(resources: StackResources, job_id: str) -> JobStatus:
    async with LlmbatchClient(resources) as client:
        return await client.cancel(job_id)


async def redrive(resources: StackResources, job_id: str | None) -> int:
    async with LlmbatchClient(resources) as client:
        return await client.redrive(job_id)


async def retry(resources: StackResources, job_id: str) -> int:
    async with LlmbatchClient(resources) as client:
        return await client.retry_failed(job_id)


async def wait_for(
    client: LlmbatchClient,
    job_id: str,
    *,
    timeout_s: float,
    out: TextIO | None = None,
    interval_s: float = 1.0,
) -> JobStatus:
    """Poll until the job finishes, drawing progress; raises TimeoutError after ``timeout_s``."""
    started = time.monotonic()
    with JobProgress(job_id, out) as progress:
        while True:
            st = await client.status(job_id)
            progress.update(st, time.monotonic() - started)
            if st.finished:
                return st
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f}s")
            await asyncio.sleep(interval_s)


async def results(resources: StackResources, job_id: str, out: Path, errors: Path | None) -> str:
    async with LlmbatchClient(resources) as client:
        summary = await client.export_results(job_id, out, errors)
    text = f"wrote {summary.written} results to {out}"
    if errors is not None:
        text += f" and {summary.errors} errors to {errors}"
    if summary.missing:
        text += f" ({summary.missing} requests have no result yet)"
    return text


def status_text(st: JobStatus, as_json: bool) -> str:
    if as_json:
        return json.dumps(st.to_dict(), indent=2)
    d = st.to_dict()
    if isinstance(n := d.get("native"), dict):  # a batch-lane job: its native jobs' progress
        d["native"] = (
            f"{n['completed']:,} completed, {n['failed']:,} failed; parts {n['parts_done']} of {n['parts']} done,"
            f" {n['parts_running']} running"
        )
    return "\n".join(f"{k:<18} {v}" for k, v in d.items())


def report_text(r: JobReport, as_json: bool) -> str:
    """``status_text`` plus the job's figures (latency, error rate, requests/s), what it used
    and its estimated cost (``--json``: the ``figures``, ``metering`` and ``estimated_cost``
    objects, or ``estimated_cost_unavailable``)."""
    if as_json:
        d = {**r.status.to_dict(), "figures": r.status.figures(), "metering": asdict(r.status.metering)}
        d["estimated_cost"] = r.cost.to_dict() if r.cost else None
        if r.cost_unavailable:
            d["estimated_cost_unavailable"] = r.cost_unavailable
        return json.dumps(d, indent=2)
    m = r.status.metering
    extra = {
        **figure_lines(r.status),
        "compute_s": f"{m.compute_ms / 1000:,.1f} in {m.invocations:,} invocation(s)",
        "estimated_cost": r.cost.summary() if r.cost else f"unavailable ({r.cost_unavailable})",
    }
    if r.cost:
        extra["model_by_lane"] = r.cost.lanes_line()
    return status_text(r.status, False) + "\n" + "\n".join(f"{k:<18} {v}" for k, v in extra.items())


def figure_lines(st: JobStatus) -> dict[str, str]:
    """The figures as ``status`` prints them: ``latency_ms  mean 204, p50 198, p99 250 (±12%)``."""
    f = st.figures()
    batch = st.meta.lane == "batch"  # the native batch API times no request (shared/latency.py)
    if f["latency_mean_ms"] is None:
        latency = "not applicable (batch lane: requests are not timed)" if batch else "none yet (no answered request)"
    else:
        resolution = f"±{(f['latency_resolution'] or 0) * 100:.0f}%"
        latency = (
            f"mean {f['latency_mean_ms']:,.0f}, p50 {f['latency_p50_ms']:,.0f}, p99 {f['latency_p99_ms']:,.0f}"
            f" (percentiles {resolution}) over {st.timing.answered:,} answered" + (" online (retried)" if batch else "")
        )
    rate = st.error_rate
    errors = "none yet" if rate is None else f"{rate:.1%} ({st.counts.failed:,} of {st.counts.terminal:,})"
    rps = st.requests_per_s
    if batch:
        speed = "not applicable (batch lane)"
    else:
        speed = "none yet" if rps is None else f"{rps:,.1f} over {st.timing.active_s or 0:,.1f} s"
    return {"latency_ms": latency, "error_rate": errors, "requests_per_s": speed}
