"""What submit refuses before anything is sent, and the arithmetic of ``submit --dry-run``:
no AWS, the job file and the stack's settings handed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.cost import PriceList, Pricing, TokenPrice, estimate_cost
from llmbatch.client.estimate import (
    INVOCATION_OVERHEAD_S,
    Latency,
    LiveLimits,
    TokenTotals,
    estimate_job,
    expected_duration,
    planned_status,
)
from llmbatch.client.jobfile import read_job_file
from shared.endpoints.base import EndpointReply
from shared.endpoints.factory import RouteGuard
from shared.endpoints.specs import parse_endpoints
from shared.errors import JobFileError, PermanentError
from shared.limits.rate_math import DEFAULT_MAX_TOKENS, RateLimits, output_cap
from shared.results import Usage

ENDPOINTS = parse_endpoints(
    json.dumps(
        {
            "default": {"kind": "openai", "url": "https://api.example.com/v1"},
            "claude": {"kind": "bedrock"},
            "tgi": {"kind": "sagemaker", "endpoint_name": "e", "mapping": "tgi"},
            "oai": {"kind": "sagemaker", "endpoint_name": "e", "mapping": "openai"},
        }
    )
)
CAP = 1000


def chat(custom_id: str = "a", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hello"}], **body},
    }


def embedding(custom_id: str = "e", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "m", "input": "x", **body},
    }


def problems(tmp_path: Path, lines: list[dict[str, Any]], endpoint: str = "default") -> list[str]:
    path = tmp_path / "job.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    try:
        read_job_file(path, endpoint=endpoint, endpoints=ENDPOINTS, max_tokens_per_request=CAP)
    except JobFileError as e:
        return [p.removeprefix(f"{path}:") for p in e.problems]
    return []


def test_a_job_on_an_endpoint_the_stack_lacks_is_refused_once_naming_those_it_has(tmp_path: Path) -> None:
    assert problems(tmp_path, [chat("a"), chat("b")], endpoint="nosuch") == [
        "1: endpoint 'nosuch' is not configured on this stack (its endpoints: claude, default, oai, tgi)"
    ]


@pytest.mark.parametrize(
    ("endpoint", "line", "refused"),
    [
        ("tgi", embedding(), True),
        ("oai", embedding(), False),
        ("claude", embedding(), False),
        ("claude", {**chat(), "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}, True),
        ("default", {"recordId": "r", "modelInput": {"prompt": "x"}}, True),
        ("claude", {"recordId": "r", "modelInput": {"prompt": "x"}}, True),  # no default_model
        ("claude", chat(model=None), True),  # no model anywhere
        ("claude", chat(tools=[{"type": "function"}]), True),  # Converse cannot take OpenAI tools
        ("claude", chat(n=2), True),
        ("claude", chat(max_tokens=8, temperature=0.2), False),
        ("tgi", chat(), False),
        ("tgi", chat(n=2), True),  # TGI's native API makes one choice
        ("oai", chat(n=2), False),
    ],
)
def test_each_endpoint_kind_takes_exactly_the_routes_it_serves(
    tmp_path: Path, endpoint: str, line: dict[str, Any], refused: bool
) -> None:
    assert bool(problems(tmp_path, [line], endpoint=endpoint)) is refused


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"max_completion_tokens": None, "max_tokens": 8}, "max_completion_tokens is null, which asks for no limit"),
        ({"max_tokens": None}, "max_tokens is null, which asks for no limit"),
        ({"max_completion_tokens": 8, "max_tokens": CAP + 1}, f"max_tokens {CAP + 1} is over the limit of {CAP}"),
        ({"max_completion_tokens": CAP + 1}, f"max_completion_tokens {CAP + 1} is over the limit of {CAP}"),
        ({"max_tokens": True}, "max_tokens must be a whole number of at least 1, got True"),
        ({"max_tokens": 8.5}, "max_tokens must be a whole number of at least 1, got 8.5"),
        ({"max_tokens": 0}, "max_tokens must be a whole number of at least 1, got 0"),
    ],
)
def test_every_token_field_is_held_to_the_cap_and_null_does_not_slip_past(
    tmp_path: Path, body: dict[str, Any], problem: str
) -> None:
    (found,) = problems(tmp_path, [chat(**body)])
    assert found.startswith(f"1: {problem}")


def test_a_refusal_of_the_translation_says_which_endpoint_and_why(tmp_path: Path) -> None:
    assert problems(tmp_path, [chat(model=None)], endpoint="claude") == [
        "1: endpoint 'claude' (bedrock) cannot send it: no model: set the request's 'model' or the endpoint's "
        "default_model"
    ]


def test_a_request_naming_no_cap_and_an_embedding_are_not_held_to_it(tmp_path: Path) -> None:
    assert problems(tmp_path, [chat("a"), chat("b", max_tokens=CAP), embedding("e", max_tokens=None)]) == []


@pytest.mark.parametrize(
    ("model_input", "cap"),
    [
        ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 7}, 7),
        ({"prompt": "x", "max_gen_len": 9}, 9),
        ({"inputText": "x", "textGenerationConfig": {"maxTokenCount": 11}}, 11),
        ({"messages": [], "inferenceConfig": {"max_new_tokens": 13}}, 13),
        ({"prompt": "x"}, 0),
    ],
)
def test_a_bedrock_records_cap_is_read_from_its_model_familys_own_field(model_input: dict[str, Any], cap: int) -> None:
    assert output_cap("bedrock:invoke-model", model_input) == cap


async def test_the_worker_refuses_a_route_with_the_words_submit_uses() -> None:
    class Never:
        name = "tgi"

        async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
            return EndpointReply(200, {}, Usage(0, 0))

    guard = RouteGuard(Never(), ENDPOINTS["tgi"])
    with pytest.raises(PermanentError) as e:
        await guard.call("/v1/embeddings", {}, timeout_s=1, custom_id="e")
    assert e.value.code == "unsupported_route"
    assert e.value.message == ENDPOINTS["tgi"].route_refusal("tgi", "/v1/embeddings")


def totals(requests: int, prompt: int = 0, output: int = 0) -> TokenTotals:
    return TokenTotals(requests, prompt, output, 0, requests * 500, 0, requests)


@pytest.mark.parametrize(
    ("limits", "bound", "seconds"),
    [
        # 100 requests, batches of 50: 2 invocations at once x 10 calls = 5 waves of 0.5 s
        (LiveLimits(4, 10, 50, RateLimits()), "concurrency", 2.5),
        # 100 requests at 60 RPM: 100 s
        (LiveLimits(4, 10, 50, RateLimits(rpm=60)), "rpm", 100.0),
        # 30,000 tokens at 10,000 TPM: 180 s
        (LiveLimits(4, 10, 50, RateLimits(rpm=600, tpm=10_000)), "tpm", 180.0),
    ],
)
def test_the_duration_is_the_slowest_of_concurrency_rpm_and_tpm(limits: LiveLimits, bound: str, seconds: float) -> None:
    d = expected_duration(totals(100, 20_000, 10_000), limits, Latency(0.5, "test"))
    assert (d.bound, d.invocations, d.active_workers) == (bound, 2, 2)
    assert d.seconds == pytest.approx(seconds + INVOCATION_OVERHEAD_S)


def test_the_estimate_prices_the_planned_job_with_the_same_cost_model_as_a_finished_one(tmp_path: Path) -> None:
    # GIVEN 10 requests of 40 characters, 6 naming max_tokens 20 and 4 naming none
    path = tmp_path / "job.jsonl"
    messages = [{"role": "user", "content": "x" * 40}]
    lines = [chat(f"r{i}", messages=messages, **({"max_tokens": 20} if i < 6 else {})) for i in range(10)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pricing = Pricing(1024, "arm64", PriceList(endpoints={"default": TokenPrice(1.0, 2.0)}))
    limits = LiveLimits(10, 16, 100, RateLimits())

    # WHEN it is estimated
    est = estimate_job(
        read_job_file(path), endpoint="default", pricing=pricing, limits=limits, latency=Latency(1.0, "test")
    )

    # THEN the tokens are the workers' estimate, the model is priced from them, and the
    # whole is cost.py's estimate of the job as it would finish
    assert (est.tokens.prompt, est.tokens.output, est.tokens.uncapped) == (110, 6 * 20 + 4 * DEFAULT_MAX_TOKENS, 4)
    assert est.cost.model_usd == pytest.approx((110 * 1.0 + est.tokens.output * 2.0) / 1e6)
    planned = planned_status(read_job_file(path), endpoint="default", tokens=est.tokens, duration=est.duration)
    assert est.cost == estimate_cost(planned, pricing)
    assert planned.metering.deliveries == 10 and planned.metering.invocations == 1
    text = "\n".join(est.lines())
    assert "4 naming no max_tokens counted at 256" in text and "typical_latency    1.000 s (test)" in text
