"""Failover and routing by model (the online lane): which endpoint a request is sent to now.

Both decisions are pure: no I/O, and the clock is injected.

* **Routing by model.** The ``models`` map of a job's endpoint sends a request whose body
  names one of those models to the endpoint it maps to: one job file may mix models that
  different endpoints serve. Only the job's own endpoint's map is read, once (a map's
  target's map is not followed).
* **Failover.** An endpoint's ``fallback`` list names the endpoints its requests go to, in
  order, while its calls fail transiently. Its *chain* is itself, then its fallbacks, then
  their fallbacks (breadth first, each endpoint once). A request goes to the first endpoint
  of its chain whose circuit lets it through and that can serve it
  (:meth:`~shared.endpoints.specs._Spec.refusal`); when none does, to the first, as without
  failover: the call then fails or not, and a transient failure goes back through SQS using
  an attempt, as any would (README, "Delivery guarantees"). The body is sent unchanged.
  Two rules spare a request's attempts: a retried request is never a half-open circuit's
  probe, and a request's last attempt goes to the first fallback that takes it.

Each endpoint that is part of a chain has one :class:`CircuitBreaker` per container,
judging the outcomes of that container's calls to it (:func:`classify`):

* *closed*: calls go through; the last ``window_calls`` outcomes (none older than
  ``window_s``) are kept, and when at least ``min_calls`` of them are there and the share
  of failures reaches ``failure_share``, the circuit opens. A 429 whose Retry-After the
  invocation's deadline cannot wait out opens it at once, for at least that long: the
  endpoint itself says it will take no calls for longer than a request can wait.
* *open*: no calls, for the cool-down (``cooldown_s``, doubled by each failed probe up to
  ``max_cooldown_s``); the requests go to the next endpoint of their chain.
* *half-open*: after the cool-down, up to ``probes`` requests at once are let through. A
  success closes the circuit (its requests come back to it), a failure opens it again.

Permanent failures (4xx other than 408/409/429) and calls cut by the invocation's own
deadline count neither way: they say nothing about the endpoint's health.

Names here are endpoint names (:mod:`shared.endpoints.specs`); the worker
(:mod:`shared.worker.batch_run`) asks :meth:`Failover.choose` before each request's call,
tells :meth:`Failover.observe` each call's outcome, and :meth:`Failover.release` when the
request is done.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.endpoints.specs import EndpointSpec
from shared.errors import (
    BudgetExhaustedError,
    ConfigError,
    EndpointConnectionError,
    EndpointTimeoutError,
    TransientError,
)

Clock = Callable[[], float]

#: Statuses of transient answers that say the endpoint is unwell (a 408 is the server's own
#: timeout); a 409 is about the request, a 429 is judged by its Retry-After.
_UNWELL_BELOW_500: Final = frozenset({408})
_THROTTLED: Final = 429


@dataclass(frozen=True)
class BreakerSettings:
    """When a circuit opens and how it comes back. Defaults as Hystrix's and Polly's (a
    5 s sleep window, half the calls failing), with a cool-down that doubles, as Envoy's
    outlier ejection does, so a long outage is probed less and less often."""

    #: Outcomes kept (the most recent).
    window_calls: int = 20
    #: Outcomes older than this are forgotten.
    window_s: float = 60.0
    #: Fewest outcomes in the window before the circuit may open.
    min_calls: int = 5
    #: Share of failures in the window that opens the circuit.
    failure_share: float = 0.5
    #: How long the circuit stays open before a probe.
    cooldown_s: float = 5.0
    #: Longest cool-down, however many probes failed in a row.
    max_cooldown_s: float = 60.0
    #: Requests let through at once while half-open.
    probes: int = 1

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least {low}"
            for name, low in (("window_calls", 1), ("min_calls", 1), ("probes", 1))
            if getattr(self, name) < low
        ]
        if not 0 < self.failure_share <= 1:
            problems.append("failure_share must be above 0 and at most 1")
        if not (self.window_s > 0 and 0 < self.cooldown_s <= self.max_cooldown_s):
            problems.append("window_s and cooldown_s must be above 0, cooldown_s at most max_cooldown_s")
        if self.min_calls > self.window_calls:
            problems.append("min_calls must be at most window_calls")
        if problems:
            raise ConfigError(f"failover settings: {'; '.join(problems)}")


DEFAULT_SETTINGS: Final = BreakerSettings()


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(enum.Enum):
    """What a circuit says to one more request."""

    REFUSED = enum.auto()
    ADMITTED = enum.auto()
    #: Admitted as a half-open circuit's probe: :meth:`CircuitBreaker.end_probe` when done.
    PROBE = enum.auto()


class Outcome(enum.Enum):
    SUCCESS = enum.auto()
    FAILURE = enum.auto()
    #: Says nothing of the endpoint's health (a permanent failure, the deadline, a 429 to wait out).
    NEUTRAL = enum.auto()


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    #: Open the circuit at once for at least this long (a Retry-After the deadline cannot wait out).
    hold_s: float = 0.0


def classify(error: BaseException | None, *, wait_budget_s: float) -> Verdict:
    """What one call's outcome says of its endpoint. ``error`` is what the call raised (None:
    it answered 2xx); ``wait_budget_s`` is how long a request could still wait for the
    endpoint (the invocation's deadline less the shortest call)."""
    if error is None:
        return Verdict(Outcome.SUCCESS)
    if isinstance(error, BudgetExhaustedError) or not isinstance(error, TransientError):
        return Verdict(Outcome.NEUTRAL)
    if isinstance(error, EndpointTimeoutError | EndpointConnectionError):
        return Verdict(Outcome.FAILURE)
    status = error.status_code
    if status == _THROTTLED:
        retry_after = error.retry_after_s
        if retry_after is None:  # no word on when it will take calls again: a failure like a 5xx
            return Verdict(Outcome.FAILURE)
        if retry_after > max(0.0, wait_budget_s):
            return Verdict(Outcome.FAILURE, hold_s=retry_after)
        return Verdict(Outcome.NEUTRAL)  # the throttle waits it out (shared/limits/throttle.py)
    if status is not None and (status >= 500 or status in _UNWELL_BELOW_500):
        return Verdict(Outcome.FAILURE)
    return Verdict(Outcome.NEUTRAL)


class CircuitBreaker:
    """One endpoint's health in one container (see the module docstring)."""

    def __init__(self, settings: BreakerSettings = DEFAULT_SETTINGS, *, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        #: (when, failed) of the recent outcomes, while closed.
        self._window: deque[tuple[float, bool]] = deque(maxlen=settings.window_calls)
        #: None while closed; else open until then, half-open after.
        self._open_until: float | None = None
        #: Openings since the circuit last closed: each doubles the next cool-down.
        self._trips = 0
        self._probing = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.state.value}, trips={self._trips}, window={len(self._window)})"

    @property
    def state(self) -> State:
        if self._open_until is None:
            return State.CLOSED
        return State.OPEN if self._clock() < self._open_until else State.HALF_OPEN

    def open_for_s(self) -> float:
        """Time left before a probe may go (0 when closed or half-open)."""
        return 0.0 if self._open_until is None else max(0.0, self._open_until - self._clock())

    def admit(self, *, may_probe: bool = True) -> Admission:
        """Whether one more request may go; ``may_probe`` False: not as a half-open probe."""
        state = self.state
        if state is State.CLOSED:
            return Admission.ADMITTED
        if state is State.HALF_OPEN and may_probe and self._probing < self.settings.probes:
            self._probing += 1
            return Admission.PROBE
        return Admission.REFUSED

    def end_probe(self) -> None:
        """A request admitted as a probe is done (called or not)."""
        self._probing = max(0, self._probing - 1)

    def record(self, verdict: Verdict) -> None:
        if verdict.outcome is Outcome.SUCCESS:
            self._succeeded()
        elif verdict.outcome is Outcome.FAILURE:
            self._failed(verdict.hold_s)

    def _succeeded(self) -> None:
        state = self.state
        if state is State.HALF_OPEN:
            self._open_until = None
            self._trips = 0
            self._window.clear()
        elif state is State.CLOSED:
            self._window.append((self._clock(), False))
        # Open: a call that began before it opened proves nothing yet; the probe will.

    def _failed(self, hold_s: float) -> None:
        state = self.state
        if state is State.OPEN:
            if hold_s > 0 and self._open_until is not None:
                self._open_until = max(self._open_until, self._clock() + hold_s)
            return
        if state is State.HALF_OPEN or hold_s > 0:
            self._trip(hold_s)
            return
        now = self._clock()
        self._window.append((now, True))
        while self._window and self._window[0][0] <= now - self.settings.window_s:
            self._window.popleft()
        calls, failures = len(self._window), sum(failed for _, failed in self._window)
        if calls >= self.settings.min_calls and failures >= self.settings.failure_share * calls:
            self._trip(0.0)

    def _trip(self, at_least_s: float) -> None:
        s = self.settings
        cooldown = min(s.max_cooldown_s, s.cooldown_s * 2 ** min(self._trips, 32))
        self._open_until = self._clock() + max(cooldown, at_least_s)
        self._trips += 1
        self._window.clear()


