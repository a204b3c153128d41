"""The measuring half of the benchmark: the stack (moto + the simulator, both in processes of
their own), the job, the SQS-shaped events, and one timed run of one approach.

Handlers are invoked directly, one batch after another, as one Lambda container would run
them; SQS polling is left out so the figures are the handlers' and not the poller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import boto3

from llmbatch.bench.procs import MotoProcess, cpu_seconds
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import DEFAULT_TEMPLATE, REGION, LocalFunction, provision_stack
from llmbatch.local.runner import SimulatorProcess
from llmbatch.local.template import Resolver, load_template, parameter_values
from llmbatch.stats import percentile
from shared.jobs import JobMeta, new_job_id
from shared.messages import MESSAGE_VERSION, RequestMessage

if TYPE_CHECKING:
    from shared.worker.processor import Worker
    from shared.worker.stats import InvocationStats

#: The endpoint every scenario starts from: 32 slots, 200 ms a call (± 20 ms), no faults.
BASE_SIMULATOR: dict[str, Any] = {
    "slots": 32,
    "base_latency_s": 0.2,
    "per_prompt_token_s": 0.0,
    "per_output_token_s": 0.0,
    "jitter_s": 0.02,
    "rpm_limit": None,
    "tpm_limit": None,
    "error_rate_429": 0.0,
    "error_rate_5xx": 0.0,
    "hang_rate": 0.0,
    "slow_tail_rate": 0.0,
    "seed": 11,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    #: Changes to :data:`BASE_SIMULATOR`.
    simulator: Mapping[str, Any] = field(default_factory=dict)
    #: Changes to our worker's live limits (the limits parameter), as an operator would set them.
    limits: Mapping[str, Any] = field(default_factory=dict)

    def simulator_config(self, *, latency_s: float | None = None) -> dict[str, Any]:
        config = {**BASE_SIMULATOR, **self.simulator}
        if latency_s is not None:
            config["base_latency_s"] = latency_s
            config["jitter_s"] = min(config["jitter_s"], latency_s / 10)
        return config


#: The adaptive scenario's max_concurrency: four times the endpoint's slots.
ADAPTIVE_CEILING = 128

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("slots32", "32 slots, 200 ms per call"),
        # 32 slots at 200 ms serve 160 requests/s (9600 RPM); the limit allows a quarter of it.
        # The operator tells our worker the same limit (the baselines know of none).
        Scenario("rpm", "32 slots, 200 ms, RPM limit 2400 (1/4 of capacity)", {"rpm_limit": 2400}, {"rpm_limit": 2400}),
        Scenario("errors", "32 slots, 200 ms, 10% transient 5xx", {"error_rate_5xx": 0.1}),
        # Our worker may run 128 calls at once but is told nothing of the endpoint's 32 slots.
        Scenario(
            "adaptive",
            "32 slots, 200 ms; ours with adaptive concurrency up to 128",
            limits={"adaptive_concurrency": True, "max_concurrency": ADAPTIVE_CEILING},
        ),
    )
}


def template_batch_size() -> int:
    """The Worker's SQS BatchSize in template.yaml: the size of every event we invoke with."""
    return int(template_requests_setting("BatchSize"))


def template_requests_setting(name: str) -> Any:
    """A property of the Worker's event source mapping on the request queue in template.yaml
    (``BatchSize``, ``MaximumBatchingWindowInSeconds``), its parameters resolved."""
    template = load_template(DEFAULT_TEMPLATE)
    worker = template["Resources"]["Worker"]["Properties"]
    resolver = Resolver(template, parameter_values(template), {})
    return resolver.resolve(worker["Events"]["Requests"]["Properties"][name])


# ---- the job and its events ---------------------------------------------------------------


