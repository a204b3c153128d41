"""`llmbatch limits` and `llmbatch limits set` (llmbatch/cli/limits.py), against moto's server
over real HTTP with the stack built from template.yaml: the limits parameter in SSM and the
worker's event source mapping, found through the local stack's state file as a user's would be."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from llmbatch.cli.limits import LIMITS, WORKER_CONCURRENCY
from llmbatch.cli.main import cli
from llmbatch.client.stack import StackResources
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from shared.config import RuntimeLimits

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def resources() -> Iterator[StackResources]:
    with MotoServer() as server:
        yield provision_stack(server.url).resources


@pytest.fixture
def stack(resources: StackResources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackResources:
    """The stack as `llmbatch local up` leaves it: named by the state file, so no flags are needed."""
    state = tmp_path / "local.json"
    state.write_text(resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(state))
    return resources


def llmbatch(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def in_aws(stack: StackResources) -> tuple[dict[str, Any], int, int]:
    """The limits parameter's value and version, and the mapping's MaximumConcurrency, read
    with boto3 rather than the code under test."""
    kwargs = stack.client_kwargs()
    param = boto3.client("ssm", **kwargs).get_parameter(Name=stack.limits_parameter)["Parameter"]
    mapping = boto3.client("lambda", **kwargs).list_event_source_mappings(FunctionName=stack.worker_function)
    workers = int(mapping["EventSourceMappings"][0]["ScalingConfig"]["MaximumConcurrency"])
    return json.loads(param["Value"]), int(param["Version"]), workers


def test_limits_set_then_read_back_gives_the_values_set_both_in_aws_and_from_the_cli(stack: StackResources) -> None:
    # GIVEN the stack as provisioned
    # WHEN RPM, calls per invocation and worker concurrency are set
    result = llmbatch("limits", "set", "--rpm", "3000", "--calls", "32", "--workers", "20")

    # THEN the command succeeds and prints them read back
    assert result.exit_code == 0, result.output
    assert "requests per minute      3,000" in result.stdout
    # ... AWS holds them
    limits, _, workers = in_aws(stack)
    assert (limits["rpm_limit"], limits["max_concurrency"], workers) == (3000, 32, 20)
    # ... and `limits --json` reads them back, every live limit included
    read = llmbatch("limits", "--json")
    assert read.exit_code == 0, read.output
    shown = json.loads(read.stdout)
    assert {k: shown[k] for k in ("rpm_limit", "max_concurrency", WORKER_CONCURRENCY)} == {
        "rpm_limit": 3000,
        "max_concurrency": 32,
        WORKER_CONCURRENCY: 20,
    }
    assert set(RuntimeLimits.model_fields) <= shown.keys()
    assert shown["limits_changed_at"] and shown["worker_concurrency_changed_at"]


def test_limits_set_changes_only_the_fields_given(stack: StackResources) -> None:
    # GIVEN limits with an RPM limit, a TPM limit and adaptive concurrency off
    assert llmbatch("limits", "set", "--rpm", "1200", "--tpm", "50,000", "--no-adaptive").exit_code == 0
    limits_before, _, workers_before = in_aws(stack)

    # WHEN only TPM is changed, then only RPM removed, then only adaptive concurrency turned on
    for args in (["--tpm", "90_000"], ["--rpm", "none"], ["--adaptive"]):
        result = llmbatch("limits", "set", *args)
        assert result.exit_code == 0, result.output

    # THEN those three changed and every other limit is as it was
    limits_after, _, workers_after = in_aws(stack)
    changed = {"tpm_limit": 90000, "rpm_limit": None, "adaptive_concurrency": True}
    assert {k: limits_after[k] for k in changed} == changed
    assert {k: v for k, v in limits_after.items() if k not in changed} == {
        k: v for k, v in limits_before.items() if k not in changed
    }
    assert workers_after == workers_before


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--calls", "1001", "--rpm", "5"], "max_concurrency must be a whole number from 1 to 1000, got 1001"),
        (["--rpm", "0", "--workers", "30"], "rpm_limit must be a whole number from 1 to 10000000, got 0"),
        (["--workers", "1", "--rpm", "5"], "maximum concurrency must be from 2 to 1000, got 1"),
        (["--inputs-per-call", "2049"], "max_inputs_per_call must be a whole number from 1 to 2048, got 2049"),
    ],
)
def test_an_invalid_value_is_refused_in_one_line_and_nothing_is_changed(
    stack: StackResources, args: list[str], reason: str
) -> None:
    # GIVEN the limits in force
    before = in_aws(stack)

    # WHEN a change with one value out of range (beside a valid one) is asked for
    result = llmbatch("limits", "set", *args)

    # THEN it fails with the console's own reason on one line, and neither place was written
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"llmbatch: Invalid configuration: {reason}"]
    assert in_aws(stack) == before


def test_a_value_that_is_not_a_number_is_a_usage_error(stack: StackResources) -> None:
    # GIVEN / WHEN a word where a number goes
    before = in_aws(stack)
    result = llmbatch("limits", "set", "--calls", "many")

    # THEN click refuses it before any AWS call (and `none` is only for the limits that may be absent)
    assert result.exit_code == 2
    assert "'many' is not a whole number" in result.stderr
    assert llmbatch("limits", "set", "--calls", "none").exit_code == 2
    assert in_aws(stack) == before


def test_limits_set_without_a_limit_says_what_is_missing(stack: StackResources) -> None:
    result = llmbatch("limits", "set")
    assert result.exit_code == 2
    assert "name at least one limit" in result.stderr


def test_limits_prints_one_line_per_live_limit_with_the_option_that_sets_it(stack: StackResources) -> None:
    # GIVEN / WHEN the limits are read as text
    result = llmbatch("limits")

    # THEN each live limit has its line, labelled as on the console, with its option
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for spec in LIMITS:
        assert any(line.startswith(spec.label) and f"--{spec.option}" in line for line in lines), spec.label


def test_every_limit_of_the_limits_parameter_has_an_option() -> None:
    # GIVEN the live limits RuntimeLimits defines / THEN `limits set` can change each of them
    # (auto_workers through `--workers auto` and `--workers N`)
    assert {spec.setting for spec in LIMITS} | {"auto_workers"} == {*RuntimeLimits.model_fields, WORKER_CONCURRENCY}
