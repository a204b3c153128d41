"""Running the simulator: on the caller's loop (:func:`start_simulator`) or on a thread of
its own (:class:`SimulatorThread`), for synchronous tests and tools."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import typing
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmbatch.local.simulator.app import SIMULATOR_KEY, build_app
from llmbatch.local.simulator.config import LOCALHOST, SimulatorConfig
from llmbatch.local.simulator.core import Simulator


@dataclass
class RunningSimulator:
    """A simulator listening on 127.0.0.1; ``url`` is the OpenAI base URL (ends in ``/v1``)."""

    runner: web.AppRunner
    app: web.Application
    host: str
    port: int
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """Base for the control routes: ``root_url + "/_sim/stats"``."""
        return f"http://{self.host}:{self.port}"

    @property
    def simulator(self) -> Simulator:
        return self.app[SIMULATOR_KEY]

    async def close(self) -> None:
        """Stop listening and cancel hung requests; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.runner.cleanup()


async def start_simulator(
    config: SimulatorConfig | None = None, host: str = LOCALHOST, port: int = 0
) -> RunningSimulator:
    """Start serving on ``host:port`` (0 = any free port) and return once listening."""
    app = build_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(runner=runner, app=app, host=host, port=bound_port)


class SimulatorThread:
    """A simulator on its own event loop in a daemon thread, for synchronous code and tests.

    ``start()`` returns the ``/v1`` URL once the server listens; ``stop()`` shuts it down.
    Also a context manager.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, port: int = 0) -> None:
        self._config = config
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: RunningSimulator | None = None

    @property
    def running(self) -> RunningSimulator:
        if self._running is None:
            raise RuntimeError("SimulatorThread is not started")
        return self._running

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def root_url(self) -> str:
        return self.running.root_url

    @property
    def port(self) -> int:
        return self.running.port

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            raise RuntimeError("SimulatorThread already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._running = loop.run_until_complete(start_simulator(self._config, port=self._port))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _drain_loop(loop)

        self._thread = threading.Thread(target=run, name="llmbatch-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("simulator did not start in time")
        if errors:
            self._thread = None
            raise errors[0]
        return self.url

    def _call(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        if self._loop is None or self._running is None:
            raise RuntimeError("SimulatorThread is not started")

        async def wrapper() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        """The same dict as ``GET /_sim/stats``, read on the server's loop."""

        async def read() -> dict[str, Any]:
            return self.running.simulator.stats()

        return typing.cast(dict[str, Any], self._call(read()))

    def reset(self) -> None:
        async def do() -> None:
            self.running.simulator.reset()

        self._call(do())

    def update_config(self, **changes: Any) -> SimulatorConfig:
        async def do() -> SimulatorConfig:
            return self.running.simulator.update_config(changes)

        return typing.cast(SimulatorConfig, self._call(do()))

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, running = self._thread, self._loop, self._running
        if thread is None or loop is None:
            return
        if running is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._running = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _drain_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel leftovers and close the loop without 'task was destroyed' warnings."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