def job_messages(job_id: str, n: int, *, max_tokens: int = 24) -> list[RequestMessage]:
    """The benchmark's job: n chat completions (same lines for every approach, new job id)."""
    return [
        RequestMessage(
            v=MESSAGE_VERSION,
            job_id=job_id,
            custom_id=f"request-{i:05d}",
            line=i + 1,
            url="/v1/chat/completions",
            body={
                "model": "sim-model",
                "messages": [
                    {"role": "system", "content": "You are a concise poet."},
                    {"role": "user", "content": f"Write one line about the sea (#{i})."},
                ],
                "max_tokens": max_tokens,
            },
        )
        for i in range(n)
    ]


def build_events(messages: list[RequestMessage], batch_size: int, queue_arn: str) -> list[dict[str, Any]]:
    """SQS-shaped events of ``batch_size`` records, built as the local poller builds them."""
    now_ms = str(int(time.time() * 1000))
    attributes = {"SentTimestamp": now_ms, "SenderId": "bench", "ApproximateFirstReceiveTimestamp": now_ms}
    records = [
        sqs_record(
            {
                "MessageId": str(uuid.uuid4()),
                "ReceiptHandle": f"bench-{uuid.uuid4().hex}",
                "Body": m.encode(),
                "Attributes": attributes,
            },
            queue_arn,
        )
        for m in messages
    ]
    return [{"Records": records[i : i + batch_size]} for i in range(0, len(records), batch_size)]


# ---- outcomes -----------------------------------------------------------------------------


@dataclass
class BatchOutcome:
    """What one invocation did with its records."""

    succeeded: int = 0
    #: Stored as failed (permanent errors): done, not retried.
    failed: int = 0
    #: Returned to SQS in ``batchItemFailures``, to come back later.
    returned: int = 0
    #: Neither: duplicates skipped, messages dead-lettered (our worker only).
    other: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: Our worker's (prepare, run, finish) seconds per invocation (``InvocationStats.phases_s``).
    phases_s: list[tuple[float, float, float]] = field(default_factory=list)

    def add(self, o: BatchOutcome) -> None:
        self.succeeded += o.succeeded
        self.failed += o.failed
        self.returned += o.returned
        self.other += o.other
        self.latencies_ms.extend(o.latencies_ms)
        self.phases_s.extend(o.phases_s)


