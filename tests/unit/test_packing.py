"""Tests of request packing (shared/packing.py): single-input requests that share a call, and
the answers split back to each of them.

Most tests use a fake endpoint that answers like an OpenAI-compatible server (one result per
listed input, each with its index; usage as totals; errors as the classified exceptions that
``OpenAIHttpEndpoint`` raises) and records every call. The last ones use the real simulator
over HTTP.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from llmbatch.bench.packing_scenario import run_once
from llmbatch.local.simulator import SimulatorConfig, start_simulator
from shared.config import RuntimeLimits
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.errors import ConfigError, EndpointHTTPError, PermanentError
from shared.packing import OutgoingCall, Packer, send_directly, single_item
from shared.results import Usage

EMB = "/v1/embeddings"
CMPL = "/v1/completions"
CHAT = "/v1/chat/completions"


# --------------------------------------------------------------------------------------------
# A fake OpenAI-compatible endpoint
# --------------------------------------------------------------------------------------------


@dataclass
class Call:
    route: str
    body: dict[str, Any]
    timeout_s: float
    custom_id: str

    @property
    def inputs(self) -> list[Any]:
        value = self.body["input" if self.route == EMB else "prompt"]
        return value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]


def fake_vector(item: str | list[int]) -> list[float]:
    text = item if isinstance(item, str) else ",".join(map(str, item))
    return [float(len(text)), float(sum(map(ord, text)) % 997)]


class FakeEndpoint:
    """Answers like an OpenAI-compatible server and records each call.

    A string counts one token per four characters, a token list its length, and a choice's
    text one token per character, so splitting usage totals by the packer's rule is exact. A
    prompt starting ``long`` stops at ``max_tokens`` (``finish_reason: length``). An input
    containing ``poison`` makes the whole call a 400, as an over-long input does at OpenAI.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        takes_lists: bool = True,
        drops_a_result: bool = False,
        reverses: bool = False,
        fail_with: Exception | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.calls: list[Call] = []
        self.cancelled = 0
        self._takes_lists = takes_lists
        self._drops = drops_a_result
        self._reverses = reverses
        self._fail_with = fail_with
        self._gate = gate

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        call = Call(route, body, timeout_s, custom_id)
        self.calls.append(call)
        if self._gate is not None:
            try:
                await self._gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self._fail_with is not None:
            raise self._fail_with
        value = body["input" if route == EMB else "prompt"]
        if not self._takes_lists and isinstance(value, list) and not isinstance(value[0], int):
            raise PermanentError("HTTP 400: prompt must be a string", status_code=400, code="invalid_prompt")
        items = call.inputs
        if any(isinstance(i, str) and "poison" in i for i in items):
            raise PermanentError("HTTP 400: maximum context length exceeded", status_code=400, code="context_length")
        prompt_tokens = sum(len(i) // 4 if isinstance(i, str) else len(i) for i in items)
        n = len(self.calls)
        if route == EMB:
            results = [{"object": "embedding", "index": i, "embedding": fake_vector(x)} for i, x in enumerate(items)]
            body_out: dict[str, Any] = {"object": "list", "model": body["model"], "id": f"emb-{n}"}
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
            key = "data"
        else:
            results, completion_tokens = [], 0
            for i, x in enumerate(items):
                long = isinstance(x, str) and x.startswith("long")
                text = "y" * 50 if long else f"echo {x}"
                completion_tokens += body["max_tokens"] if long else len(text)
                results.append(
                    {"text": text, "index": i, "logprobs": None, "finish_reason": "length" if long else "stop"}
                )
            body_out = {"object": "text_completion", "model": body["model"], "id": f"cmpl-{n}"}
            usage = _usage(prompt_tokens, completion_tokens)
            key = "choices"
        if self._reverses:
            results.reverse()
        if self._drops and len(results) > 1:  # a server that mishandles lists
            results.pop()
        body_out[key] = results
        body_out["usage"] = usage
        return EndpointReply(200, body_out, Usage.from_body(body_out), request_id=f"req-{n}")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def emb(text: Any, **params: Any) -> dict[str, Any]:
    return {"model": "e", "input": text, **params}


def cmpl(prompt: Any, **params: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": prompt, "max_tokens": 20, **params}


async def ask(
    packer: Packer, endpoint: FakeEndpoint, route: str, bodies: list[dict[str, Any]], **kw: Any
) -> list[EndpointReply]:
    """Every body at once, as the records of one SQS batch arrive."""
    return list(
        await asyncio.gather(
            *(
                packer.call(endpoint, route, body, timeout_s=30.0, custom_id=f"r{i}", **kw)
                for i, body in enumerate(bodies)
            )
        )
    )


async def alone(route: str, body: dict[str, Any]) -> EndpointReply:
    """What a request gets from a fresh fake when sent by itself: the oracle for a split."""
    return await FakeEndpoint().call(route, body, timeout_s=30.0, custom_id="alone")


# --------------------------------------------------------------------------------------------
# How many calls
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requests", "cap"), [(40, 16), (16, 16), (17, 4), (5, 1), (3, 2048)])
async def test_n_single_input_requests_take_ceil_n_over_cap_calls(requests: int, cap: int) -> None:
    # GIVEN a packer with a cap, and single-input embedding requests of one batch
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=cap)
    bodies = [emb(f"text number {i}") for i in range(requests)]

    # WHEN they are all asked at once
    replies = await ask(packer, endpoint, EMB, bodies)

    # THEN ceil(N / cap) calls carried them, none over the cap, each input exactly once
    assert len(endpoint.calls) == math.ceil(requests / cap)
    assert all(len(c.inputs) <= cap for c in endpoint.calls)
    assert sorted(x for c in endpoint.calls for x in c.inputs) == sorted(b["input"] for b in bodies)
    # AND each request has its own input's vector, at index 0
    for body, reply in zip(bodies, replies, strict=True):
        assert [d["embedding"] for d in reply.body["data"]] == [fake_vector(body["input"])]
        assert reply.body["data"][0]["index"] == 0


async def test_with_cap_1_every_body_goes_out_unchanged() -> None:
    # GIVEN packing off
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=1)
    bodies = [emb(f"t{i}") for i in range(3)]

    # WHEN requests are asked
    await ask(packer, endpoint, EMB, bodies)

    # THEN each went alone, exactly as given
    assert [c.body for c in endpoint.calls] == bodies
    assert [c.custom_id for c in endpoint.calls] == ["r0", "r1", "r2"]


