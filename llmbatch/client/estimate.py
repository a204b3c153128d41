"""What a job file will use, cost and take before it is submitted (``submit --dry-run``).

Tokens are the workers' own estimate (:func:`shared.limits.rate_math.estimate_tokens`: prompt
characters / 4, the simulator's and OpenAI's rule of thumb, plus each request's output cap,
or ``DEFAULT_MAX_TOKENS`` where it names none): an upper bound for the output, since a model
may stop before its cap. The cost is :func:`llmbatch.client.cost.estimate_cost` applied to
the job as it would stand when finished (every request delivered once, answered, its result
written), so there is one cost model for planned and finished jobs alike. The duration is
the slowest of what the live limits allow: waves of calls (worker invocations at once x
model calls per invocation, each wave one typical latency), the RPM limit and the TPM limit,
plus each round of invocations' own work (``INVOCATION_OVERHEAD_S``, assumed).

Pure arithmetic: the client gathers the inputs (:meth:`LlmbatchClient.estimate`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from llmbatch.client.cost import CostEstimate, Pricing, estimate_cost
from llmbatch.client.jobfile import JobFile
from shared.jobs import Counts, JobMeta, JobStatus, Metering, new_job_id
from shared.limits.rate_math import CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS, RateLimits, estimate_tokens
from shared.messages import RequestMessage, new_sign_key
from shared.store.terminal_writes import COUNTER_ITEM_KB, RESULTS_MAX_PER_WRITE, TRANSACTION_WRITE_UNITS_PER_KB

#: The model-call latency assumed while no answered job of the endpoint tells a better one.
ASSUMED_LATENCY_S = 1.0
#: Answers of the endpoint's latest job read for its typical latency.
LATENCY_SAMPLE = 100
#: A result item's bytes besides its answer's generated text (ids, status, usage, the
#: answer's JSON envelope): an assumption, about what the simulator's answers take.
RESULT_ITEM_OVERHEAD_BYTES = 768
#: Worker time an invocation spends besides its model calls (reading its jobs and results
#: before the calls, writing the last transaction after): an assumption, about what the
#: local stack's invocations take.
INVOCATION_OVERHEAD_S = 0.5
SECONDS_PER_MINUTE = 60


@dataclass(frozen=True)
class LiveLimits:
    """The limits the job would run under, as they are now."""

    #: Worker invocations at once (the event source mapping's MaximumConcurrency).
    workers: int
    #: Model calls in flight per invocation (the limits parameter's max_concurrency).
    calls_per_worker: int
    #: Requests per invocation (the event source mapping's BatchSize).
    batch_size: int
    #: RPM and TPM in force at the job's endpoint (its own, else the live ones).
    rate: RateLimits


@dataclass(frozen=True)
class Latency:
    """A typical model call's latency, and where the figure comes from."""

    seconds: float
    source: str


@dataclass(frozen=True)
class TokenTotals:
    """What the job's requests ask for, summed."""

    requests: int
    prompt: int
    #: Output caps (an upper bound of the output), DEFAULT_MAX_TOKENS for requests naming none.
    output: int
    #: Requests naming no output cap.
    uncapped: int
    #: The requests' messages, as submit would send them.
    message_bytes: int
    #: Messages too big for the queue, sent by the claim check.
    claim_checks: int
    #: DynamoDB KB of the results, as the worker meters their writes.
    result_kb: int

    @property
    def total(self) -> int:
        return self.prompt + self.output


@dataclass(frozen=True)
class Duration:
    seconds: float
    #: What decides it: ``concurrency``, ``rpm`` or ``tpm``.
    bound: str
    invocations: int
    #: Invocations running at once.
    active_workers: int


