"""The Limits screen's switches (adaptive concurrency; workers that follow the endpoints),
against a real moto server: a flip is written to the limits parameter and read back; the other
limits stay as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from textual.widgets import Static

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from tui.app import create_app
from tui.pilot import text_of, wait_for
from tui.screens.limits import ADAPTIVE, AUTO_WORKERS, WORKER_CONCURRENCY, LimitsScreen

SIZE = (120, 36)


def ssm_limits(stack: StackResources) -> dict[str, object]:
    ssm = boto3.client(
        "ssm",
        region_name="us-east-1",
        endpoint_url=stack.aws_endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return dict(json.loads(ssm.get_parameter(Name=stack.limits_parameter)["Parameter"]["Value"]))


async def open_limits(app: Any, pilot: Any) -> LimitsScreen:
    """The Limits screen (F3), once it has read the limits in force."""
    await pilot.press("f3")
    await wait_for(pilot, lambda: isinstance(app.screen, LimitsScreen) and app.screen.polls >= 1)
    assert isinstance(app.screen, LimitsScreen)
    return app.screen


async def test_the_switch_turns_adaptive_concurrency_on_and_off_in_aws(stack: StackResources, tmp_path: Path) -> None:
    app = create_app(lambda: LlmbatchClient(stack), refresh_s=30, start_dir=tmp_path)
    before = ssm_limits(stack)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_limits(app, pilot)
        field = screen.toggle(ADAPTIVE)
        assert field.in_force is False and field.switch.value is False

        for value in (True, False):
            applied = screen.applied
            field.switch.focus()
            await pilot.press("enter")  # flips the focused switch
            await wait_for(pilot, lambda: screen.applied > applied, what="the flip to be written")  # noqa: B023
            after = ssm_limits(stack)
            assert after[ADAPTIVE] is value
            assert {k: after[k] for k in before if k != ADAPTIVE} == {k: v for k, v in before.items() if k != ADAPTIVE}
            assert field.in_force is value and field.switch.value is value
            assert f"in force: {'on' if value else 'off'}" in text_of(field.query_one(".limit-in-force", Static))


async def test_a_worker_number_turns_auto_workers_off_and_the_switch_turns_it_back_on(
    stack: StackResources, tmp_path: Path
) -> None:
    app = create_app(lambda: LlmbatchClient(stack), refresh_s=30, start_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_limits(app, pilot)
        auto = screen.toggle(AUTO_WORKERS)
        # GIVEN the stack's default: the workers follow the endpoints
        assert auto.in_force is True and auto.switch.value is True

        # WHEN an operator enters a worker concurrency of their own
        applied = screen.applied
        field = screen.field(WORKER_CONCURRENCY)
        field.input.value = "6"
        field.input.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.applied > applied, what="the number to be written")

        # THEN it is in force, and the switch shows the workers no longer follow the endpoints
        assert field.in_force == 6 and ssm_limits(stack)[AUTO_WORKERS] is False
        assert auto.in_force is False and auto.switch.value is False

        # WHEN the switch is flipped back on, THEN the limits parameter says so again
        applied = screen.applied
        auto.switch.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.applied > applied, what="the flip to be written")
        assert ssm_limits(stack)[AUTO_WORKERS] is True and auto.in_force is True
