"""The console's submit screen chooses the lane as ``submit --lane`` does: ``batch`` stages the
job for an endpoint's native batch API (nothing on the queue) or is refused where there is
none, ``auto`` with a Within shorter than the API's window runs online, and Within goes with
``auto`` only (a real moto server with the template's resources)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.lanes import Lane
from llmbatch.client.stack import StackResources
from llmbatch.local.provision import provision_stack
from tui.app import create_app
from tui.pilot import text_of, wait_for
from tui.screens.submit import SubmitScreen

SIZE = (120, 36)
#: An endpoint offering the OpenAI Batch API and one without (never called: no worker or
#: lane poller runs here).
ENDPOINTS = {
    "batchy": {"kind": "openai", "url": "http://127.0.0.1:9/v1", "batch_api": True, "batch_max_records": 2},
    "plain": {"kind": "openai", "url": "http://127.0.0.1:9/v1"},
}


@pytest.fixture
def lane_stack(moto_url: str) -> StackResources:
    overrides = {"Endpoints": json.dumps(ENDPOINTS)}
    return provision_stack(moto_url, stack_name=f"tui-{uuid.uuid4().hex[:8]}", parameter_overrides=overrides).resources


def visible(stack: StackResources, queue_url: str) -> int:
    sqs: Any = boto3.client(  # type: ignore[call-overload]
        "sqs",
        region_name="us-east-1",
        endpoint_url=stack.aws_endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


async def choose_lane(pilot: Pilot[Any], submit: SubmitScreen, downs: int, lane: Lane) -> None:
    """Pick a lane from the list with keys, ``downs`` below the one chosen now."""
    submit.query_one("#submit-lane", Select).focus()
    await pilot.press("enter", *["down"] * downs, "enter")
    await wait_for(pilot, lambda: submit.lane is lane, what=f"lane {lane} chosen")


async def submitted(pilot: Pilot[Any], submit: SubmitScreen) -> str:
    """Submit, and the result shown once the submit has ended."""
    result = submit.query_one("#check-result", Static)
    submit.show_result("")
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: text_of(result).startswith(("✓", "✗")), what="the submit's outcome")
    await wait_for(pilot, lambda: not submit.busy, what="the submit to end")
    if text_of(result).startswith("✓"):  # the console shows the jobs then: back to the form
        await pilot.press("f4")
        await wait_for(pilot, lambda: pilot.app.screen is submit, what="the submit screen again")
    return text_of(result)


async def test_the_lane_chosen_on_the_submit_screen_decides_where_the_job_goes(
    lane_stack: StackResources, tmp_path: Path, job_files: tuple[Path, Path]
) -> None:
    good, _ = job_files
    app = create_app(lambda: LlmbatchClient(lane_stack), refresh_s=0.2, start_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # GIVEN the submit screen with a valid file of 3 requests: online until chosen otherwise
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit screen")
        submit = app.screen
        assert isinstance(submit, SubmitScreen)
        assert submit.lane is Lane.ONLINE
        submit.query_one("#submit-path", Input).value = str(good)
        submit.query_one("#submit-endpoint", Input).value = "plain"

        # WHEN batch is chosen for an endpoint that has no native batch API
        await choose_lane(pilot, submit, 1, Lane.BATCH)
        shown = await submitted(pilot, submit)
        # THEN it is refused in words, and nothing was created
        assert "--lane batch refused: endpoint 'plain' has no native batch API" in shown
        assert submit.last_job_id is None

        # WHEN it goes to the endpoint that has one
        submit.query_one("#submit-endpoint", Input).value = "batchy"
        shown = await submitted(pilot, submit)
        batch_job = submit.last_job_id
        # THEN it is staged in parts for the lane poller, and says so
        assert batch_job is not None
        assert "lane batch: asked for (--lane batch): 3 record(s) in 2 native job(s) of at most 2" in shown

        # WHEN a Within is given with the batch lane
        submit.query_one("#submit-within", Input).value = "1h"
        shown = await submitted(pilot, submit)
        # THEN it is refused before anything is sent, as `submit --within` is
        assert shown == "✗ not submitted: Within goes with the auto lane"
        assert submit.last_job_id == batch_job

        # WHEN auto is chosen with that Within, shorter than the batch API's window
        await choose_lane(pilot, submit, 1, Lane.AUTO)
        shown = await submitted(pilot, submit)
        online_job = submit.last_job_id
        # THEN it runs online, and says why
        assert online_job not in (None, batch_job)
        assert "lane online: auto: --within 1h is shorter than the batch API's 1d completion window" in shown

    # AND the batch job's records never went to the queue; the online job's did
    assert visible(lane_stack, lane_stack.request_queue_url) == 3
    async with LlmbatchClient(lane_stack) as client:
        staged = await client.status(batch_job)
        online = await client.status(online_job or "")
    assert (staged.meta.lane, staged.meta.native_parts, staged.meta.enqueued) == ("batch", 2, 3)
    assert (online.meta.lane, online.meta.enqueued) == ("online", 3)
