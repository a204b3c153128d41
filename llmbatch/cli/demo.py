"""``llmbatch demo``: the whole pipeline on the local stack, from a job file to a summary.

By default the endpoint is a real small model (SmolLM2 served by llama.cpp) answering short
questions, and a few answers are shown next to their prompts; ``--endpoint simulator`` runs
the 300-request mix on the endpoint simulator instead.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbatch.cli.commands import wait_for
from llmbatch.cli.sample_job import QUESTIONS, write_question_job, write_sample_job
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.endpoint_choice import LocalEndpoint
from llmbatch.local.model_server import SMOLLM_MODEL
from llmbatch.local.runner import LocalStack
from llmbatch.stats import RunSummary
from shared.results import RequestResult, RequestStatus

#: The simulator the demo runs against: 16 slots, ~0.1 s per call plus a little per token.
DEMO_SIMULATOR = {"slots": 16, "base_latency_s": 0.08, "per_output_token_s": 0.002, "jitter_s": 0.02, "seed": 7}
SIMULATOR_REQUESTS = 300
SIMULATOR_MODEL = "sim-model"
#: Answers printed next to their prompts (a real model's; the simulator's text means nothing).
SHOWN_ANSWERS = 5


@dataclass(frozen=True)
class Answer:
    prompt: str
    text: str


@dataclass(frozen=True)
class DemoReport:
    summary: RunSummary
    answers: tuple[Answer, ...] = ()

    def lines(self) -> list[str]:
        shown: list[str] = []
        for a in self.answers:
            shown += [f"Q  {a.prompt}", f"A  {a.text}", ""]
        return shown + self.summary.lines()


def default_model(endpoint: LocalEndpoint) -> str:
    return SIMULATOR_MODEL if endpoint is LocalEndpoint.SIMULATOR else SMOLLM_MODEL


def run_demo(
    *,
    endpoint: LocalEndpoint,
    requests: int | None,
    out: Path,
    endpoint_url: str | None,
    model: str,
    timeout_s: float = 600.0,
) -> DemoReport:
    """The simulator's mix when the endpoint is the simulator; short questions for a real
    model (SmolLM2, or the server at ``endpoint_url``)."""
    simulated = endpoint is LocalEndpoint.SIMULATOR and not endpoint_url
    where = f"endpoint {endpoint_url}" if endpoint_url else f"the {endpoint.description}"
    print(f"starting the local stack (moto on 127.0.0.1, {where}) ...", file=sys.stderr)
    stack = LocalStack(endpoint=endpoint, endpoint_url=endpoint_url, simulator_config=DEMO_SIMULATOR, write_state=False)
    with stack:
        res = stack.resources
        print(f"  AWS (moto)      {res.aws_endpoint_url}", file=sys.stderr)
        print(f"  model endpoint  {res.model_endpoint_url}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            job_path = Path(tmp) / "demo-job.jsonl"
            if simulated:
                write_sample_job(job_path, requests or SIMULATOR_REQUESTS, model=model)
            else:
                write_question_job(job_path, requests or len(QUESTIONS), model=model)
            return asyncio.run(_run(stack, job_path, out, timeout_s, shown=0 if simulated else SHOWN_ANSWERS))


async def _run(stack: LocalStack, job_path: Path, out: Path, timeout_s: float, *, shown: int) -> DemoReport:
    async with LlmbatchClient(stack.resources) as client:
        started = time.monotonic()
        job_id = await client.submit(job_path, name="demo")
        print(f"submitted {job_id} ({job_path.name})", file=sys.stderr)
        final = await wait_for(client, job_id, timeout_s=timeout_s)
        wall = time.monotonic() - started
        await client.export_results(job_id, out)
        results = await client.results(job_id)
    summary = RunSummary(
        requests=final.total,
        succeeded=final.counts.succeeded,
        failed=final.counts.failed,
        wall_s=wall,
        latencies_ms=tuple(float(r.latency_ms) for r in results if r.latency_ms),
    )
    return DemoReport(summary, sample_answers(job_path, results, shown))


def sample_answers(job_path: Path, results: list[RequestResult], count: int) -> tuple[Answer, ...]:
    """The first ``count`` answered requests, each with the last user message it was asked."""
    prompts = {line["custom_id"]: user_prompt(line["body"]) for line in map(json.loads, job_path.open())}
    answers: list[Answer] = []
    for r in results:
        text = answer_text(r.response_body) if r.status is RequestStatus.SUCCEEDED else None
        if text is not None and len(answers) < count:
            answers.append(Answer(prompts.get(r.custom_id, ""), text))
    return tuple(answers)


def user_prompt(body: dict[str, Any]) -> str:
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1] if users else body.get("prompt", ""))


def answer_text(body: Any) -> str | None:
    """A chat or text completion's first choice, on one line."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError):
        return None
    return " ".join(str(text).split()) if text is not None else None
