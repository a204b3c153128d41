"""The job detail screen shows what the job used and its estimated cost, priced from the
worker's configuration as the client reads it (the in-memory demo stack here)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from rich.console import Console
from textual.widgets import Static

from llmbatch.client.cost import Pricing, estimate_cost
from tui.demo import DemoClient
from tui.pilot import wait_for
from tui.screens.job_detail import JobDetailScreen
from tui.screenshots import SIZE, demo_app, jobs_scene


def summary_text(screen: JobDetailScreen) -> str:
    console = Console(record=True, width=400, file=io.StringIO())
    console.print(screen.query_one("#job-summary", Static).content)
    return console.export_text()


@asynccontextmanager
async def second_job_detail(client_factory: type) -> AsyncIterator[tuple[JobDetailScreen, str]]:
    """The console on ``client_factory``'s stack, on the detail of the jobs list's second
    job: the screen and its summary's text."""
    app = demo_app()
    app.client_factory = client_factory
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.polls >= 1, what="detail")
        screen = app.screen
        assert isinstance(screen, JobDetailScreen)
        await wait_for(pilot, lambda: "est. cost" in summary_text(screen), what="the cost line")
        yield screen, summary_text(screen)


async def test_the_detail_shows_the_estimate_from_the_workers_configuration() -> None:
    # GIVEN the demo stack, whose worker has a memory size, an architecture and prices
    client = DemoClient()
    pricing = Pricing.from_function_configuration(await client.worker_configuration())

    # WHEN a job's detail is open
    async with second_job_detail(DemoClient) as (screen, text):
        job = screen.job
    assert job is not None and job.metering.compute_ms > 0
    expected = estimate_cost(job, pricing)

    # THEN its summary shows the tokens, the estimate with its parts, and the worker's time
    assert f"tokens {job.counts.prompt_tokens:,} in / {job.counts.completion_tokens:,} out" in text
    assert f"est. cost {expected.summary()}" in text
    assert expected.model_usd is not None and expected.lambda_usd > 0
    assert f"worker {job.metering.compute_ms / 1000:,.1f} s" in text


class WithoutPrices(DemoClient):
    """A stack that cannot tell its worker's configuration."""

    worker_configuration = None  # type: ignore[assignment]


class DeniedPrices(DemoClient):
    """A stack whose operator may not read the worker's configuration."""

    async def worker_configuration(self) -> dict[str, Any]:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
        raise ClientError(error, "GetFunctionConfiguration")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factory", "reason"),
    [(WithoutPrices, "does not tell its prices"), (DeniedPrices, "AccessDeniedException")],
)
async def test_without_the_workers_configuration_the_estimate_says_why(factory: type, reason: str) -> None:
    async with second_job_detail(factory) as (screen, text):
        job = screen.job
    assert "est. cost unavailable (" in text and reason in text
    assert job is not None and f"tokens {job.counts.prompt_tokens:,} in" in text