@dataclass(frozen=True)
class Choice:
    """Where one request goes now."""

    endpoint: str
    #: It is the probe of ``endpoint``'s half-open circuit: :meth:`Failover.release` when done.
    probe: bool = False


class Failover:
    """Container-scoped: the routing of a worker's requests, and the health of the
    endpoints they may fail over between.

    Raises
    ------
    ConfigError
        When the endpoints' ``fallback`` or ``models`` settings are inconsistent
        (:func:`check_routing`).
    """

    def __init__(
        self,
        specs: Mapping[str, EndpointSpec],
        *,
        settings: BreakerSettings = DEFAULT_SETTINGS,
        clock: Clock = time.monotonic,
    ) -> None:
        check_routing(specs)
        self._specs = dict(specs)
        self._settings = settings
        self._clock = clock
        self._chains = {name: fallback_chain(specs, name) for name in specs}
        #: The endpoints whose health matters: those in a chain of more than one.
        self._guarded = frozenset(n for chain in self._chains.values() if len(chain) > 1 for n in chain)
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(self._settings, clock=self._clock)
        return breaker

    def choose(
        self, endpoint: str, route: str, body: Mapping[str, Any], *, retry: bool = False, last: bool = False
    ) -> Choice:
        """Where a request of a job on ``endpoint``, for ``route`` with ``body``, goes now.

        ``retry``: the request was called before (this is not its first attempt); such a
        request is never a probe, which would spend another of its attempts on an endpoint
        that was failing. ``last``: this is its last attempt, which goes to the first
        fallback that takes it, if any does, rather than to the primary again. Without
        these two, a request retried in a quiet spell (each container judging few calls)
        could spend every attempt on a failing primary while its fallback is healthy.
        """
        primary = routed_endpoint(self._specs, endpoint, body)
        chain = self._chains.get(primary, ())
        if len(chain) <= 1:
            return Choice(primary)
        for name in (*chain[1:], primary) if last else chain:
            # The primary is the job's choice (submit checked the job against it); a fallback
            # that cannot serve this request is skipped.
            if name != primary and self._specs[name].refusal(name, route, body) is not None:
                continue
            admission = self.breaker(name).admit(may_probe=not retry)
            if admission is not Admission.REFUSED:
                return Choice(name, probe=admission is Admission.PROBE)
        return Choice(primary)

    def release(self, choice: Choice) -> None:
        """The request ``choice`` was made for is done with it, whether it was called or not."""
        if choice.probe:
            self.breaker(choice.endpoint).end_probe()

    def observe(self, endpoint: str, error: BaseException | None, *, wait_budget_s: float) -> None:
        """One call to ``endpoint`` ended: answered (``error`` None) or raised ``error``."""
        if endpoint in self._guarded:
            self.breaker(endpoint).record(classify(error, wait_budget_s=wait_budget_s))

    def states(self) -> dict[str, State]:
        """The state of every endpoint that has been judged, by name."""
        return {name: b.state for name, b in self._breakers.items()}


