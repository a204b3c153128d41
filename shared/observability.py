"""What an invocation reports: CloudWatch metrics (EMF, through Powertools Metrics), X-Ray
traces when the stack turns them on (Powertools Tracer), and what it used of the stack per
job (the counters behind the cost estimate, :mod:`llmbatch.client.cost`).

Only counts, timings and ids leave the worker; prompt and response text never do. Traces
carry no captured response (``capture_response=False``) and a model call's subsegment holds
its endpoint, route, ``custom_id``, status code, error code and token counts: never a body,
an answer or an error's message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from shared.apportion import apportion
from shared.endpoints.base import Endpoint, EndpointReply
from shared.errors import LlmbatchError
from shared.jobs import Metering
from shared.store.result_store import ResultStore
from shared.worker.processor import HARD_STOP_MARGIN_S, Worker
from shared.worker.stats import EndpointStats, InvocationStats

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

log = logging.getLogger("llmbatch.observability")

#: Set by template.yaml from its Tracing parameter ("false" only when tracing is Active).
TRACE_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})

F = TypeVar("F", bound=Callable[..., Any])

#: Values per metric in one EMF document: EMF takes 100, and Powertools prints a document by
#: itself the moment a metric reaches 100 (even with metrics disabled), so one fewer keeps
#: every document to one flush of ours.
MAX_LATENCY_VALUES = 99
#: The dimension that tells endpoints apart (the template's dashboard searches on it).
ENDPOINT_DIMENSION = "endpoint"


def publish_invocation(metrics: Metrics, stats: InvocationStats) -> None:
    """One EMF document per endpoint the invocation used, each with its ``endpoint``
    dimension (requests naming none the worker serves count as ``worker.NO_ENDPOINT``),
    printed now; and the container's own metrics (dead letters, the concurrency limit)
    added to ``metrics``, without that dimension, which the handler's ``log_metrics`` flushes.

    An :class:`EphemeralMetrics` per endpoint rather than ``single_metric``: one document
    carries all of an endpoint's metrics, where ``single_metric`` prints one per metric (and
    one value each, so a hundred for the latencies). It shares no state with ``metrics``,
    whose dimensions stay the container's.
    """
    for endpoint, counts in stats.by_endpoint.items():
        doc = EphemeralMetrics(
            namespace=metrics.namespace, service=metrics.service, default_dimensions=dict(metrics.default_dimensions)
        )
        doc.add_dimension(name=ENDPOINT_DIMENSION, value=endpoint)
        for name, unit, value in endpoint_metrics(counts):
            doc.add_metric(name=name, unit=unit, value=value)
        doc.flush_metrics()
    metrics.add_metric(name="DeadLettered", unit=MetricUnit.Count, value=stats.dead_lettered)
    metrics.add_metric(name="ConcurrencyLimit", unit=MetricUnit.Count, value=stats.concurrency_limit)


def endpoint_metrics(s: EndpointStats) -> list[tuple[str, MetricUnit, float]]:
    """``(name, unit, value)`` of each metric of one endpoint's document."""
    counts = [
        ("ModelCalls", s.calls),
        ("RequestsSucceeded", s.succeeded),
        ("RequestsFailed", s.failed),
        ("RequestsRetried", s.retried),
        ("BudgetExhausted", s.budget_exhausted),
        ("RequestsDeferred", s.deferred),
        ("DuplicatesSkipped", s.duplicates),
        ("RateLimitedCalls", s.rate_limited_calls),
        ("Throttled", s.throttled),
        ("TokensIn", s.prompt_tokens),
        ("TokensOut", s.completion_tokens),
    ]
    return [
        *((name, MetricUnit.Count, value) for name, value in counts),
        ("RateLimitWaitTime", MetricUnit.Milliseconds, round(s.rate_limit_wait_s * 1000)),
        *(("ModelLatency", MetricUnit.Milliseconds, v) for v in latency_sample(s.latencies_ms)),
    ]


def latency_sample(latencies_ms: Sequence[int], size: int = MAX_LATENCY_VALUES) -> list[int]:
    """At most ``size`` latencies that keep the shape of all of them: evenly spaced ranks of
    the sorted values, both extremes included. Not the first ones: those are the calls that
    finished first, the fast ones, and their p99 would hide the slow tail."""
    if len(latencies_ms) <= size:
        return list(latencies_ms)
    ranked = sorted(latencies_ms)
    step = (len(ranked) - 1) / max(size - 1, 1)
    return [ranked[round(i * step)] for i in range(size)]


# ---- tracing ------------------------------------------------------------------------------


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Off unless the stack turns it on: ``POWERTOOLS_TRACE_DISABLED`` set to a false value."""
    value = (os.environ if env is None else env).get(TRACE_DISABLED_ENV, "")
    return value.strip().lower() in _FALSE


def make_tracer(service: str) -> Tracer | None:
    """A Powertools Tracer when tracing is on, else None.

    Asked before any Tracer exists because making one imports the X-Ray SDK, about 0.2 s of
    cold start (llmbatch/bench/importtime.py) that a function with tracing off should not pay. Not
    auto-patched: the SDK's patches keep one stack of open subsegments per thread, which
    concurrent model calls and DynamoDB writes on one event loop would tangle; model calls
    get subsegments of their own (:class:`TracedEndpoint`).
    """
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=service, auto_patch=False)


def capture_handler(tracer: Tracer | None) -> Callable[[F], F]:
    """The handler in a ``## lambda_handler`` subsegment, its response never captured."""
    if tracer is None:
        return lambda handler: handler
    decorate: Callable[[F], F] = tracer.capture_lambda_handler(capture_response=False)
    return decorate