class Approach(Protocol):
    """One way of handling the job's events."""

    name: str

    def handle(self, event: dict[str, Any]) -> BatchOutcome: ...

    def aws_calls(self) -> dict[str, Counter[str]]:
        """AWS API calls made so far, by service and operation."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Invocation:
    """One event handled: by which container, when (``time.perf_counter()``), with what outcome."""

    container: int
    started: float
    ended: float
    outcome: BatchOutcome


@runtime_checkable
class ConcurrentApproach(Approach, Protocol):
    """One that runs the events itself, several at once (our worker in several container
    processes, as the event source mapping runs them)."""

    #: Invocations that may run at once.
    containers: int

    def handle_all(self, events: list[dict[str, Any]]) -> list[Invocation]:
        """Every event handled, in the order they ended."""
        ...

    def cpu_s(self) -> float:
        """CPU seconds of the processes that handle the events, so far."""
        ...


@dataclass
class RunResult:
    approach: str
    scenario: str
    requests: int
    invocations: int
    outcome: BatchOutcome
    wall_s: float
    cpu_s: float
    moto_cpu_s: float | None
    sim: dict[str, Any]
    aws_calls: dict[str, dict[str, int]]
    #: Results found in the results table afterwards (read outside the timing).
    stored: int
    #: Model calls allowed in flight at the end (ours only: it moves when adaptive).
    concurrency_limit: int | None = None
    #: (answers stored, wall seconds) of each invocation, in order.
    invocation_figures: list[tuple[int, float]] = field(default_factory=list)
    #: Invocations that could run at once (1: one container, batches one after another).
    containers: int = 1
    #: (container, start s, end s) of each invocation, from the run's start.
    spans: list[tuple[int, float, float]] = field(default_factory=list)

    # -- figures --
    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def succeeded_per_s(self) -> float:
        return self.outcome.succeeded / self.wall_s if self.wall_s else 0.0

    @property
    def steady_succeeded_per_s(self) -> float:
        """Answers stored per second over every invocation but the first: the first pays
        the cold start (clients, the first limits read) and a new rate-limit bucket's start
        from empty, which a long-running deployment pays once. (One container only: the
        invocations of several overlap.)"""
        if self.containers > 1:
            return self.succeeded_per_s
        later = self.invocation_figures[1:]
        wall = sum(w for _, w in later)
        return sum(n for n, _ in later) / wall if wall else self.succeeded_per_s

    @property
    def tokens_per_s(self) -> float:
        tokens = int(self.sim.get("prompt_tokens", 0)) + int(self.sim.get("completion_tokens", 0))
        return tokens / self.wall_s if self.wall_s else 0.0

    @property
    def mean_ms(self) -> float:
        lat = self.outcome.latencies_ms
        return sum(lat) / len(lat) if lat else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.outcome.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.outcome.latencies_ms, 99)

    @property
    def error_rate(self) -> float:
        """Records not succeeded (returned for retry or stored as failed) per request."""
        return (self.outcome.returned + self.outcome.failed) / self.requests if self.requests else 0.0

    @property
    def utilisation(self) -> float:
        slots = int(self.sim.get("slots", 0))
        return float(self.sim.get("busy_slot_seconds", 0.0)) / (slots * self.wall_s) if slots and self.wall_s else 0.0

    @property
    def endpoint_calls(self) -> int:
        return int(self.sim.get("requests_total", 0))

    @property
    def rate_limited_429(self) -> int:
        return int(self.sim.get("rate_limited_429", 0))

    def calls_per_request(self, service: str | None = None) -> float:
        services = [service] if service else list(self.aws_calls)
        total = sum(sum(self.aws_calls.get(s, {}).values()) for s in services)
        return total / self.requests if self.requests else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def moto_cpu_ms_per_request(self) -> float | None:
        return None if self.moto_cpu_s is None or not self.requests else self.moto_cpu_s * 1000 / self.requests

    @property
    def accounted(self) -> int:
        o = self.outcome
        return o.succeeded + o.failed + o.returned + o.other

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "approach": self.approach,
            "scenario": self.scenario,
            "requests": self.requests,
            "invocations": self.invocations,
            "succeeded": o.succeeded,
            "failed": o.failed,
            "returned_for_retry": o.returned,
            "other": o.other,
            "accounted": self.accounted,
            "stored": self.stored,
            "wall_s": self.wall_s,
            "requests_per_s": self.requests_per_s,
            "succeeded_per_s": self.succeeded_per_s,
            "steady_succeeded_per_s": self.steady_succeeded_per_s,
            "tokens_per_s": self.tokens_per_s,
            "latency_ms": {"mean": self.mean_ms, "p50": self.p50_ms, "p99": self.p99_ms},
            "error_rate": self.error_rate,
            "utilisation": self.utilisation,
            "endpoint_calls": self.endpoint_calls,
            "rate_limited_429": self.rate_limited_429,
            "endpoint_max_queued": int(self.sim.get("max_queued", 0)),
            "concurrency_limit": self.concurrency_limit,
            "injected_5xx": int(self.sim.get("injected_5xx", 0)),
            "aws_calls": self.aws_calls,
            "aws_calls_per_request": {s: self.calls_per_request(s) for s in self.aws_calls},
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "moto_cpu_ms_per_request": self.moto_cpu_ms_per_request,
            "containers": self.containers,
            "phases_s": [list(p) for p in self.outcome.phases_s],
            "invocation_spans_s": [list(span) for span in self.spans],
        }


# ---- the stack ----------------------------------------------------------------------------


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class BenchStack:
    """moto (own process), the simulator (own process) and the template's resources.

    While started, this process's environment points AWS SDKs at moto (as a Lambda
    container's would point at AWS); it is restored on stop.
    """

    def __init__(self, *, concurrency: int, stack_name: str = "llmbatch-bench", faithful_moto: bool = False) -> None:
        self.concurrency = concurrency
        self.stack_name = stack_name
        self.moto = MotoProcess(faithful=faithful_moto)
        self.simulator = SimulatorProcess(BASE_SIMULATOR)
        self.sim_url = ""
        self.aws_url = ""
        self._saved_env: dict[str, str | None] = {}
        self.worker: LocalFunction | None = None
        self.batch_size = template_batch_size()

    def start(self) -> BenchStack:
        try:
            self.aws_url = self.moto.start()
            self.sim_url = self.simulator.start()
            for k, v in {**_AWS_ENV, "AWS_ENDPOINT_URL": self.aws_url}.items():
                self._saved_env[k] = os.environ.get(k)
                os.environ[k] = v
            provisioned = provision_stack(
                self.aws_url,
                stack_name=self.stack_name,
                parameter_overrides={"EndpointUrl": self.sim_url, "ModelCallConcurrency": str(self.concurrency)},
                model_endpoint_url=self.sim_url,
            )
        except BaseException:
            self.stop()
            raise
        self.worker = provisioned.functions["Worker"]
        self.resources = provisioned.resources
        self._ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=self.aws_url)
        return self

    def stop(self) -> None:
        self.simulator.stop()
        self.moto.stop()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()

    def __enter__(self) -> BenchStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- facts --
    @property
    def worker_env(self) -> dict[str, str]:
        assert self.worker is not None
        return dict(self.worker.environment)

    @property
    def results_table(self) -> str:
        return self.worker_env["RESULTS_TABLE"]

    @property
    def queue_arn(self) -> str:
        assert self.worker is not None and self.worker.event_sources
        return self.worker.event_sources[0].queue_arn

    # -- the simulator --
    def _sim_post(self, path: str, body: Mapping[str, Any]) -> None:
        req = urllib.request.Request(
            self.sim_url.removesuffix("/v1") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).close()

    def sim_prepare(self, config: Mapping[str, Any]) -> None:
        """Configure and reset the simulator. A rate limit starts with an empty bucket
        (steady state, not the full minute's burst a fresh bucket allows): configured at 1,
        reset, then raised, since a changed limit keeps the level it had."""
        rpm = config.get("rpm_limit")
        self._sim_post("/_sim/config", {**config, "rpm_limit": 1 if rpm else None})
        self._sim_post("/_sim/reset", {})
        if rpm:
            self._sim_post("/_sim/config", {"rpm_limit": rpm})

    def set_limits(self, changes: Mapping[str, Any]) -> None:
        """Write our worker's live limits (the stack's defaults plus ``changes``) to the
        limits parameter, and drop Powertools' cached copy so the next invocation reads them."""
        from aws_lambda_powertools.utilities.parameters import clear_caches

        from shared.config import RuntimeLimits

        limits = RuntimeLimits(max_concurrency=self.concurrency).with_changes(**changes)
        boto3.client("ssm", region_name=REGION, endpoint_url=self.aws_url).put_parameter(
            Name=self.worker_env["LIMITS_PARAMETER"], Value=limits.to_json(), Type="String", Overwrite=True
        )
        clear_caches()

    def sim_stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.sim_url.removesuffix("/v1") + "/_sim/stats", timeout=10) as resp:
            stats = dict(json.load(resp))
        stats.pop("calls_by_custom_id", None)
        return stats

    # -- DynamoDB --
    def new_job(self, n: int) -> str:
        """A job record, created through :meth:`ResultStore.create_job`."""
        from aiobotocore.session import get_session

        from shared.store.result_store import ResultStore

        env = self.worker_env
        job_id = new_job_id()

        async def create() -> None:
            async with get_session().create_client("dynamodb") as ddb:
                store = ResultStore(ddb, jobs_table=env["JOBS_TABLE"], results_table=env["RESULTS_TABLE"])
                await store.create_job(JobMeta(job_id=job_id, total=n, name="bench", sealed=True, enqueued=n))

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(create())
        finally:
            loop.close()
        return job_id

    def count_stored(self, job_id: str) -> int:
        kwargs: dict[str, Any] = {
            "TableName": self.results_table,
            "KeyConditionExpression": "job_id = :j",
            "ExpressionAttributeValues": {":j": {"S": job_id}},
            "Select": "COUNT",
        }
        total = 0
        while True:
            resp = self._ddb.query(**kwargs)
            total += int(resp.get("Count", 0))
            if "LastEvaluatedKey" not in resp:
                return total
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def clear_tables(self) -> None:
        """Delete every item of both tables (between runs, outside the timing), so each run
        starts on empty tables: moto's transactions copy whole tables, so a table left to
        grow would make later runs dearer than earlier ones."""
        env = self.worker_env
        for table, keys in ((env["JOBS_TABLE"], ("job_id", "item")), (env["RESULTS_TABLE"], ("job_id", "custom_id"))):
            kwargs: dict[str, Any] = {
                "TableName": table,
                "ProjectionExpression": "#a, #b",
                "ExpressionAttributeNames": {"#a": keys[0], "#b": keys[1]},
            }
            while True:
                resp = self._ddb.scan(**kwargs)
                items = resp.get("Items", [])
                for i in range(0, len(items), 25):
                    self._ddb.batch_write_item(
                        RequestItems={table: [{"DeleteRequest": {"Key": k}} for k in items[i : i + 25]]}
                    )
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def moto_cpu_s(self) -> float | None:
        pid = self.moto.pid
        return cpu_seconds(pid) if pid else None


