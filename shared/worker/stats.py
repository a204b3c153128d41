"""What one invocation did, per endpoint and in total: the figures behind its metrics
(shared/observability.py) and its jobs' cost metering."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Where requests that name no endpoint this worker serves (a mistyped name, an invalid
#: message) are counted: one fixed key, so a job cannot add metric dimensions, and one no
#: endpoint can have (names start with a letter or digit, shared/endpoints/specs.py).
NO_ENDPOINT = "(none)"


@dataclass
class EndpointStats:
    """What an invocation did on one endpoint: its model calls and the requests naming it."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    duplicates: int = 0
    budget_exhausted: int = 0
    #: Records sent back as fresh copies without a call (shared/queue_ops.py): waiting for
    #: capacity is not an attempt.
    deferred: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    #: Calls held back by a rate limit (the global bucket or a Retry-After), and how long.
    rate_limited_calls: int = 0
    rate_limit_wait_s: float = 0.0
    #: 429s the endpoint answered.
    throttled: int = 0


@dataclass
class InvocationStats(EndpointStats):
    """The invocation's totals over all endpoints, each endpoint's own (``by_endpoint``), and
    what belongs to the container rather than to an endpoint."""

    #: Messages nobody can record (unreadable, or of an unknown job): the container's, not
    #: an endpoint's, as what they name cannot be trusted.
    dead_lettered: int = 0
    #: Seconds spent preparing, running the records, and writing what was left.
    phases_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Model calls allowed in flight when the invocation ended (moves when adaptive); one
    #: limiter serves every endpoint of the container.
    concurrency_limit: int = 0
    by_endpoint: dict[str, EndpointStats] = field(default_factory=dict)
    #: Per job: the messages taken as that job's (its own, by signature), their bytes, and
    #: how many came by claim check: what the job's cost estimate is metered from.
    deliveries: Counter[str] = field(default_factory=Counter)
    delivered_bytes: Counter[str] = field(default_factory=Counter)
    claim_checks: Counter[str] = field(default_factory=Counter)

    def delivered(self, job_id: str, body: str, *, claim_check: bool) -> None:
        self.deliveries[job_id] += 1
        self.delivered_bytes[job_id] += len(body.encode(errors="surrogatepass"))
        self.claim_checks[job_id] += int(claim_check)

    def counters(self, endpoint: str) -> tuple[EndpointStats, EndpointStats]:
        """The two places a count goes: these totals and ``endpoint``'s own."""
        return self, self.by_endpoint.setdefault(endpoint, EndpointStats())
