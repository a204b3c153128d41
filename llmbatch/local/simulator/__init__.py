"""An OpenAI-compatible endpoint simulator for tests, benchmarks and fault drills.

llmbatch's workers talk to "an OpenAI-compatible endpoint" (OpenAI itself, vLLM, TGI, ...).
Testing them against a stub that answers instantly and never fails proves very little: the
interesting behaviour (back-pressure, retries, deadlines, rate limits, hung connections) only
shows up against a server that behaves like a real one under load.  This simulator does:

* it serves a bounded number of requests at once (``slots``, like a vLLM batch) and queues the
  rest FIFO, so concurrency beyond capacity turns into latency, not into free throughput;
* latency grows with prompt and output size, with seeded jitter and optional slow tails;
* RPM/TPM limits are enforced with continuously refilling token buckets and answered the way
  OpenAI answers them (429 + ``Retry-After`` + ``x-ratelimit-*`` headers);
* faults (429, 5xx, hangs) can be injected at a rate, or targeted at specific requests with
  text markers such as ``[[sim:fail-first-2:503]]`` so integration tests are deterministic;
* everything it did is counted at ``GET /_sim/stats`` and its config can be changed live with
  ``POST /_sim/config`` (drills that turn faults on mid-run).

It binds to 127.0.0.1 only: it has no real authentication and must never face a network.

Run it with ``python -m llmbatch.local.simulator --port 0 --slots 8``; it prints one JSON line
``{"url": "http://127.0.0.1:PORT/v1", "port": PORT}`` once listening.

The package, one job a module: :mod:`.config` (settings and their coercion), :mod:`.capacity`
(slots and token buckets), :mod:`.openai_api` (request parsing and fake answers),
:mod:`.faults` (markers), :mod:`.core` (the simulator itself), :mod:`.app` (routes),
:mod:`.runner` (on a loop or a thread) and :mod:`.cli`.
"""

from llmbatch.local.simulator.app import SIMULATOR_KEY, build_app
from llmbatch.local.simulator.capacity import SlotPool, format_duration
from llmbatch.local.simulator.cli import config_from_args, main
from llmbatch.local.simulator.config import CUSTOM_ID_HEADER, MISSING_MODEL, SimulatorConfig
from llmbatch.local.simulator.core import Simulator
from llmbatch.local.simulator.runner import RunningSimulator, SimulatorThread, start_simulator

__all__ = [
    "CUSTOM_ID_HEADER",
    "MISSING_MODEL",
    "SIMULATOR_KEY",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "SimulatorThread",
    "SlotPool",
    "build_app",
    "config_from_args",
    "format_duration",
    "main",
    "start_simulator",
]
