"""One emulated Lambda container: a process of its own, so module state (clients, pools,
the event loop) lives apart from other containers, as in Lambda; killing it loses exactly
what losing a container loses.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from llmbatch.local.provision import ACCOUNT_ID, REGION, LocalFunction

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeLambdaContext:
    """The parts of Lambda's context object handlers use; remaining time counts down."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: float
    aws_request_id: str = ""
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def container_main(
    conn: Connection,
    function: LocalFunction,
    aws_endpoint_url: str,
    extra_env: dict[str, str],
    log_path: str | None = None,
) -> None:
    """Entry point of a container process: load the handler once, then serve invocations."""
    if log_path:  # what Lambda sends to CloudWatch Logs (logs, EMF metrics) goes to a file
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    os.environ.update(function.environment)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            **extra_env,
        }
    )
    # As in Lambda: the function's code directory and the layer (the repo root, where
    # shared/ lives) on the path; the handler module imported by its own name.
    sys.path[:0] = [str(function.code_dir), str(ROOT)]
    module_name, handler_name = function.handler.rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), handler_name)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            msg = None
        if msg is None:
            # Lambda never closes a container's clients: it freezes, then discards it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        event = msg
        context = FakeLambdaContext(function.name, function.memory_mb, function.timeout_s)
        started = time.monotonic()
        try:
            result: Any = handler(event, context)
            conn.send(("ok", {"result": result, "duration_s": time.monotonic() - started}))
        except Exception as e:
            conn.send(("error", {"type": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}))


#: Imported once, in multiprocessing's fork server, before any container is forked from it:
#: the SDKs, Powertools, pydantic and our core, which every handler imports. A container's
#: cold start then costs its handler module's own import and its clients, not ~1-2 s of CPU
#: for these again (ten containers starting at once took 20 s of CPU: the most of a
#: 2,000-request job's local CPU). None of them reads the environment or makes a client,
#: a loop or a thread at import: each container still sets its own environment, imports
#: its handler and makes its own clients after the fork, so module state stays its own.
PRELOAD = (
    "aiobotocore.session",
    "aiobotocore.config",
    "aiohttp",
    "pydantic",
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.parameters",
    "shared.container",
    "shared.messages",
    "shared.observability",
)


def _context() -> Any:
    """Fork server where the platform has one (Linux, macOS): a clean single-threaded
    process that has imported :data:`PRELOAD` forks each container; else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


class ContainerProcess:
    """The poller's handle on one container process."""

    _ctx = _context()

    @classmethod
    def prepare(cls) -> None:
        """Start the fork server now (it imports :data:`PRELOAD`, ~1-2 s of CPU), so the
        first containers fork at once instead of waiting for it: part of the emulator's own
        start, not of a Lambda container's cold start."""
        if cls._ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    @classmethod
    def shutdown(cls) -> None:
        """Stop the fork server and wait for it (it would otherwise end only when this
        process does, a moment after; a stopped stack leaves no process behind). The next
        container starts it again. Containers already forked are not affected."""
        if cls._ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver._forkserver._stop()  # type: ignore[attr-defined]

    def __init__(
        self,
        function: LocalFunction,
        aws_endpoint_url: str,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.function = function
        parent, child = self._ctx.Pipe()
        self._conn = parent
        self.process = self._ctx.Process(
            target=container_main,
            args=(child, function, aws_endpoint_url, extra_env or {}, str(log_path) if log_path else None),
            daemon=True,
            name=f"lambda-{function.logical_id}",
        )
        self.process.start()
        child.close()
        self._ready = False
        #: In the middle of an invocation (fault drills kill a busy one).
        self.busy = False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        if self._ready:
            return
        if not self._conn.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"container for {self.function.name} did not start")
        kind, _ = self._conn.recv()
        self._ready = kind == "ready"

    def invoke(self, event: dict[str, Any], timeout_s: float) -> tuple[str, dict[str, Any]]:
        """Run one invocation. ``("timeout", {})`` when it overran: the container is killed,
        as Lambda does. ``("crashed", {})`` when the process died."""
        self.wait_ready()
        try:
            self._conn.send(event)
            if not self._conn.poll(timeout_s):
                self.kill()
                return "timeout", {}
            kind, payload = self._conn.recv()
            return kind, payload
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.kill()
            return "crashed", {}

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self._conn.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
