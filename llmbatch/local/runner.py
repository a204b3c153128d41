"""``llmbatch local up``: moto's server, the model endpoint, the stack from template.yaml,
and a poller per event source, started together and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmbatch.client.stack import StackResources, state_path
from llmbatch.local.endpoint_choice import LocalEndpoint
from llmbatch.local.lambda_runtime import ContainerProcess
from llmbatch.local.model_server import STACK_PARAMETERS as MODEL_SERVER_PARAMETERS
from llmbatch.local.model_server import ModelServer
from llmbatch.local.moto_server import LOCAL_STACK_SERVICES, MotoServerProcess
from llmbatch.local.poller import EventSourceMappingEmulator
from llmbatch.local.provision import DEFAULT_TEMPLATE, ProvisionedStack, provision_stack
from llmbatch.local.schedule import ScheduleEmulator

log = logging.getLogger("llmbatch.local")

#: The functions' output (their CloudWatch Logs, in AWS): one file per function.
DEFAULT_LOG_DIR = Path(".llmbatch") / "logs"


class SimulatorProcess:
    """The endpoint simulator in a process of its own (its CPU apart from the workers')."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._config = dict(config or {})
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def slots(self) -> int:
        """The calls it serves at once: what the stack's endpoint declares (``EndpointMaxConcurrency``)."""
        from llmbatch.local.simulator.config import SimulatorConfig

        return int(self._config.get("slots", SimulatorConfig().slots))

    def start(self) -> str:
        cmd = [sys.executable, "-m", "llmbatch.local.simulator", "--port", "0"]
        if self._config:
            cmd += ["--config-json", json.dumps(self._config)]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the endpoint simulator did not start")
        self.url = json.loads(line)["url"]
        return self.url

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


async def _size_workers(resources: StackResources) -> None:
    """The worker's mappings sized to the endpoint, as the operator's client sizes them (a stack
    it cannot size, e.g. a template whose worker has no mapping, starts as it is, said once)."""
    from llmbatch.client.client import LlmbatchClient

    async with LlmbatchClient(resources) as client:
        await client.size_workers_if_allowed()


class LocalStack:
    """Everything the local default needs. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        *,
        template_path: Path = DEFAULT_TEMPLATE,
        endpoint_url: str | None = None,
        endpoint: LocalEndpoint = LocalEndpoint.SIMULATOR,
        simulator_config: Mapping[str, Any] | None = None,
        parameter_overrides: Mapping[str, str] | None = None,
        container_env: Mapping[str, str] | None = None,
        stack_name: str = "llmbatch-local",
        write_state: bool = True,
        log_dir: Path | None = DEFAULT_LOG_DIR,
        warm_containers: bool = False,
        schedule_interval_s: float | None = None,
    ) -> None:
        self.template_path = template_path
        self.endpoint_url = endpoint_url
        # endpoint_url, when given, wins: the stack then starts no endpoint of its own.
        own = None if endpoint_url else endpoint
        self.simulator = SimulatorProcess(simulator_config) if own is LocalEndpoint.SIMULATOR else None
        self.model_server = (
            ModelServer(log_path=log_dir / "model-server.log" if log_dir else None)
            if own is LocalEndpoint.SMOLLM
            else None
        )
        self.parameter_overrides = dict(parameter_overrides or {})
        self.container_env = dict(container_env or {})
        self.stack_name = stack_name
        self.write_state = write_state
        self.log_dir = log_dir
        #: Start the workers' containers before reporting ready (``local up``): see
        #: :meth:`EventSourceMappingEmulator.warm`. Tests and one-shot runs start them on demand.
        self.warm_containers = warm_containers
        # moto in processes of their own: DynamoDB in one, every other service in the other
        # (which passes DynamoDB calls on), apart from the pollers' process: each its own
        # core and interpreter lock. The workers reach DynamoDB's directly.
        self.dynamodb = MotoServerProcess(warm=("dynamodb",))
        self.moto: MotoServerProcess | None = None
        self.pollers: list[EventSourceMappingEmulator] = []
        #: The functions' scheduled events, run every ``schedule_interval_s`` (llmbatch/local/schedule.py).
        self.schedule_interval_s = schedule_interval_s
        self.schedules: list[ScheduleEmulator] = []
        self.provisioned: ProvisionedStack | None = None

    @property
    def resources(self) -> StackResources:
        assert self.provisioned is not None, "the local stack is not started"
        return self.provisioned.resources

    def start(self) -> StackResources:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> StackResources:
        dynamodb_url = self.dynamodb.start()
        self.moto = MotoServerProcess(forward_dynamodb=dynamodb_url, warm=LOCAL_STACK_SERVICES)
        aws_url = self.moto.start()
        # Webhooks to a server on this machine are plain http (the Notifier refuses that in AWS).
        container_env = {
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
            "NOTIFY_ALLOW_HTTP_LOOPBACK": "true",
            **self.container_env,
        }
        if self.model_server:
            model_url = self.model_server.start()
        elif self.simulator:
            model_url = self.simulator.start()
        else:
            model_url = self.endpoint_url or ""
        tuned = MODEL_SERVER_PARAMETERS if self.model_server else {}
        # The simulator's slots are known: the workers are sized to them (auto_workers), unless
        # the stack is started with a worker concurrency of its own (a drill's, a test's).
        sized = self.simulator and "WorkerMaxConcurrency" not in self.parameter_overrides
        declared = {"EndpointMaxConcurrency": str(self.simulator.slots)} if sized and self.simulator else {}
        overrides = {"EndpointUrl": model_url, **declared, **tuned, **self.parameter_overrides}
        self.provisioned = provision_stack(
            aws_url,
            stack_name=self.stack_name,
            template_path=self.template_path,
            parameter_overrides=overrides,
            model_endpoint_url=model_url,
        )
        if sized:
            # Sized before any poller starts, as a job would size them: the first job's first
            # round of batches would otherwise run on the template's WorkerMaxConcurrency,
            # all of them ending together, and leave the endpoint idle while a smaller
            # number of invocations gather their next batches (issue 12).
            # In a thread of its own: a stack may be started from a running event loop.
            with ThreadPoolExecutor(max_workers=1) as one:
                one.submit(asyncio.run, _size_workers(self.provisioned.resources)).result()
        for function in self.provisioned.functions.values():
            for source in function.event_sources:
                poller = EventSourceMappingEmulator(
                    function, source, aws_url, container_env=container_env, log_dir=self.log_dir
                )
                poller.start()
                self.pollers.append(poller)
            for schedule in function.schedules:
                scheduler = ScheduleEmulator(
                    function,
                    schedule,
                    aws_url,
                    interval_s=self.schedule_interval_s,
                    container_env=container_env,
                    log_dir=self.log_dir,
                )
                scheduler.start()
                self.schedules.append(scheduler)
        if self.warm_containers:  # the request queue's workers: the others wait for rare events
            for poller in self.pollers:
                if poller.source.queue_url == self.provisioned.resources.request_queue_url:
                    poller.warm()
        if self.write_state:
            path = state_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole, then renamed: a reader polling for the file never sees it half written.
            partial = path.with_suffix(".partial")
            partial.write_text(self.provisioned.resources.to_json())
            partial.replace(path)
        return self.provisioned.resources

    def stop(self) -> None:
        # Every mapping's slots are told first, so their last long polls end together.
        for poller in self.pollers:
            poller.signal_stop()
        for poller in self.pollers:
            with contextlib.suppress(Exception):
                poller.stop()
        self.pollers.clear()
        for scheduler in self.schedules:
            with contextlib.suppress(Exception):
                scheduler.stop()
        self.schedules.clear()
        with contextlib.suppress(Exception):
            ContainerProcess.shutdown()
        if self.simulator:
            self.simulator.stop()
        if self.model_server:
            self.model_server.stop()
        for moto in (self.moto, self.dynamodb):
            if moto is not None:
                with contextlib.suppress(Exception):
                    moto.stop()
        if self.write_state:
            with contextlib.suppress(FileNotFoundError):
                state_path().unlink()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