async def test_a_lone_request_is_sent_with_its_own_body_and_timeout() -> None:
    # GIVEN packing on but only one request
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=16)
    body = emb("just me", dimensions=4)

    # WHEN it is asked
    [reply] = await ask(packer, endpoint, EMB, [body])

    # THEN it went out unchanged (no list), and its answer is the server's own
    [call] = endpoint.calls
    assert call.body == body and call.custom_id == "r0"
    assert 0 < call.timeout_s <= 30.0
    assert reply.body == (await alone(EMB, body)).body


async def test_requests_that_differ_in_anything_but_their_input_are_not_packed_together() -> None:
    # GIVEN two of each of several kinds of request, all at once
    endpoint, other_endpoint, packer = FakeEndpoint(), FakeEndpoint("other"), Packer(max_inputs=16)
    kinds: list[tuple[FakeEndpoint, str, dict[str, Any], str | None]] = [
        (endpoint, EMB, {"model": "e"}, None),
        (endpoint, EMB, {"model": "e2"}, None),
        (endpoint, EMB, {"model": "e", "dimensions": 4}, None),
        (endpoint, EMB, {"model": "e"}, "another-job"),
        (other_endpoint, EMB, {"model": "e"}, None),
        (endpoint, CMPL, {"model": "e", "max_tokens": 20}, None),
        (endpoint, CMPL, {"model": "e", "max_tokens": 21}, None),
    ]
    field = {EMB: "input", CMPL: "prompt"}

    async def one(kind: int, copy: int) -> EndpointReply:
        ep, route, params, group = kinds[kind]
        body = {**params, field[route]: f"kind {kind} copy {copy}"}
        return await packer.call(ep, route, body, timeout_s=30.0, custom_id=f"{kind}-{copy}", group=group)

    # WHEN they are asked
    await asyncio.gather(*(one(k, c) for k in range(len(kinds)) for c in range(2)))

    # THEN each kind had one call of its own two inputs, with its own parameters
    calls = endpoint.calls + other_endpoint.calls
    assert len(calls) == len(kinds)
    for call in calls:
        kind = {int(x.split()[1]) for x in call.inputs}
        assert len(kind) == 1 and len(call.inputs) == 2
        (k,) = kind
        assert {n: v for n, v in call.body.items() if n not in ("input", "prompt")} == kinds[k][2]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (CMPL, cmpl("p", n=2)),
        (CMPL, cmpl("p", stream=True)),
        (CMPL, cmpl("p", echo=True)),
        (CMPL, cmpl("p", best_of=3)),
        (CMPL, cmpl("p", logprobs=2)),
        (CMPL, cmpl(["two", "prompts"])),
        (EMB, emb(["two", "inputs"])),
        (EMB, emb([])),
        (CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
async def test_requests_whose_answer_shape_would_change_are_sent_alone_and_unchanged(
    route: str, body: dict[str, Any]
) -> None:
    # GIVEN packing on, and three copies of a request that must not be packed
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=16)
    assert not packer.packs(endpoint, route, body)

    # WHEN they are asked (the fake's answers do not matter here)
    sent = [packer.call(endpoint, route, body, timeout_s=30.0, custom_id=f"r{i}") for i in range(3)]
    await asyncio.gather(*sent, return_exceptions=True)

    # THEN each went out alone, as given
    assert [c.body for c in endpoint.calls] == [body] * 3


