"""The worker's invocations follow what its endpoints serve at once (``auto_workers``,
llmbatch/client/worker_sizing.py), against moto's server over real HTTP with the stack built
from template.yaml, its first endpoint declared to serve 32 calls at once
(``EndpointMaxConcurrency``): a new job sizes the mappings, an operator's number turns the
sizing off, ``--workers auto`` turns it back on."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from llmbatch.cli.main import cli
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from llmbatch.client.worker_sizing import HEADROOM
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from llmbatch.local.runner import LocalStack
from tests.functional.conftest import TEST_SIMULATOR

pytestmark = pytest.mark.functional

SLOTS = 32


@pytest.fixture(scope="module")
def servers() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


@pytest.fixture
def sized(servers: str) -> StackResources:
    """A fresh stack (its own names) whose endpoint declares SLOTS."""
    name = f"sized-{uuid.uuid4().hex[:8]}"
    return provision_stack(
        servers, stack_name=name, parameter_overrides={"EndpointMaxConcurrency": str(SLOTS)}
    ).resources


@pytest.fixture
def undeclared(servers: str) -> StackResources:
    return provision_stack(servers, stack_name=f"undeclared-{uuid.uuid4().hex[:8]}").resources


def mappings(stack: StackResources) -> dict[str, int]:
    """Each worker mapping's MaximumConcurrency by its queue's name, read with boto3."""
    found = boto3.client("lambda", **stack.client_kwargs()).list_event_source_mappings(
        FunctionName=stack.worker_function
    )["EventSourceMappings"]
    return {m["EventSourceArn"].rsplit(":", 1)[1]: int(m["ScalingConfig"]["MaximumConcurrency"]) for m in found}


def normal(stack: StackResources) -> int:
    return mappings(stack)[stack.request_queue_url.rsplit("/", 1)[1]]


async def limits_set(stack: StackResources, tmp_path: Path, *args: str) -> str:
    """`llmbatch limits set ARGS` as a user runs it (in a thread: it runs its own event loop)."""
    state = tmp_path / "local.json"
    state.write_text(stack.to_json())
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["limits", "set", *args], env={"LLMBATCH_STATE": str(state)}
    )
    assert result.exit_code == 0, result.output
    return result.output


async def denied(**_: Any) -> Any:
    """A Lambda call by a caller without the permission."""
    raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "ListEventSourceMappings")


def expected(calls: int, slots: int = SLOTS) -> int:
    """The fewest invocations whose calls cover HEADROOM x the slots (and at least 2), worked out here."""
    return max(2, math.ceil(slots * HEADROOM / calls))


async def test_a_new_job_sizes_the_workers_to_the_endpoint(sized: StackResources, tmp_path: Path) -> None:
    # GIVEN the stack as deployed: WorkerMaxConcurrency's 10 invocations x 16 calls
    assert normal(sized) == 10
    low = sized.low_priority_queue_url.rsplit("/", 1)[1]
    low_before = mappings(sized)[low]
    async with LlmbatchClient(sized) as client:
        limits = await client.get_limits()
        assert limits.auto_workers and limits.max_concurrency == 16

        # WHEN a job is created (as submit and an SDK producer do)
        await client.create_job(3, name="first")

    # THEN the normal and high-priority mappings are sized to the endpoint's 32 calls; the
    # low-priority one keeps its own share
    sizes = mappings(sized)
    assert sizes[sized.request_queue_url.rsplit("/", 1)[1]] == expected(16) == 5
    assert sizes[sized.high_priority_queue_url.rsplit("/", 1)[1]] == 5
    assert sizes[low] == low_before

    # WHEN the calls per invocation change, the workers follow
    await limits_set(sized, tmp_path, "--calls", "12")
    assert normal(sized) == expected(12) == 7
    # ... and where they fall below the low-priority share, that share falls with them
    await limits_set(sized, tmp_path, "--calls", "64")
    sizes = mappings(sized)
    assert sizes[sized.request_queue_url.rsplit("/", 1)[1]] == expected(64) == 2
    assert sizes[low] == min(low_before, 2)


async def test_an_operators_number_stops_the_sizing_until_auto_again(sized: StackResources, tmp_path: Path) -> None:
    # GIVEN an operator's own worker concurrency
    out = await limits_set(sized, tmp_path, "--workers", "7", "--calls", "16")
    assert "(auto)" not in out
    async with LlmbatchClient(sized) as client:
        assert not (await client.get_limits()).auto_workers

        # WHEN a job is created
        await client.create_job(3, name="second")
    # THEN the operator's number stays
    assert normal(sized) == 7

    # WHEN the workers are told to follow the endpoint again
    out = await limits_set(sized, tmp_path, "--workers", "auto")

    # THEN they are sized at once, and shown as auto
    assert normal(sized) == expected(16)
    assert "(auto)" in out.splitlines()[0]


async def test_without_a_declared_capacity_nothing_is_changed(undeclared: StackResources, tmp_path: Path) -> None:
    async with LlmbatchClient(undeclared) as client:
        await client.create_job(3, name="unsized")
    assert normal(undeclared) == 10
    out = await limits_set(undeclared, tmp_path, "--workers", "auto")
    assert "not every endpoint declares" in out and normal(undeclared) == 10


async def test_a_producer_not_allowed_to_change_the_workers_still_creates_its_job(
    sized: StackResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN workers not yet sized (the stack as deployed: 10), auto on
    before = normal(sized)
    assert before != expected(16)
    async with LlmbatchClient(sized) as client:
        # WHEN a program allowed to create jobs, not to change the mappings, creates one
        monkeypatch.setattr(client.lambda_, "list_event_source_mappings", denied)
        job = await client.create_job(3, name="producer")

        # THEN its job is made, and the workers are left as they were
        assert (await client.status(job.job_id)).total == 3
    assert normal(sized) == before


async def test_a_limit_changed_by_an_operator_not_allowed_to_size_the_workers_is_still_written(
    sized: StackResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LlmbatchClient(sized) as client:
        monkeypatch.setattr(client.lambda_, "list_event_source_mappings", denied)
        # WHEN an operator allowed to write the limits parameter only changes the RPM limit
        await client.set_limits((await client.get_limits()).with_changes(rpm_limit=600))

        # THEN it is written, without an error
        assert (await client.get_limits()).rpm_limit == 600


async def test_a_local_stack_sizes_its_workers_to_its_simulator_before_any_job(stack: LocalStack) -> None:
    # GIVEN the local stack with its simulator, as `local up` starts it, no job made yet
    slots = int(TEST_SIMULATOR["slots"])
    async with LlmbatchClient(stack.resources) as client:
        calls = (await client.get_limits()).max_concurrency
        assert not await client.list_jobs()

    # THEN its workers are already sized to the simulator's slots (not the template's 10), so a
    # first job's first batches are not more invocations than its next ones
    assert normal(stack.resources) == expected(calls, slots) != 10
