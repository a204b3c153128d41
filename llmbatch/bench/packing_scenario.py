"""The request-packing scenario: the same embedding requests with packing off (cap 1) and on.

N single-input ``/v1/embeddings`` requests go through :class:`shared.packing.Packer` to the
simulator over HTTP, as the records of SQS batches would: all of one batch at once, each
call holding one slot of a concurrency limiter as in the worker. The simulator charges a
fixed latency per call plus a little per prompt token, so a packed call costs more than a
single one but far less than its inputs sent one by one (as batching servers behave).

Only the packing is measured (no AWS, no result writes): the figures show what packing
changes, calls made and wall time, with everything else held equal.

``python -m llmbatch.bench.packing_scenario`` prints the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmbatch.local.simulator import SimulatorConfig, start_simulator
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.limits.limiter import AdjustableLimiter
from shared.packing import OutgoingCall, Packer, send_directly

ROUTE = "/v1/embeddings"
MODEL = "sim-model"
#: The endpoint: a few slots, 100 ms a call, 1 ms per prompt token.
SIMULATOR: dict[str, Any] = {
    "slots": 8,
    "base_latency_s": 0.1,
    "per_prompt_token_s": 0.001,
    "per_output_token_s": 0.0,
    "jitter_s": 0.0,
    "seed": 5,
}
#: Records per SQS batch (the worker's BatchSize is larger; the packer sees one batch at a time).
BATCH = 100
#: Calls in flight at once (the limiter's slots), as many as the endpoint has.
CONCURRENCY = int(SIMULATOR["slots"])
#: Requests per run: four batches.
REQUESTS = 4 * BATCH


@dataclass(frozen=True)
class PackingRun:
    cap: int
    requests: int
    #: Calls the endpoint received, as the simulator counted them.
    calls: int
    wall_s: float
    succeeded: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0


async def run_once(
    cap: int,
    *,
    requests: int = REQUESTS,
    concurrency: int = CONCURRENCY,
    simulator: dict[str, Any] | None = None,
) -> PackingRun:
    """One run against a fresh in-process simulator."""
    running = await start_simulator(SimulatorConfig.from_dict({**SIMULATOR, **(simulator or {})}))
    limiter = AdjustableLimiter(concurrency)

    async def send(call: OutgoingCall) -> EndpointReply:
        async with limiter.slot():  # one slot per call, packed or not, as in the worker
            return await send_directly(call)

    packer = Packer(send, max_inputs=cap)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            endpoint = OpenAIHttpEndpoint("default", session, running.url)

            async def one(i: int) -> bool:
                body = {"model": MODEL, "input": f"document {i}: a short passage to embed"}
                reply = await packer.call(endpoint, ROUTE, body, timeout_s=60.0, custom_id=f"doc-{i}")
                return bool(reply.body["data"])

            started = time.monotonic()
            succeeded = 0
            for start in range(0, requests, BATCH):
                batch = range(start, min(start + BATCH, requests))
                succeeded += sum(await asyncio.gather(*(one(i) for i in batch)))
            wall_s = time.monotonic() - started
        calls = int(running.simulator.stats()["requests_by_route"].get(ROUTE, 0))
    finally:
        await packer.aclose()
        await running.close()
    return PackingRun(cap=cap, requests=requests, calls=calls, wall_s=wall_s, succeeded=succeeded)


def run_packing_scenario(
    caps: Sequence[int] = (1, 16), *, requests: int = REQUESTS, concurrency: int = CONCURRENCY
) -> list[PackingRun]:
    """Each cap in turn on the same requests and endpoint (cap 1 is packing off)."""
    return [asyncio.run(run_once(cap, requests=requests, concurrency=concurrency)) for cap in caps]


def text_table(runs: Sequence[PackingRun]) -> str:
    lines = [f"{'cap':>5} {'requests':>9} {'calls':>7} {'wall s':>8} {'req/s':>8}"]
    lines += [f"{r.cap:>5} {r.requests:>9} {r.calls:>7} {r.wall_s:>8.2f} {r.requests_per_s:>8.1f}" for r in runs]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmbatch.bench.packing_scenario", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--cap", type=int, action="append", help="repeatable; default: 1 and 16")
    args = parser.parse_args(argv)
    runs = run_packing_scenario(args.cap or (1, 16), requests=args.requests, concurrency=args.concurrency)
    print(text_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
