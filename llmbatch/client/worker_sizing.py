"""The worker's invocations sized to what its endpoints serve at once (issue 14, item 1).

An endpoint serves a fixed number of calls at once (vLLM's ``--max-num-seqs``, TGI's
``--max-concurrent-requests``, llama.cpp's ``--parallel``) and queues the rest. The stack
puts ``MaximumConcurrency x max_concurrency`` calls in flight (invocations of the worker x
calls per invocation: 10 x 16 = 160 with the template's defaults). Past what the endpoint
serves, more calls buy no throughput, and they cost three things:

* every call waits in the endpoint's queue (0.2 s became ~1 s at 160 calls on 32 slots),
  and the invocation pays Lambda for the wait;
* each invocation's batch takes that much longer (~6 s instead of ~1.3 s);
* a job submitted behind a big one waits for an invocation to end before any of its
  records is taken: SQS's fair queues choose which messages a worker gets next, not when
  a worker is free. With long batches on every invocation, that wait and the endpoint's
  queue took a 20-request job from 1.4 s alone to 7.6 s (docs/benchmarks.md).

Sized to the endpoints, invocations end sooner and a small job's records are taken within
one short batch, while the endpoints stay full: ``ceil(capacity x HEADROOM / calls per
invocation)`` invocations, within the event source mapping's bounds. ``HEADROOM`` keeps
more calls out than the endpoints serve, so they stay full while one invocation's batch
ends (its last partial wave) and the next starts.

Why 2.5 and not 2. Invocations that start together and share an endpoint evenly also end
their batches together, so their turnovers (the last partial wave, the final writes, the
next gather, the start-of-batch lookup) coincide, and the endpoint's queue, not any other
invocation, must cover them. At 2x it holds one call's time of work (0.2 s on the
benchmark's endpoint), less than a turnover with its drain. A queueing model of the
benchmark's endpoint (llmbatch/bench/turnover_model.py: 32 slots, 0.2 s calls, batches of
100, 16 calls each; turnovers of 0.05 s as in Lambda, 0.24 s as traced on the local stack)
gives, for 2,000 requests, 0.93 -> 0.95 of the endpoint in Lambda (20,000: 0.95 -> 0.98),
and little more at 3x. Measured on the local stack, same sitting, alternately, four
2,000-request jobs each: 131.8 -> 143.4 requests/s (docs/local-stack-profiles.md, session
14; then the local mapping started all of a job's invocations together, the model 0.87 ->
0.91; it now starts them one batch apart, llmbatch/local/poller.py, and 2.5x gains less
there: 0.905 -> 0.922 at 2,000 requests, 0.987 -> 0.990 at 20,000). The cost: a call
waits in the endpoint's queue for 1.5 calls' time instead of one (0.5 s instead of 0.4 s a
call), paid as invocation duration; a job behind another waits no longer (more
invocations, each a little longer: one frees as often).

The capacity is declared, not guessed: an endpoint's ``max_concurrency`` (``Endpoints``),
or ``EndpointMaxConcurrency`` for the stack's first endpoint. Endpoints whose capacity is
their rate limit (OpenAI, Bedrock) declare none; a stack with any such endpoint is left as
the operator set it, since sizing to the others would starve it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from shared.endpoints.specs import EndpointSpec

#: Calls kept in flight per call the endpoints serve at once (why 2.5: the module's docstring).
HEADROOM = 2.5
#: An SQS event source mapping's MaximumConcurrency: Lambda takes 2 to 1,000.
ESM_CONCURRENCY_BOUNDS = (2, 1000)


def invocations_for(
    capacity: int,
    calls_per_invocation: int,
    *,
    headroom: float = HEADROOM,
    bounds: tuple[int, int] = ESM_CONCURRENCY_BOUNDS,
) -> int:
    """The fewest invocations whose calls cover ``headroom`` x ``capacity``, within ``bounds``."""
    lo, hi = bounds
    return min(hi, max(lo, math.ceil(capacity * headroom / max(1, calls_per_invocation))))


@dataclass(frozen=True)
class WorkerSizing:
    """How many worker invocations at once, and what from."""

    workers: int
    #: The calls the endpoints serve at once, summed.
    capacity: int
    calls_per_invocation: int

    def describe(self) -> str:
        return (
            f"{self.workers} workers x {self.calls_per_invocation} calls for endpoints serving "
            f"{self.capacity} calls at once"
        )


def workers_for(
    endpoints: Mapping[str, EndpointSpec], *, calls_per_invocation: int, bounds: tuple[int, int]
) -> WorkerSizing | None:
    """The invocations that keep ``endpoints`` full, with ``HEADROOM`` x the calls they serve
    at once in flight, or None when an endpoint declares no capacity (nothing to size from)."""
    capacities = [spec.max_concurrency for spec in endpoints.values()]
    if not capacities or any(c is None for c in capacities):
        return None
    capacity = sum(c for c in capacities if c is not None)
    return WorkerSizing(invocations_for(capacity, calls_per_invocation, bounds=bounds), capacity, calls_per_invocation)