class TracedEndpoint:
    """An endpoint whose every call is a subsegment ``## model NAME`` of the handler's.

    The subsegment is attached to its parent by hand rather than opened on the recorder's
    stack: calls run concurrently on one thread, and a shared stack would nest them in one
    another and close the wrong one (aws-xray-sdk-python#164). It is streamed to the daemon
    once closed, as the SDK streams its own.
    """

    def __init__(self, inner: Endpoint, recorder: Any) -> None:
        self.name = inner.name
        self._inner = inner
        self._recorder = recorder

    def __repr__(self) -> str:
        return f"TracedEndpoint({self._inner!r})"

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        subsegment = self._begin()
        if subsegment is None:
            return await self._inner.call(route, body, timeout_s=timeout_s, custom_id=custom_id)
        subsegment.put_annotation("endpoint", self.name)
        subsegment.put_annotation("route", route)
        subsegment.put_annotation("custom_id", custom_id)
        try:
            reply = await self._inner.call(route, body, timeout_s=timeout_s, custom_id=custom_id)
        except LlmbatchError as e:
            _flag_error(subsegment, e)
            raise
        except BaseException:
            subsegment.add_fault_flag()
            raise
        else:
            subsegment.put_annotation("status_code", reply.status_code)
            subsegment.put_metadata("tokens", {"in": reply.usage.prompt_tokens, "out": reply.usage.completion_tokens})
            return reply
        finally:
            subsegment.close()
            self._recorder.stream_subsegments()

    def _begin(self) -> Any:
        from aws_xray_sdk.core.models.subsegment import Subsegment

        parent = self._recorder.get_trace_entity()
        segment = getattr(parent, "parent_segment", parent)
        if parent is None or not getattr(parent, "sampled", False) or segment is None:
            return None  # not sampled, or outside a traced invocation
        subsegment = Subsegment(f"## model {self.name}", "remote", segment)
        parent.add_subsegment(subsegment)
        return subsegment


def _flag_error(subsegment: Any, e: LlmbatchError) -> None:
    """Status and a short code only: an error's message may quote the request."""
    status = getattr(e, "status_code", None)
    if status:
        subsegment.put_annotation("status_code", status)
    subsegment.put_annotation("error", f"{type(e).__name__}:{getattr(e, 'code', None) or ''}")
    if status == 429:
        subsegment.add_throttle_flag()
    elif status and 400 <= status < 500:
        subsegment.add_error_flag()
    else:
        subsegment.add_fault_flag()


def trace_model_calls(worker: Worker, tracer: Tracer) -> None:
    """Wrap each of the worker's endpoints in a :class:`TracedEndpoint`."""
    worker.endpoints = {name: TracedEndpoint(e, tracer.provider) for name, e in worker.endpoints.items()}


# ---- metering ---------------------------------------------------------------------------


def invocation_metering(stats: InvocationStats, duration_ms: int) -> dict[str, Metering]:
    """Each job's part of one invocation: its messages, their size, its claim checks, and the
    invocation's duration split by its share of the records. Only messages the worker took
    as their job's count (``stats.deliveries``): a stranger's message naming a job, or one
    nobody can read, moves no job's figures."""
    jobs = list(stats.deliveries)
    compute = dict(zip(jobs, apportion(duration_ms, [stats.deliveries[j] for j in jobs]), strict=True))
    return {
        job_id: Metering(
            compute_ms=compute[job_id],
            invocations=1,
            deliveries=n,
            delivered_bytes=stats.delivered_bytes[job_id],
            claim_checks=stats.claim_checks[job_id],
        )
        for job_id, n in stats.deliveries.items()
    }


def record_invocation_metering(
    loop: asyncio.AbstractEventLoop,
    store: ResultStore,
    stats: InvocationStats,
    context: Any,
    started: float,
) -> None:
    """Add this invocation (from ``started``, a ``time.monotonic()``) to its jobs' counters.

    Best effort and bounded by the function's timeout: the answers are already stored, and a
    lost record only makes an estimate a little low; it never fails the invocation.
    """
    duration_ms = math.ceil((time.monotonic() - started) * 1000)
    usage = invocation_metering(stats, duration_ms)
    budget_s = context.get_remaining_time_in_millis() / 1000 - HARD_STOP_MARGIN_S
    if not usage or budget_s <= 0:
        return
    try:
        loop.run_until_complete(asyncio.wait_for(store.add_metering(usage), budget_s))
    except Exception:
        log.warning("could not record the invocation's use of the stack", exc_info=True)