def test_single_inputs_are_strings_token_lists_or_lists_of_one_of_those() -> None:
    assert single_item("a") == "a"
    assert single_item([1, 2, 3]) == [1, 2, 3]
    assert single_item(["a"]) == "a"
    assert single_item([[4, 5]]) == [4, 5]
    for many_or_none in (["a", "b"], [[1], [2]], [], None, 3, [True, False], {"text": "a"}):
        assert single_item(many_or_none) is None


# --------------------------------------------------------------------------------------------
# Splitting answers
# --------------------------------------------------------------------------------------------


async def test_completions_are_split_by_choice_index_with_exact_usage_shares() -> None:
    # GIVEN a server that lists choices out of order, and prompts of different sizes,
    # one of them cut off at max_tokens, two given as tokens
    endpoint, packer = FakeEndpoint(reverses=True), Packer(max_inputs=16)
    bodies = [
        cmpl("abcd"),
        cmpl([5, 6, 7]),
        cmpl("a much longer prompt"),
        cmpl("long one"),
        cmpl([1, 2]),
        cmpl("mid size"),
    ]

    # WHEN they are asked together
    replies = await ask(packer, endpoint, CMPL, bodies)

    # THEN two calls carried them, the strings in one and the token lists (which a server
    # will not take mixed with strings) in the other
    assert sorted(sorted(map(str, c.inputs)) for c in endpoint.calls) == [
        ["[1, 2]", "[5, 6, 7]"],
        ["a much longer prompt", "abcd", "long one", "mid size"],
    ]
    # AND each request got what it would have got alone: its own choice (index 0) and its own
    # usage, with its packed call's id and request id
    for body, reply in zip(bodies, replies, strict=True):
        own = await alone(CMPL, body)
        assert reply.body["choices"] == own.body["choices"]
        assert reply.body["usage"] == own.body["usage"]
        assert reply.usage == own.usage
        call_no = next(n for n, c in enumerate(endpoint.calls, 1) if body["prompt"] in c.inputs)
        assert reply.body["id"] == f"cmpl-{call_no}" and reply.request_id == f"req-{call_no}"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


