"""The console's submit screen sends a job to the queue of the priority chosen, and the job's
detail shows it (a real moto server with the template's queues)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from textual.widgets import Input, Select, Static

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from shared.priority import Priority
from tui.app import create_app
from tui.pilot import text_of, wait_for
from tui.screens.submit import SubmitScreen

SIZE = (120, 36)


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


async def test_a_job_submitted_as_high_priority_goes_to_the_high_queue(
    stack: StackResources, tmp_path: Path, job_files: tuple[Path, Path]
) -> None:
    good, _ = job_files
    app = create_app(lambda: LlmbatchClient(stack), refresh_s=0.2, start_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # GIVEN the submit screen with a valid file, normal priority until chosen otherwise
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit screen")
        submit = app.screen
        assert isinstance(submit, SubmitScreen)
        assert submit.priority is Priority.NORMAL
        submit.query_one("#submit-path", Input).value = str(good)

        # WHEN high is picked from the priority list (opened and chosen with keys) and it is submitted
        submit.query_one("#submit-priority", Select).focus()
        await pilot.press("enter")  # open the list
        await pilot.press("up")  # normal -> high
        await pilot.press("enter")
        await wait_for(pilot, lambda: submit.priority is Priority.HIGH, what="high chosen")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: submit.last_job_id is not None, what="the submit")
        assert "high priority" in text_of(submit.query_one("#check-result", Static))

    # THEN its requests are on the high-priority queue, none on the normal one, and the job says so
    assert visible(stack, stack.high_priority_queue_url) == 3
    assert visible(stack, stack.request_queue_url) == 0
    async with LlmbatchClient(stack) as client:
        job = await client.status(submit.last_job_id or "")
    assert job.meta.priority == "high"
    assert job.to_dict()["priority"] == "high"
