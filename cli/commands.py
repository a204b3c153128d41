"""The CLI's commands against a stack (local or deployed), through ``LlmbatchClient``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from shared.control import LlmbatchClient
from shared.jobs import JobStatus
from shared.stack import StackResources


def progress_line(status: JobStatus, elapsed_s: float) -> str:
    done = status.counts.terminal
    width = 30
    filled = int(width * done / status.total) if status.total else width
    bar = "#" * filled + "." * (width - filled)
    return (
        f"[{bar}] {done}/{status.total}  ok {status.counts.succeeded}  failed {status.counts.failed}"
        f"  pending {status.pending}  {elapsed_s:.0f}s  {status.state.value}"
    )


async def submit(
    resources: StackResources, path: Path, *, name: str | None, endpoint: str, resume: str | None = None
) -> str:
    async with LlmbatchClient(resources) as client:
        return await client.submit(path, name=name, endpoint=endpoint, resume_job_id=resume)


async def status(resources: StackResources, job_id: str) -> JobStatus:
    async with LlmbatchClient(resources) as client:
        return await client.status(job_id)


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
    out: TextIO = sys.stderr,
    interval_s: float = 1.0,
) -> JobStatus:
    """Poll until the job finishes, drawing progress; raises TimeoutError after ``timeout_s``."""
    started = time.monotonic()
    tty = out.isatty()
    last = ""
    while True:
        st = await client.status(job_id)
        line = progress_line(st, time.monotonic() - started)
        if tty:
            out.write("\r" + line)
        elif line.split("  ")[0] != last:
            out.write(line + "\n")
        last = line.split("  ")[0]
        out.flush()
        if st.finished:
            if tty:
                out.write("\n")
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
    return "\n".join(f"{k:<18} {v}" for k, v in d.items())
