"""`llmbatch local up` in its own process: found by the other commands, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from llmbatch.client.stack import locate_stack
from llmbatch.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a reaper (state Z)."""
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(out) and not out.startswith("Z")


def test_local_up_serves_the_cli_and_ctrl_c_stops_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN `llmbatch local up` started in the background, with a named endpoint from a file
    state = tmp_path / "local.json"
    env = {**os.environ, "LLMBATCH_STATE": str(state)}
    endpoints = {"claude": {"kind": "bedrock", "default_model": "anthropic.claude-3-haiku-20240307-v1:0"}}
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmbatch.cli.main",
            "local",
            "up",
            "--parameter",
            f"Endpoints=@{tmp_path / 'endpoints.json'}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert state.exists(), proc.stderr.read() if proc.poll() is not None else "no state file"
        # ... with the workers' containers already started, one per invocation the mapping allows
        # (their init runs before the first job, not in its first seconds)
        # (and one for each scheduled function that has run: the lane poller)
        forkservers = [p for p in children_of(proc.pid) if "forkserver" in cmdline(p)]
        template = load_template(ROOT / "template.yaml")
        concurrency = int(template["Parameters"]["WorkerMaxConcurrency"]["Default"])
        scheduled = sum(
            1
            for r in template["Resources"].values()
            for e in (r.get("Properties", {}).get("Events") or {}).values()
            if e.get("Type") in ("Schedule", "ScheduleV2")
        )
        assert len(forkservers) == 1
        assert concurrency <= len(children_of(forkservers[0])) <= concurrency + scheduled

        # WHEN another command runs with no flags
        job = tmp_path / "job.jsonl"
        job.write_text(
            json.dumps(
                {
                    "custom_id": "a",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "sim-model", "input": "x"},
                }
            )
            + "\n"
        )
        submitted = subprocess.run(
            [sys.executable, "-m", "llmbatch.cli.main", "submit", str(job)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # THEN it found the stack through the state file
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.startswith("job-")
        # ... and the worker got the parameter, as `sam deploy --parameter-overrides` would give it
        monkeypatch.setenv("LLMBATCH_STATE", str(state))
        found = locate_stack(None)
        worker = boto3.client("lambda", **found.client_kwargs()).get_function_configuration(
            FunctionName=found.worker_function
        )
        assert json.loads(worker["Environment"]["Variables"]["ENDPOINTS"]) == endpoints
        # ... and the job's invocation started a container beside the simulator
        while len(children_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        helpers = children_of(proc.pid)
        assert len(helpers) >= 2, "the simulator and a container run as child processes"
    finally:
        # WHEN Ctrl-C arrives
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # fail, but leave nothing running behind
            for pid in [*children_of(proc.pid), proc.pid]:
                os.kill(pid, signal.SIGKILL)
            raise

    # THEN it exits cleanly, removes its state, and leaves no process behind
    assert code == 0
    assert not state.exists()
    assert [p for p in helpers if alive(p)] == []


@mock_aws
def test_a_deployed_stack_is_found_through_its_outputs() -> None:
    # GIVEN a deployed stack whose outputs are the template's
    outputs = {
        "RequestQueueUrl": "https://sqs/q",
        "DeadLetterQueueUrl": "https://sqs/d",
        "JobsTableName": "jobs",
        "ResultsTableName": "results",
        "LimitsParameterName": "/s/limits",
        "WorkerFunctionName": "s-Worker",
    }
    template = {
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    boto3.client("cloudformation", region_name="eu-west-1").create_stack(
        StackName="prod-batch", TemplateBody=json.dumps(template)
    )

    # WHEN it is located by name
    found = locate_stack("prod-batch", region="eu-west-1")

    # THEN every resource comes from its outputs, with no local endpoint
    assert (found.request_queue_url, found.jobs_table, found.worker_function) == ("https://sqs/q", "jobs", "s-Worker")
    assert found.region == "eu-west-1" and found.aws_endpoint_url is None


def test_local_up_refuses_a_parameter_the_template_does_not_have(tmp_path: Path) -> None:
    env = {**os.environ, "LLMBATCH_STATE": str(tmp_path / "local.json")}
    done = subprocess.run(
        [sys.executable, "-m", "llmbatch.cli.main", "local", "up", "--parameter", "Endpionts={}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "template.yaml has no parameter Endpionts" in done.stderr
    assert not (tmp_path / "local.json").exists()
