"""Failover and routing by model, as pure logic (shared/endpoints/failover.py): what each
call's outcome says of its endpoint, the circuit breaker's states, where a request goes, and
the settings refused at worker start and at submit. The clock is a value the tests move."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.jobfile import read_job_file
from shared.endpoints.factory import EndpointFactory
from shared.endpoints.failover import (
    Admission,
    BreakerSettings,
    Choice,
    CircuitBreaker,
    Failover,
    Outcome,
    State,
    Verdict,
    check_routing,
    classify,
    fallback_chain,
    routed_endpoint,
    routed_refusal,
)
from shared.endpoints.specs import EndpointSpec, parse_endpoints
from shared.errors import (
    BudgetExhaustedError,
    ConfigError,
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    JobFileError,
    PermanentError,
    TransientError,
)

SETTINGS = BreakerSettings()  # the module's defaults: the tests read every figure from here
CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def specs(endpoints: dict[str, dict[str, Any]]) -> dict[str, EndpointSpec]:
    return parse_endpoints(json.dumps(endpoints))


def openai(n: int = 0, **settings: Any) -> dict[str, Any]:
    return {"kind": "openai", "url": f"http://127.0.0.1:{9000 + n}/v1", **settings}


def chat(model: str = "m") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


FAIL = Verdict(Outcome.FAILURE)
OK = Verdict(Outcome.SUCCESS)


# ---- what a call's outcome says -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "budget_s", "expected"),
    [
        (None, 0.0, OK),
        (EndpointTimeoutError("slow"), 10.0, FAIL),
        (EndpointConnectionError("refused"), 10.0, FAIL),
        (EndpointHTTPError("x", status_code=500), 10.0, FAIL),
        (EndpointHTTPError("x", status_code=503), 10.0, FAIL),
        (EndpointHTTPError("x", status_code=408), 10.0, FAIL),
        # a conflict is about the request, not the endpoint
        (EndpointHTTPError("x", status_code=409), 10.0, Verdict(Outcome.NEUTRAL)),
        # a 429 the deadline can wait out is the throttle's to handle
        (EndpointHTTPError("x", status_code=429, retry_after_s=2.0), 10.0, Verdict(Outcome.NEUTRAL)),
        (EndpointHTTPError("x", status_code=429, retry_after_s=10.0), 10.0, Verdict(Outcome.NEUTRAL)),
        # one it cannot opens the circuit for that long
        (EndpointHTTPError("x", status_code=429, retry_after_s=30.0), 10.0, Verdict(Outcome.FAILURE, 30.0)),
        (EndpointHTTPError("x", status_code=429, retry_after_s=0.5), -1.0, Verdict(Outcome.FAILURE, 0.5)),
        (EndpointHTTPError("x", status_code=429), 10.0, FAIL),
        # permanent failures and the invocation's own deadline say nothing of the endpoint
        (PermanentError("bad", status_code=400), 10.0, Verdict(Outcome.NEUTRAL)),
        (PermanentError("no key", status_code=401), 10.0, Verdict(Outcome.NEUTRAL)),
        (BudgetExhaustedError("deadline", code="budget_exhausted"), 10.0, Verdict(Outcome.NEUTRAL)),
        (TransientError("bucket slow", code="body_fetch"), 10.0, Verdict(Outcome.NEUTRAL)),
        (RuntimeError("bug"), 10.0, Verdict(Outcome.NEUTRAL)),
    ],
)
def test_each_outcome_is_judged_for_the_endpoint(
    error: BaseException | None, budget_s: float, expected: Verdict
) -> None:
    assert classify(error, wait_budget_s=budget_s) == expected


# ---- the circuit breaker ------------------------------------------------------------------


def breaker(clock: Clock, **settings: Any) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings) if settings else SETTINGS, clock=clock)


def test_failures_below_the_minimum_of_calls_keep_the_circuit_closed() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(SETTINGS.min_calls - 1):
        b.record(FAIL)
    assert b.state is State.CLOSED and b.admit() is Admission.ADMITTED
    b.record(FAIL)
    assert b.state is State.OPEN and b.admit() is Admission.REFUSED


def test_the_circuit_opens_when_the_share_of_failures_reaches_the_threshold() -> None:
    clock = Clock()
    b = breaker(clock, window_calls=10, min_calls=4, failure_share=0.5)
    for _ in range(3):
        b.record(OK)
    for _ in range(2):
        b.record(FAIL)
    assert b.state is State.CLOSED  # 2 of 5
    b.record(FAIL)
    assert b.state is State.OPEN  # 3 of 6


def test_the_window_keeps_only_the_latest_calls() -> None:
    clock = Clock()
    b = breaker(clock, window_calls=10, min_calls=4, failure_share=0.5)
    for _ in range(10):
        b.record(OK)
    for _ in range(4):
        b.record(FAIL)
    assert b.state is State.CLOSED  # 4 of the last 10
    b.record(FAIL)
    assert b.state is State.OPEN  # 5 of the last 10: the first successes have left the window


def test_old_failures_are_forgotten() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(SETTINGS.min_calls - 1):
        b.record(FAIL)
    clock.advance(SETTINGS.window_s)
    b.record(FAIL)
    assert b.state is State.CLOSED
    for _ in range(SETTINGS.min_calls - 2):
        b.record(FAIL)
    assert b.state is State.CLOSED  # the minimum, less one, since the old ones went
    b.record(FAIL)
    assert b.state is State.OPEN


def test_after_the_cool_down_one_probe_goes_and_a_success_closes_the_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(SETTINGS.min_calls):
        b.record(FAIL)
    assert b.open_for_s() == SETTINGS.cooldown_s
    clock.advance(SETTINGS.cooldown_s - 0.01)
    assert b.admit() is Admission.REFUSED
    clock.advance(0.01)
    assert b.state is State.HALF_OPEN
    assert [b.admit() for _ in range(SETTINGS.probes + 1)] == [Admission.PROBE] * SETTINGS.probes + [Admission.REFUSED]
    b.end_probe()
    assert b.admit() is Admission.PROBE  # a probe that ended without a call frees its place
    b.record(OK)
    assert b.state is State.CLOSED and b.admit() is Admission.ADMITTED
    # the window starts afresh: the failures before the outage count no more
    for _ in range(SETTINGS.min_calls - 1):
        b.record(FAIL)
    assert b.state is State.CLOSED


def test_a_failed_probe_opens_the_circuit_again_for_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    b = breaker(clock, cooldown_s=5.0, max_cooldown_s=12.0)
    for _ in range(SETTINGS.min_calls):
        b.record(FAIL)
    cooldowns = []
    for _ in range(3):
        cooldowns.append(b.open_for_s())
        clock.advance(b.open_for_s())
        assert b.admit() is Admission.PROBE
        b.record(FAIL)
        b.end_probe()
    assert cooldowns == [5.0, 10.0, 12.0]
    # a success closes it, and the next outage starts from the first cool-down again
    clock.advance(b.open_for_s())
    b.record(OK)
    for _ in range(SETTINGS.min_calls):
        b.record(FAIL)
    assert b.open_for_s() == 5.0


def test_while_open_outcomes_of_calls_already_out_change_nothing() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(SETTINGS.min_calls):
        b.record(FAIL)
    b.record(OK)
    b.record(FAIL)
    b.record(Verdict(Outcome.NEUTRAL))
    assert b.open_for_s() == SETTINGS.cooldown_s
    # but a Retry-After longer than what is left holds it open that long
    b.record(Verdict(Outcome.FAILURE, hold_s=SETTINGS.cooldown_s * 3))
    assert b.open_for_s() == SETTINGS.cooldown_s * 3


def test_a_retry_after_beyond_the_deadline_opens_the_circuit_at_once_for_that_long() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record(Verdict(Outcome.FAILURE, hold_s=SETTINGS.cooldown_s * 4))
    assert b.state is State.OPEN and b.open_for_s() == SETTINGS.cooldown_s * 4
    short = breaker(clock)
    short.record(Verdict(Outcome.FAILURE, hold_s=SETTINGS.cooldown_s / 10))
    assert short.open_for_s() == SETTINGS.cooldown_s  # never shorter than the cool-down


def test_neutral_outcomes_neither_open_nor_close() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(SETTINGS.window_calls * 2):
        b.record(Verdict(Outcome.NEUTRAL))
    assert b.state is State.CLOSED
    for _ in range(SETTINGS.min_calls):
        b.record(FAIL)
    clock.advance(SETTINGS.cooldown_s)
    b.record(Verdict(Outcome.NEUTRAL))
    assert b.state is State.HALF_OPEN


@pytest.mark.parametrize(
    "settings",
    [
        {"min_calls": 0},
        {"window_calls": 4, "min_calls": 5},
        {"failure_share": 0.0},
        {"failure_share": 1.5},
        {"cooldown_s": 0.0},
        {"cooldown_s": 10.0, "max_cooldown_s": 5.0},
        {"probes": 0},
        {"window_s": 0.0},
    ],
)
def test_settings_out_of_range_are_a_config_error(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="failover settings"):
        BreakerSettings(**settings)


# ---- routing ------------------------------------------------------------------------------


def trip(failover: Failover, endpoint: str) -> None:
    for _ in range(SETTINGS.min_calls):
        failover.observe(endpoint, EndpointHTTPError("down", status_code=503), wait_budget_s=10.0)


def test_requests_go_to_the_primary_then_the_fallback_while_it_is_open_then_back() -> None:
    clock = Clock()
    failover = Failover(specs({"a": openai(1, fallback=["b"]), "b": openai(2)}), clock=clock)
    assert failover.choose("a", CHAT, chat()) == Choice("a")
    # GIVEN the primary failing
    trip(failover, "a")
    # THEN its requests go to the fallback
    assert failover.choose("a", CHAT, chat()) == Choice("b")
    # WHEN the cool-down is over: one probe goes to the primary, the others still to the fallback
    clock.advance(SETTINGS.cooldown_s)
    probe = failover.choose("a", CHAT, chat())
    assert probe == Choice("a", probe=True)
    assert failover.choose("a", CHAT, chat()) == Choice("b")
    # WHEN the probe succeeds, every request goes back to the primary
    failover.observe("a", None, wait_budget_s=0.0)
    failover.release(probe)
    assert failover.choose("a", CHAT, chat()) == Choice("a")
    assert failover.states() == {"a": State.CLOSED, "b": State.CLOSED}


def test_a_permanent_failure_is_no_reason_to_fail_over() -> None:
    failover = Failover(specs({"a": openai(1, fallback=["b"]), "b": openai(2)}), clock=Clock())
    for _ in range(SETTINGS.window_calls):
        failover.observe("a", PermanentError("bad request", status_code=400), wait_budget_s=10.0)
    assert failover.choose("a", CHAT, chat()) == Choice("a")


def test_the_chain_goes_past_every_open_circuit_and_ends_at_the_primary() -> None:
    clock = Clock()
    failover = Failover(
        specs({"a": openai(1, fallback=["b", "c"]), "b": openai(2), "c": openai(3)}),
        clock=clock,
    )
    trip(failover, "a")
    trip(failover, "b")
    assert failover.choose("a", CHAT, chat()) == Choice("c")
    trip(failover, "c")
    # every circuit open: the primary, as without failover (a failure then uses an attempt)
    assert failover.choose("a", CHAT, chat()) == Choice("a")


def test_a_fallback_that_cannot_serve_the_request_is_skipped() -> None:
    failover = Failover(
        specs(
            {
                "a": openai(1, fallback=["tgi", "claude", "c"]),
                # a TGI container generates text only; Bedrock's translation refuses n > 1
                "tgi": {"kind": "sagemaker", "endpoint_name": "llama", "mapping": "tgi"},
                "claude": {"kind": "bedrock", "default_model": "anthropic.claude-3-haiku-20240307-v1:0"},
                "c": openai(3),
            }
        ),
        clock=Clock(),
    )
    trip(failover, "a")
    assert failover.choose("a", EMBED, {"model": "e", "input": "x"}) == Choice("claude")
    assert failover.choose("a", CHAT, {**chat(), "n": 2}) == Choice("c")
    assert failover.choose("a", CHAT, chat()) == Choice("tgi")


def test_fallbacks_chain_breadth_first_each_once() -> None:
    s = specs(
        {
            "a": openai(1, fallback=["b", "c"]),
            "b": openai(2, fallback=["d", "c"]),
            "c": openai(3, fallback=["d"]),
            "d": openai(4),
        }
    )
    assert fallback_chain(s, "a") == ("a", "b", "c", "d")
    assert fallback_chain(s, "c") == ("c", "d")
    assert fallback_chain(s, "d") == ("d",)


def test_an_endpoint_without_fallbacks_is_never_judged() -> None:
    failover = Failover(specs({"a": openai(1), "b": openai(2, fallback=["c"]), "c": openai(3)}), clock=Clock())
    trip(failover, "a")
    assert failover.choose("a", CHAT, chat()) == Choice("a")
    assert "a" not in failover.states()


def test_a_probe_released_without_a_call_lets_the_next_request_probe() -> None:
    clock = Clock()
    failover = Failover(specs({"a": openai(1, fallback=["b"]), "b": openai(2)}), clock=clock)
    trip(failover, "a")
    clock.advance(SETTINGS.cooldown_s)
    probe = failover.choose("a", CHAT, chat())
    assert probe.probe
    failover.release(probe)  # deferred before its call (a rate limit, say)
    assert failover.choose("a", CHAT, chat()) == Choice("a", probe=True)


def test_a_retried_request_is_never_a_probe() -> None:
    clock = Clock()
    failover = Failover(specs({"a": openai(1, fallback=["b"]), "b": openai(2)}), clock=clock)
    trip(failover, "a")
    clock.advance(SETTINGS.cooldown_s)
    # a request called before goes to the fallback, and leaves the probe to a first attempt
    assert failover.choose("a", CHAT, chat(), retry=True) == Choice("b")
    assert failover.choose("a", CHAT, chat()) == Choice("a", probe=True)
    # with every other circuit open too, it goes to the primary, as without failover
    trip(failover, "b")
    assert failover.choose("a", CHAT, chat(), retry=True) == Choice("a")


def test_a_last_attempt_goes_to_the_first_fallback_that_takes_it() -> None:
    failover = Failover(
        specs(
            {
                "a": openai(1, fallback=["tgi", "b", "c"]),
                "tgi": {"kind": "sagemaker", "endpoint_name": "llama", "mapping": "tgi"},
                "b": openai(2),
                "c": openai(3),
            }
        ),
        clock=Clock(),
    )
    assert failover.choose("a", EMBED, {"model": "e", "input": "x"}, retry=True, last=True) == Choice("b")
    trip(failover, "b")
    assert failover.choose("a", EMBED, {"model": "e", "input": "x"}, retry=True, last=True) == Choice("c")
    trip(failover, "c")
    assert failover.choose("a", EMBED, {"model": "e", "input": "x"}, retry=True, last=True) == Choice("a")
    # a job endpoint without fallbacks is unaffected
    solo = Failover(specs({"a": openai(1)}), clock=Clock())
    assert solo.choose("a", CHAT, chat(), retry=True, last=True) == Choice("a")


def test_the_models_map_routes_by_the_body_model() -> None:
    clock = Clock()
    s = specs(
        {
            "mixed": openai(1, models={"big": "large", "small": "mixed"}),
            "large": openai(2, fallback=["spare"]),
            "spare": openai(3),
        }
    )
    failover = Failover(s, clock=clock)
    assert failover.choose("mixed", CHAT, chat("big")) == Choice("large")
    assert failover.choose("mixed", CHAT, chat("small")) == Choice("mixed")
    assert failover.choose("mixed", CHAT, chat("other")) == Choice("mixed")
    assert failover.choose("mixed", CHAT, {"messages": []}) == Choice("mixed")
    assert failover.choose("mixed", CHAT, {"model": ["big"]}) == Choice("mixed")
    # the routed endpoint's own fallbacks apply
    trip(failover, "large")
    assert failover.choose("mixed", CHAT, chat("big")) == Choice("spare")
    # only the job's endpoint's map is read
    assert routed_endpoint(s, "large", chat("big")) == "large"


def test_an_endpoint_this_worker_does_not_know_is_left_as_it_is() -> None:
    failover = Failover(specs({"a": openai(1, fallback=["b"]), "b": openai(2)}), clock=Clock())
    assert failover.choose("nope", CHAT, chat()) == Choice("nope")


# ---- settings refused at worker start and at submit ---------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ({"a": openai(1, fallback=["x"])}, "endpoint 'a': fallback 'x' is not a configured endpoint"),
        ({"a": openai(1, models={"m": "x"})}, "endpoint 'a': models entry 'm' -> 'x' is not a configured endpoint"),
        ({"a": openai(1, fallback=["a"])}, "the fallbacks loop: a -> a"),
        ({"a": openai(1, fallback=["b"]), "b": openai(2, fallback=["a"])}, "the fallbacks loop: a -> b -> a"),
        (
            {"a": openai(1, fallback=["b"]), "b": openai(2, fallback=["c"]), "c": openai(3, fallback=["b"])},
            "the fallbacks loop: b -> c -> b",
        ),
    ],
)
def test_inconsistent_routing_settings_are_a_config_error(endpoints: dict[str, Any], message: str) -> None:
    s = specs(endpoints)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_routing(s)
    with pytest.raises(ConfigError, match="ENDPOINTS"):
        Failover(s)


def test_shared_fallbacks_and_maps_that_point_back_are_no_loop() -> None:
    check_routing(
        specs(
            {
                "a": openai(1, fallback=["b", "c"], models={"m": "c"}),
                "b": openai(2, fallback=["d"]),
                "c": openai(3, fallback=["d"], models={"n": "a"}),
                "d": openai(4),
            }
        )
    )


async def test_the_factory_refuses_them_before_making_any_client() -> None:
    async with AsyncExitStack() as stack:
        factory = EndpointFactory(stack, call_timeout_s=5.0)
        with pytest.raises(ConfigError, match="fallback 'x'"):
            await factory.build(specs({"a": openai(1, fallback=["x"])}))
        assert factory.aws_clients == {}


def test_submit_refuses_a_stack_whose_routing_is_inconsistent(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    path.write_text(json.dumps({"custom_id": "r1", "method": "POST", "url": CHAT, "body": chat()}) + "\n")
    with pytest.raises(ConfigError, match="the fallbacks loop"):
        read_job_file(
            path, endpoint="a", endpoints=specs({"a": openai(1, fallback=["b"]), "b": openai(2, fallback=["a"])})
        )


def test_submit_judges_each_line_by_the_endpoint_its_model_routes_it_to(tmp_path: Path) -> None:
    s = specs(
        {
            "mixed": openai(1, models={"llama": "tgi"}, fallback=["tgi"]),
            "tgi": {"kind": "sagemaker", "endpoint_name": "llama", "mapping": "tgi"},
        }
    )
    lines = [
        {"custom_id": "chat-llama", "method": "POST", "url": CHAT, "body": chat("llama")},
        {"custom_id": "embed-other", "method": "POST", "url": EMBED, "body": {"model": "e", "input": "x"}},
        {"custom_id": "embed-llama", "method": "POST", "url": EMBED, "body": {"model": "llama", "input": "x"}},
    ]
    path = tmp_path / "job.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # the fallback serves no embeddings, yet only the line routed to it is refused
    with pytest.raises(JobFileError) as e:
        read_job_file(path, endpoint="mixed", endpoints=s)
    assert e.value.total_problems == 1
    (problem,) = e.value.problems
    assert problem.startswith(f"{path}:3: endpoint 'tgi'") and "does not serve /v1/embeddings" in problem
    assert routed_refusal(s, "mixed", EMBED, {"model": "e", "input": "x"}) is None