@dataclass(frozen=True)
class JobEstimate:
    """Tokens, cost and duration of a job file on an endpoint, before it is submitted."""

    path: str
    endpoint: str
    tokens: TokenTotals
    cost: CostEstimate
    duration: Duration
    limits: LiveLimits
    latency: Latency

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "endpoint": self.endpoint,
            "tokens": {**asdict(self.tokens), "total": self.tokens.total},
            "estimated_cost": self.cost.to_dict(),
            "duration": asdict(self.duration),
            "limits": {**asdict(self.limits), "rate": asdict(self.limits.rate)},
            "latency": asdict(self.latency),
        }

    def lines(self) -> list[str]:
        """The estimate as text; ``~`` marks figures that rest on an assumption."""
        t, d, lim = self.tokens, self.duration, self.limits
        uncapped = f", {t.uncapped} naming no max_tokens counted at {DEFAULT_MAX_TOKENS}" if t.uncapped else ""
        rate = ", ".join(
            f"{name} {value:,}" for name, value in (("rpm", lim.rate.rpm), ("tpm", lim.rate.tpm)) if value is not None
        )
        return [
            f"dry run of {self.path} on endpoint {self.endpoint!r}: valid, nothing enqueued, no job created",
            f"requests           {t.requests:,}",
            f"prompt_tokens      ~{t.prompt:,} (characters / {CHARS_PER_TOKEN})",
            f"max_output_tokens  {t.output:,} (the requests' max_tokens: an upper bound{uncapped})",
            f"expected_tokens    ~{t.total:,}",
            f"estimated_cost     ~{self.cost.summary()}",
            f"model_by_lane      ~{self.cost.lanes_line()}",
            f"expected_duration  ~{_seconds(d.seconds)} (bound by {d.bound}; {d.invocations} invocation(s),"
            f" {d.active_workers} at once)",
            f"live_limits        {lim.workers} worker(s) x {lim.calls_per_worker} call(s), batches of"
            f" {lim.batch_size}, {rate or 'no rate limit'}",
            f"typical_latency    {self.latency.seconds:.3f} s ({self.latency.source})",
        ]


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def count_tokens(job_file: JobFile, *, endpoint: str) -> TokenTotals:
    """The requests' tokens as the workers estimate them, and their messages' sizes."""
    job_id, sign_key = new_job_id(), new_sign_key()  # the sizes of real ones
    prompt = output = uncapped = message_bytes = claim_checks = result_kb = 0
    for n in job_file.lines:
        est = estimate_tokens(n.request.url, n.request.body)
        prompt += est.prompt
        cap = est.total - est.prompt
        output += cap
        uncapped += est.output_cap is None
        msg = RequestMessage.from_job_line(
            n.request, job_id=job_id, line_no=n.line_no, endpoint=endpoint, sign_key=sign_key
        )
        size = len(msg.encode().encode())
        message_bytes += size
        claim_checks += size > job_file.max_message_bytes
        result_kb += math.ceil((RESULT_ITEM_OVERHEAD_BYTES + cap * CHARS_PER_TOKEN) / 1024)
    return TokenTotals(job_file.total, prompt, output, uncapped, message_bytes, claim_checks, result_kb)


def expected_duration(tokens: TokenTotals, limits: LiveLimits, latency: Latency) -> Duration:
    """The slowest of: waves of calls at the live concurrency, the RPM limit, the TPM limit."""
    n = tokens.requests
    invocations = math.ceil(n / limits.batch_size)
    active = max(1, min(limits.workers, invocations))
    per_wave = active * min(limits.calls_per_worker, limits.batch_size)
    bounds = {"concurrency": math.ceil(n / per_wave) * latency.seconds}
    if limits.rate.rpm:
        bounds["rpm"] = n / limits.rate.rpm * SECONDS_PER_MINUTE
    if limits.rate.tpm:
        bounds["tpm"] = tokens.total / limits.rate.tpm * SECONDS_PER_MINUTE
    bound = max(bounds, key=lambda k: bounds[k])
    rounds = math.ceil(invocations / active)
    return Duration(bounds[bound] + rounds * INVOCATION_OVERHEAD_S, bound, invocations, active)


def planned_status(job_file: JobFile, *, endpoint: str, tokens: TokenTotals, duration: Duration) -> JobStatus:
    """The job as it would stand when finished, every request answered at the first try:
    what :func:`estimate_cost` prices a finished job from."""
    n = tokens.requests
    # Each invocation writes its results in transactions of up to RESULTS_MAX_PER_WRITE.
    transactions = max(duration.invocations, math.ceil(n / RESULTS_MAX_PER_WRITE))
    metering = Metering(
        # The invocations at once are busy for the whole duration.
        compute_ms=round(duration.seconds * duration.active_workers * 1000),
        invocations=duration.invocations,
        deliveries=n,
        delivered_bytes=tokens.message_bytes,
        claim_checks=tokens.claim_checks,
        write_units=TRANSACTION_WRITE_UNITS_PER_KB * (tokens.result_kb + transactions * COUNTER_ITEM_KB),
    )
    meta = JobMeta(job_id="dry-run", total=n, name=job_file.path.name, endpoint=endpoint, sealed=True, enqueued=n)
    counts = Counts(succeeded=n, prompt_tokens=tokens.prompt, completion_tokens=tokens.output)
    return JobStatus(meta, counts, metering)


def estimate_job(
    job_file: JobFile, *, endpoint: str, pricing: Pricing, limits: LiveLimits, latency: Latency
) -> JobEstimate:
    tokens = count_tokens(job_file, endpoint=endpoint)
    duration = expected_duration(tokens, limits, latency)
    cost = estimate_cost(planned_status(job_file, endpoint=endpoint, tokens=tokens, duration=duration), pricing)
    return JobEstimate(str(job_file.path), endpoint, tokens, cost, duration, limits, latency)


__all__ = [
    "ASSUMED_LATENCY_S",
    "LATENCY_SAMPLE",
    "Duration",
    "JobEstimate",
    "Latency",
    "LiveLimits",
    "TokenTotals",
    "count_tokens",
    "estimate_job",
    "expected_duration",
    "planned_status",
]