# ---- counting the SDK calls nobody else counts --------------------------------------------


@contextlib.contextmanager
def counting_sync_calls(into: dict[str, Counter[str]]) -> Iterator[None]:
    """Count every synchronous botocore call made while active (aiobotocore's clients
    override ``_make_api_call`` and are not seen). Used for the worker's limits read
    (Powertools parameters, boto3), which neither ``store.calls`` nor ``queue.calls`` sees."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        into.setdefault(self.meta.service_model.service_name, Counter())[operation_name] += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted  # type: ignore[attr-defined]
    try:
        yield
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]


# ---- our worker -----------------------------------------------------------------------------


def worker_outcome(st: InvocationStats, response: Mapping[str, Any]) -> BatchOutcome:
    """What one invocation of our worker did, from its stats and its partial batch response."""
    return BatchOutcome(
        succeeded=st.succeeded,
        failed=st.failed,
        returned=len(response.get("batchItemFailures", [])),
        other=st.duplicates + st.dead_lettered,
        latencies_ms=[float(x) for x in st.latencies_ms],
        phases_s=[st.phases_s],
    )


def worker_aws_calls(worker: Worker, sync_calls: Mapping[str, Counter[str]]) -> dict[str, Counter[str]]:
    """Our worker's AWS calls by service: its store's and queue's, the rate-limit bucket's
    and the synchronous boto3 calls of its live-limits read (``counting_sync_calls``)."""
    calls: dict[str, Counter[str]] = {"dynamodb": Counter(worker.store.calls)}
    if worker.throttle.bucket is not None:  # the global rate-limit bucket's reads and writes
        calls["dynamodb"].update(worker.throttle.bucket.calls)
    calls["sqs"] = Counter(worker.queue.calls) if worker.queue else Counter()
    for service, ops in sync_calls.items():
        calls.setdefault(service, Counter()).update(ops)
    return calls


class OursApproach:
    """Our worker: ``Container.create`` with the Worker function's environment, invoked
    with a fresh Lambda context per batch, as the poller's container process does."""

    name = "ours"

    def __init__(self, stack: BenchStack) -> None:
        from shared.config import WorkerConfig
        from shared.container import Container

        assert stack.worker is not None
        self._function = stack.worker
        self._sync_calls: dict[str, Counter[str]] = {}
        with counting_sync_calls(self._sync_calls):
            self.container = Container.create(WorkerConfig.from_env(stack.worker_env))
        self._sync_calls.clear()  # setup is not part of the run
        self.concurrency_limit: int | None = None

    def handle(self, event: dict[str, Any]) -> BatchOutcome:
        from llmbatch.local.lambda_runtime import FakeLambdaContext

        fn = self._function
        ctx = FakeLambdaContext(fn.name, fn.memory_mb, fn.timeout_s)
        with counting_sync_calls(self._sync_calls):
            response = self.container.handle(event, ctx)
        st = self.container.worker.last_stats
        self.concurrency_limit = st.concurrency_limit
        return worker_outcome(st, response)

    def aws_calls(self) -> dict[str, Counter[str]]:
        return worker_aws_calls(self.container.worker, self._sync_calls)

    def close(self) -> None:
        self.container.close()