async def test_a_transient_error_of_the_packed_call_reaches_every_member() -> None:
    # GIVEN a server that answers 429 with Retry-After
    throttled = EndpointHTTPError("HTTP 429: slow down", status_code=429, code="rate_limit_exceeded", retry_after_s=7)
    endpoint, packer = FakeEndpoint(fail_with=throttled), Packer(max_inputs=16)

    # WHEN five requests are asked together
    outcomes = await asyncio.gather(
        *(packer.call(endpoint, EMB, emb(f"t{i}"), timeout_s=30.0, custom_id=f"r{i}") for i in range(5)),
        return_exceptions=True,
    )

    # THEN one call was made, and every member has the same classified error, each its own object
    assert len(endpoint.calls) == 1
    for error in outcomes:
        assert isinstance(error, EndpointHTTPError)
        assert (error.status_code, error.code, error.retry_after_s) == (429, "rate_limit_exceeded", 7)
    assert len({id(e) for e in outcomes}) == 5


async def test_one_bad_input_fails_alone_and_its_neighbours_are_answered() -> None:
    # GIVEN a server that refuses a whole list when one input is bad
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=16)
    bodies = [emb("fine 0"), emb("poison pill"), emb("fine 2"), emb("fine 3")]

    # WHEN they are asked together
    outcomes = await asyncio.gather(
        *(packer.call(endpoint, EMB, b, timeout_s=30.0, custom_id=f"r{i}") for i, b in enumerate(bodies)),
        return_exceptions=True,
    )

    # THEN after the refused list each was sent alone: the bad one failed, the others answered
    assert [len(c.inputs) for c in endpoint.calls] == [4, 1, 1, 1, 1]
    assert isinstance(outcomes[1], PermanentError) and outcomes[1].code == "context_length"
    for i in (0, 2, 3):
        reply = outcomes[i]
        assert isinstance(reply, EndpointReply)
        assert reply.body["data"][0]["embedding"] == fake_vector(bodies[i]["input"])
    # AND packing stays on for the next batch
    assert packer.packs(endpoint, EMB, emb("next"))
    assert packer.stats.fallbacks == 1


async def test_an_endpoint_that_refuses_lists_gets_one_call_per_request_from_then_on() -> None:
    # GIVEN a server that takes only a string prompt (a 400 for a list)
    endpoint, packer = FakeEndpoint(takes_lists=False), Packer(max_inputs=16)

    # WHEN a batch is asked, then another by the next invocation's packer (which shares what
    # the container learned)
    first = await ask(packer, endpoint, CMPL, [cmpl(f"p{i}") for i in range(3)])
    calls_for_first = len(endpoint.calls)
    next_packer = Packer(max_inputs=16, list_support=packer.list_support)
    second = await ask(next_packer, endpoint, CMPL, [cmpl(f"q{i}") for i in range(3)])

    # THEN the first batch was answered one by one after the refused list, and the second
    # was not packed at all
    assert calls_for_first == 1 + 3
    assert len(endpoint.calls) == calls_for_first + 3
    assert all(isinstance(c.body["prompt"], str) for c in endpoint.calls[calls_for_first:])
    assert [r.body["choices"][0]["text"] for r in first + second] == [f"echo p{i}" for i in range(3)] + [
        f"echo q{i}" for i in range(3)
    ]


async def test_an_answer_without_one_result_per_input_is_not_split_but_asked_again_one_by_one() -> None:
    # GIVEN a server whose list answers lose a result
    endpoint, packer = FakeEndpoint(drops_a_result=True), Packer(max_inputs=16)
    bodies = [emb(f"t{i}") for i in range(4)]

    # WHEN they are asked together
    replies = await ask(packer, endpoint, EMB, bodies)

    # THEN nobody got a wrong vector: after the bad list answer each was asked alone, and
    # packing is off for that endpoint
    assert len(endpoint.calls) == 1 + 4
    for body, reply in zip(bodies, replies, strict=True):
        assert reply.body["data"][0]["embedding"] == fake_vector(body["input"])
    assert not packer.packs(endpoint, EMB, emb("next"))


# --------------------------------------------------------------------------------------------
# Deadlines and cancellation
# --------------------------------------------------------------------------------------------