def routed_endpoint(specs: Mapping[str, EndpointSpec], endpoint: str, body: Mapping[str, Any]) -> str:
    """The endpoint a request of a job on ``endpoint`` is for: the one its ``models`` map
    names for the body's model, else ``endpoint`` itself."""
    spec = specs.get(endpoint)
    if spec is None or not spec.models:
        return endpoint
    model = body.get("model") if isinstance(body, Mapping) else None
    return spec.models.get(model, endpoint) if isinstance(model, str) else endpoint


def routed_refusal(specs: Mapping[str, EndpointSpec], endpoint: str, route: str, body: Mapping[str, Any]) -> str | None:
    """Why a request of a job on ``endpoint`` will surely fail, or None: judged by the
    endpoint the ``models`` map routes it to, as ``submit`` checks each line. Fallbacks are
    not judged: one that cannot serve a request is skipped for it."""
    target = routed_endpoint(specs, endpoint, body)
    spec = specs.get(target)
    return None if spec is None else spec.refusal(target, route, body)


def fallback_chain(specs: Mapping[str, EndpointSpec], endpoint: str) -> tuple[str, ...]:
    """``endpoint``, then its fallbacks, then theirs (breadth first), each once."""
    chain = [endpoint]
    for name in chain:  # grows while it is walked
        for nxt in specs[name].fallback if name in specs else ():
            if nxt not in chain:
                chain.append(nxt)
    return tuple(chain)


def check_routing(specs: Mapping[str, EndpointSpec], *, variable: str = "ENDPOINTS") -> None:
    """Refuse ``fallback`` and ``models`` entries naming no configured endpoint, and
    fallbacks that loop back (an endpoint falling back, at any depth, to itself).

    Raises
    ------
    ConfigError
        Naming the endpoint and the entry at fault.
    """
    configured = ", ".join(sorted(specs)) or "none"
    for name, spec in specs.items():
        for target, entry in [*((f, "fallback") for f in spec.fallback), *_model_entries(spec.models)]:
            if target not in specs:
                raise ConfigError(
                    f"{variable}: endpoint {name!r}: {entry} {target!r} is not a configured endpoint "
                    f"(the endpoints: {configured})"
                )
    loop = _fallback_loop(specs)
    if loop:
        raise ConfigError(f"{variable}: the fallbacks loop: {' -> '.join(loop)}")


def _model_entries(models: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(target, f"models entry {model!r} ->") for model, target in models.items()]


def _fallback_loop(specs: Mapping[str, EndpointSpec]) -> list[str]:
    """A path of fallbacks from an endpoint back to itself, or []."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return []
        for nxt in specs[name].fallback:
            loop = visit(nxt, [*path, name])
            if loop:
                return loop
        done.add(name)
        return []

    for name in specs:
        loop = visit(name, [])
        if loop:
            return loop
    return []


__all__ = [
    "DEFAULT_SETTINGS",
    "Admission",
    "BreakerSettings",
    "Choice",
    "CircuitBreaker",
    "Failover",
    "Outcome",
    "State",
    "Verdict",
    "check_routing",
    "classify",
    "fallback_chain",
    "routed_endpoint",
    "routed_refusal",
]