# ---- one run ------------------------------------------------------------------------------


def run_approach(
    stack: BenchStack,
    scenario: Scenario,
    make_approach: Callable[[BenchStack], Approach],
    requests: int,
    *,
    latency_s: float | None = None,
) -> RunResult:
    """One approach on a new job of ``requests`` lines, on empty tables, then closed."""
    stack.clear_tables()
    job_id = stack.new_job(requests)
    events = build_events(job_messages(job_id, requests), stack.batch_size, stack.queue_arn)
    approach = make_approach(stack)
    try:
        return measure(
            stack, scenario, approach, events, job_id, sim_config=scenario.simulator_config(latency_s=latency_s)
        )
    finally:
        approach.close()


def measure(
    stack: BenchStack,
    scenario: Scenario,
    approach: Approach,
    events: list[dict[str, Any]],
    job_id: str,
    *,
    sim_config: Mapping[str, Any],
) -> RunResult:
    """Reset the simulator, run every event through ``approach`` one after another, and
    collect the figures. Only the handling is timed."""
    requests = sum(len(e["Records"]) for e in events)
    stack.set_limits(scenario.limits)
    stack.sim_prepare(sim_config)
    total = BatchOutcome()
    # The handlers' CPU: this process's, or that of the processes running them.
    handler_cpu = approach.cpu_s if isinstance(approach, ConcurrentApproach) else time.process_time
    moto0 = stack.moto_cpu_s()
    cpu0 = handler_cpu()
    t0 = time.perf_counter()
    if isinstance(approach, ConcurrentApproach):
        invocations = approach.handle_all(events)
    else:
        invocations = []
        for event in events:
            started = time.perf_counter()
            outcome = approach.handle(event)
            invocations.append(Invocation(0, started, time.perf_counter(), outcome))
    wall = time.perf_counter() - t0
    for inv in invocations:
        total.add(inv.outcome)
    cpu = handler_cpu() - cpu0
    moto1 = stack.moto_cpu_s()
    sim = stack.sim_stats()
    calls = {s: dict(ops) for s, ops in approach.aws_calls().items()}
    return RunResult(
        approach=approach.name,
        scenario=scenario.name,
        requests=requests,
        invocations=len(events),
        outcome=total,
        wall_s=wall,
        cpu_s=cpu,
        moto_cpu_s=None if moto0 is None or moto1 is None else moto1 - moto0,
        sim=sim,
        aws_calls=calls,
        stored=stack.count_stored(job_id),
        concurrency_limit=getattr(approach, "concurrency_limit", None),
        invocation_figures=[(inv.outcome.succeeded, inv.ended - inv.started) for inv in invocations],
        spans=[(inv.container, inv.started - t0, inv.ended - t0) for inv in invocations],
        containers=approach.containers if isinstance(approach, ConcurrentApproach) else 1,
    )