async def test_the_packed_call_gets_the_smallest_time_left_of_its_members() -> None:
    # GIVEN requests with 30 s and 5 s left
    seen: list[OutgoingCall] = []

    async def send(call: OutgoingCall) -> EndpointReply:
        seen.append(call)
        return await send_directly(call)

    endpoint, packer = FakeEndpoint(), Packer(send, max_inputs=16)

    # WHEN they are packed
    await asyncio.gather(
        packer.call(endpoint, EMB, emb("a"), timeout_s=30.0, custom_id="slow", group="job-1"),
        packer.call(endpoint, EMB, emb("b"), timeout_s=5.0, custom_id="fast", group="job-1"),
    )

    # THEN the call may last no longer than the 5 s request, and send saw both ids and the group
    [call] = seen
    assert 0 < call.timeout_s <= 5.0
    assert call.custom_ids == ("slow", "fast") and call.custom_id == "slow" and call.group == "job-1"


async def test_a_cancelled_member_does_not_stop_the_others_getting_their_answers() -> None:
    # GIVEN a packed call held at the server
    gate = asyncio.Event()
    endpoint, packer = FakeEndpoint(gate=gate), Packer(max_inputs=3)
    tasks = [
        asyncio.create_task(packer.call(endpoint, EMB, emb(f"t{i}"), timeout_s=30.0, custom_id=f"r{i}"))
        for i in range(3)
    ]
    while not endpoint.calls:
        await asyncio.sleep(0)

    # WHEN one member's deadline cancels its waiter, and the server then answers
    tasks[1].cancel()
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    # THEN the cancelled one is cancelled and the other two have their own answers
    assert isinstance(outcomes[1], asyncio.CancelledError)
    for i in (0, 2):
        reply = outcomes[i]
        assert isinstance(reply, EndpointReply)
        assert reply.body["data"][0]["embedding"] == fake_vector(f"t{i}")
    assert len(endpoint.calls) == 1 and endpoint.cancelled == 0


async def test_a_member_cancelled_before_the_flush_is_not_sent_and_frees_its_place() -> None:
    # GIVEN a group of two still waiting for company, under a cap of 3
    endpoint, packer = FakeEndpoint(), Packer(max_inputs=3, max_wait_s=10.0)

    def start(i: int) -> asyncio.Task[EndpointReply]:
        return asyncio.create_task(packer.call(endpoint, EMB, emb(f"t{i}"), timeout_s=30.0, custom_id=f"r{i}"))

    tasks = [start(0), start(1)]
    await asyncio.sleep(0)

    # WHEN one is cancelled before the group is sent, and two more arrive
    tasks[0].cancel()
    await asyncio.sleep(0)
    tasks += [start(2), start(3)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    # THEN the cancelled input never went out, and the three others filled one call
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert [c.inputs for c in endpoint.calls] == [["t1", "t2", "t3"]]


async def test_when_every_member_is_gone_the_call_is_cancelled() -> None:
    # GIVEN a packed call held at the server
    endpoint, packer = FakeEndpoint(gate=asyncio.Event()), Packer(max_inputs=2)
    tasks = [
        asyncio.create_task(packer.call(endpoint, EMB, emb(f"t{i}"), timeout_s=30.0, custom_id=f"r{i}"))
        for i in range(2)
    ]
    while not endpoint.calls:
        await asyncio.sleep(0)

    # WHEN both waiters are cancelled
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(100):  # a few loop turns for the cancellation to reach the call
        if endpoint.cancelled:
            break
        await asyncio.sleep(0)

    # THEN the call itself was cancelled too
    assert endpoint.cancelled == 1
    await packer.aclose()


# --------------------------------------------------------------------------------------------
# The cap
# --------------------------------------------------------------------------------------------


def test_the_cap_is_a_runtime_limit_from_1_to_2048_and_on_by_default() -> None:
    assert RuntimeLimits().max_inputs_per_call == 16
    assert RuntimeLimits.from_json('{"max_inputs_per_call": 2048}').max_inputs_per_call == 2048
    assert RuntimeLimits(max_inputs_per_call=1).max_inputs_per_call == 1
    for bad in (0, 2049, 4.0, True):
        with pytest.raises(ConfigError, match="max_inputs_per_call"):
            RuntimeLimits(max_inputs_per_call=bad)  # type: ignore[arg-type]
    packer = Packer()
    packer.set_cap(RuntimeLimits().max_inputs_per_call)
    assert packer.cap == 16
    with pytest.raises(ValueError):
        packer.set_cap(0)


# --------------------------------------------------------------------------------------------
# Against the simulator, over HTTP
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def sim_endpoint() -> AsyncIterator[tuple[OpenAIHttpEndpoint, Any]]:
    running = await start_simulator(SimulatorConfig(base_latency_s=0.0, per_output_token_s=0.0, jitter_s=0.0))
    try:
        async with aiohttp.ClientSession() as session:
            yield OpenAIHttpEndpoint("default", session, running.url), running.simulator
    finally:
        await running.close()


async def test_packed_simulator_answers_reach_the_right_custom_id(
    sim_endpoint: tuple[OpenAIHttpEndpoint, Any],
) -> None:
    # GIVEN the simulator, and embeddings and completions requests of one batch
    endpoint, sim = sim_endpoint
    packer = Packer(max_inputs=4)
    embeddings = {f"e{i}": emb(f"embed this, number {i}" + "!" * i, model="sim-model") for i in range(10)}
    completions = {f"c{i}": cmpl(f"complete {i}", model="sim-model", max_tokens=6) for i in range(6)}

    # WHEN they are all asked at once through the packer
    async def ask_one(route: str, custom_id: str, body: dict[str, Any]) -> tuple[str, EndpointReply]:
        return custom_id, await packer.call(endpoint, route, body, timeout_s=10.0, custom_id=custom_id)

    packed = dict(
        await asyncio.gather(
            *(ask_one(EMB, k, b) for k, b in embeddings.items()),
            *(ask_one(CMPL, k, b) for k, b in completions.items()),
        )
    )

    # THEN the simulator saw ceil(10/4) + ceil(6/4) calls, and the usage shares add up to
    # what it counted
    stats = sim.stats()
    assert stats["requests_by_route"] == {EMB: 3, CMPL: 2}
    assert sum(r.usage.total_tokens for r in packed.values()) == stats["prompt_tokens"] + stats["completion_tokens"]
    # AND each custom_id holds what its own request gets when sent alone
    for custom_id, body in embeddings.items():
        own = await endpoint.call(EMB, body, timeout_s=10.0, custom_id=custom_id)
        assert packed[custom_id].body["data"] == own.body["data"]
    for custom_id, body in completions.items():
        own = await endpoint.call(CMPL, body, timeout_s=10.0, custom_id=custom_id)
        assert packed[custom_id].body["choices"] == own.body["choices"]
        assert packed[custom_id].usage.completion_tokens == own.usage.completion_tokens


async def test_a_fail_first_marker_follows_its_input_whatever_it_is_packed_with(
    sim_endpoint: tuple[OpenAIHttpEndpoint, Any],
) -> None:
    # GIVEN an input marked to fail its first call, packed with a different neighbour each time
    endpoint, _ = sim_endpoint
    marked = emb("[[sim:fail-first-1:503]] flaky", model="sim-model")

    async def packed_with(neighbour: str) -> list[Any]:
        packer = Packer(max_inputs=2)
        calls = [
            packer.call(endpoint, EMB, marked, timeout_s=10.0, custom_id="flaky"),
            packer.call(endpoint, EMB, emb(neighbour, model="sim-model"), timeout_s=10.0, custom_id="n"),
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    # WHEN it is sent with one neighbour, then with another
    first, second = await packed_with("one"), await packed_with("two")

    # THEN only its first call failed (503 to both members), and the second was answered
    assert all(isinstance(o, EndpointHTTPError) and o.status_code == 503 for o in first)
    assert all(isinstance(o, EndpointReply) for o in second)


@pytest.mark.parametrize(("cap", "calls"), [(1, 30), (4, 8)])
async def test_the_packing_bench_scenario_counts_the_calls_the_endpoint_received(cap: int, calls: int) -> None:
    # GIVEN / WHEN the benchmark's packing scenario on a fast endpoint
    run = await run_once(cap, requests=30, simulator={"base_latency_s": 0.0, "per_prompt_token_s": 0.0})

    # THEN every request was answered, in ceil(N / cap) calls
    assert (run.requests, run.succeeded, run.calls) == (30, 30, calls)
