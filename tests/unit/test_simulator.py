"""Tests of the OpenAI-compatible endpoint simulator (llmbatch/local/simulator/).

Every test talks HTTP to a real server on 127.0.0.1 (port 0), because the point of the
simulator is its wire behaviour: status codes, headers, queueing and disconnects.  No test
asserts on wall-clock durations; concurrency is checked through the simulator's own counters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import select
import signal
import struct
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmbatch.local.simulator import (
    RunningSimulator,
    SimulatorConfig,
    SimulatorThread,
    SlotPool,
    format_duration,
    start_simulator,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT = "/chat/completions"


@contextlib.asynccontextmanager
async def simulator(**config: Any) -> AsyncIterator[tuple[RunningSimulator, aiohttp.ClientSession]]:
    """A started simulator (jitter off unless asked) and a client session for it."""
    config.setdefault("jitter_s", 0.0)
    config.setdefault("base_latency_s", 0.0)
    config.setdefault("per_output_token_s", 0.0)
    running = await start_simulator(SimulatorConfig(**config))
    try:
        async with aiohttp.ClientSession() as session:
            yield running, session
    finally:
        await running.close()


def chat_body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": text}], **extra}


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    async with session.post(url, data=data, headers=headers, **kwargs) as response:
        return response.status, await response.json(), dict(response.headers)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.json()


# --------------------------------------------------------------------------------------------
# Config and helpers (no server)
# --------------------------------------------------------------------------------------------


def test_config_round_trip_and_validation() -> None:
    config = SimulatorConfig(slots=3, rpm_limit=10, models=("a", "b"), api_key="k")
    assert SimulatorConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict()))["models"] == ["a", "b"]
    assert SimulatorConfig.from_dict({"base_latency_s": 1}).base_latency_s == 1.0
    assert SimulatorConfig.from_dict({}) == SimulatorConfig()
    assert config.updated({"slots": 5}).slots == 5
    with pytest.raises(ValueError, match="unknown"):
        SimulatorConfig.from_dict({"error_rate_50x": 0.5})
    with pytest.raises(ValueError):
        SimulatorConfig.from_dict({"error_rate_5xx": 1.5})
    with pytest.raises(ValueError):
        SimulatorConfig.from_dict({"slots": "8"})
    with pytest.raises(ValueError):
        SimulatorConfig(slots=0)


def test_format_duration_matches_openai_style() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.02) == "20ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3725) == "1h2m5s"


@pytest.mark.asyncio
async def test_slot_pool_is_fifo_and_cancel_safe() -> None:
    pool = SlotPool(1)
    await pool.acquire()
    order: list[int] = []

    async def waiter(tag: int) -> None:
        await pool.acquire()
        order.append(tag)
        pool.release()

    tasks = [asyncio.create_task(waiter(tag)) for tag in range(4)]
    await asyncio.sleep(0)
    assert pool.waiting == 4
    tasks[1].cancel()  # a cancelled waiter leaves the queue without taking a slot
    await asyncio.sleep(0)
    assert pool.waiting == 3
    pool.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2, 3]
    assert (pool.in_use, pool.waiting, pool.peak_waiting) == (0, 0, 4)


# --------------------------------------------------------------------------------------------
# Response shapes and determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_completion_shape_and_determinism() -> None:
    async with simulator() as (sim, session):
        status, first, headers = await post(session, sim.url + CHAT, chat_body("Tell me a story", max_tokens=8))
        assert status == 200
        assert first["object"] == "chat.completion"
        assert first["id"].startswith("chatcmpl-")
        assert isinstance(first["created"], int)
        assert first["model"] == "sim-model"
        [choice] = first["choices"]
        assert choice["index"] == 0
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
        assert choice["finish_reason"] in ("stop", "length")
        usage = first["usage"]
        assert usage["prompt_tokens"] == len("Tell me a story") // 4 + 1
        assert 1 <= usage["completion_tokens"] <= 8
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert "x-request-id" in {key.lower() for key in headers}

        _, second, _ = await post(session, sim.url + CHAT, chat_body("Tell me a story", max_tokens=8))
        assert second["choices"] == first["choices"]
        assert second["usage"] == first["usage"]
        _, other, _ = await post(session, sim.url + CHAT, chat_body("Something else", max_tokens=8))
        assert other["choices"][0]["message"]["content"] != choice["message"]["content"]

        # max_completion_tokens wins over max_tokens; n gives indexed choices.
        _, capped, _ = await post(session, sim.url + CHAT, chat_body("x", max_tokens=50, max_completion_tokens=2, n=3))
        assert [c["index"] for c in capped["choices"]] == [0, 1, 2]
        assert all(len(c["message"]["content"].split()) <= 2 for c in capped["choices"])


@pytest.mark.asyncio
async def test_chat_output_depends_on_seed() -> None:
    async with simulator(seed=1) as (sim1, session1), simulator(seed=2) as (sim2, _):
        _, a, _ = await post(session1, sim1.url + CHAT, chat_body("same"))
        _, b, _ = await post(session1, sim2.url + CHAT, chat_body("same"))
        assert a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]


@pytest.mark.asyncio
async def test_completions_with_string_and_list_prompts() -> None:
    async with simulator(max_output_tokens_default=5) as (sim, session):
        status, single, _ = await post(session, sim.url + "/completions", {"model": "m", "prompt": "once"})
        assert status == 200
        assert single["object"] == "text_completion"
        assert single["id"].startswith("cmpl-")
        [choice] = single["choices"]
        assert choice["index"] == 0 and isinstance(choice["text"], str)
        assert single["usage"]["completion_tokens"] <= 5

        status, multi, _ = await post(
            session, sim.url + "/completions", {"model": "m", "prompt": ["once", "upon a time"]}
        )
        assert status == 200
        assert [c["index"] for c in multi["choices"]] == [0, 1]
        assert multi["choices"][0]["text"] == choice["text"]  # same prompt, same text
        assert multi["usage"]["prompt_tokens"] == (len("once") // 4 + 1) + (len("upon a time") // 4 + 1)
        assert multi["usage"]["completion_tokens"] == sum(len(c["text"].split()) for c in multi["choices"])


@pytest.mark.asyncio
async def test_embeddings_shape_list_input_and_base64() -> None:
    async with simulator() as (sim, session):
        status, single, _ = await post(session, sim.url + "/embeddings", {"model": "e", "input": "hello"})
        assert status == 200
        assert single["object"] == "list" and single["model"] == "e"
        [item] = single["data"]
        assert item["object"] == "embedding" and item["index"] == 0
        assert len(item["embedding"]) == 8
        assert all(isinstance(x, float) for x in item["embedding"])
        assert single["usage"] == {"prompt_tokens": 2, "total_tokens": 2}

        _, multi, _ = await post(session, sim.url + "/embeddings", {"model": "e", "input": ["hello", "world"]})
        assert [d["index"] for d in multi["data"]] == [0, 1]
        assert multi["data"][0]["embedding"] == item["embedding"]  # deterministic per input
        assert multi["data"][1]["embedding"] != item["embedding"]

        _, encoded, _ = await post(
            session, sim.url + "/embeddings", {"model": "e", "input": "hello", "encoding_format": "base64"}
        )
        decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))
        assert decoded == pytest.approx(item["embedding"], abs=1e-6)


@pytest.mark.asyncio
async def test_models_route() -> None:
    async with simulator(models=("alpha", "beta")) as (sim, session):
        models = await get_json(session, sim.url + "/models")
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["alpha", "beta"]
        assert all(m["object"] == "model" for m in models["data"])


# --------------------------------------------------------------------------------------------
# Validation and auth
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_validation_errors_are_openai_shaped() -> None:
    cases: list[tuple[str, Any, int, str | None]] = [
        (CHAT, "{not json", 400, None),
        (CHAT, [1, 2], 400, None),
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        (CHAT, {"model": "m"}, 400, "messages"),
        (CHAT, {"model": "m", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        (CHAT, chat_body(max_tokens=0), 400, "max_tokens"),
        ("/completions", {"model": "m"}, 400, "prompt"),
        ("/completions", {"model": "m", "prompt": []}, 400, "prompt"),
        ("/embeddings", {"model": "m"}, 400, "input"),
    ]
    async with simulator() as (sim, session):
        for path, body, want_status, want_param in cases:
            status, payload, _ = await post(session, sim.url + path, body)
            assert status == want_status, (path, body)
            error = payload["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == want_param, (path, body)
            assert error["code"] is None
            assert isinstance(error["message"], str) and error["message"]

        for path, body in [
            (CHAT, {**chat_body(), "model": "missing-model"}),
            ("/completions", {"model": "missing-model", "prompt": "x"}),
            ("/embeddings", {"model": "missing-model", "input": "x"}),
        ]:
            status, payload, _ = await post(session, sim.url + path, body)
            assert status == 404
            assert payload["error"]["code"] == "model_not_found"

        async with session.get(sim.url + "/no/such/route") as response:
            assert response.status == 404
            assert "error" in await response.json()


@pytest.mark.asyncio
async def test_api_key_is_checked_only_when_configured() -> None:
    async with simulator(api_key="sekrit") as (sim, session):
        status, payload, _ = await post(session, sim.url + CHAT, chat_body())
        assert status == 401
        assert payload["error"]["type"] == "invalid_request_error"
        status, _, _ = await post(session, sim.url + CHAT, chat_body(), headers={"Authorization": "Bearer nope"})
        assert status == 401
        status, _, _ = await post(session, sim.url + CHAT, chat_body(), headers={"Authorization": "Bearer sekrit"})
        assert status == 200
    async with simulator() as (sim, session):
        status, _, _ = await post(session, sim.url + CHAT, chat_body(), headers={"Authorization": "Bearer any"})
        assert status == 200


# --------------------------------------------------------------------------------------------
# Rate limits and injected faults
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rpm_limit_answers_429_with_retry_after_and_ratelimit_headers() -> None:
    async with simulator(rpm_limit=2) as (sim, session):
        statuses = []
        for _ in range(2):
            status, _, headers = await post(session, sim.url + CHAT, chat_body())
            statuses.append(status)
            assert headers["x-ratelimit-limit-requests"] == "2"
            assert "x-ratelimit-reset-requests" in headers
            assert "x-ratelimit-limit-tokens" not in headers  # no TPM limit configured
        assert statuses == [200, 200]
        assert headers["x-ratelimit-remaining-requests"] == "0"

        status, payload, headers = await post(session, sim.url + CHAT, chat_body())
        assert status == 429
        assert payload["error"]["code"] == "rate_limit_exceeded"
        assert payload["error"]["type"] == "requests"
        retry_after = int(headers["Retry-After"])
        assert 1 <= retry_after <= 30  # 2 RPM refills one request every 30 s
        assert 0 < int(headers["retry-after-ms"]) <= 30_000
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"].endswith("s")

        stats = await get_json(session, sim.root_url + "/_sim/stats")
        assert stats["rate_limited_429"] == 1
        assert stats["responses_by_status"] == {"200": 2, "429": 1}


@pytest.mark.asyncio
async def test_tpm_limit_counts_prompt_plus_max_tokens() -> None:
    async with simulator(tpm_limit=100) as (sim, session):
        # 1 prompt token + 40 max_tokens = 41 per request: two fit, the third does not.
        results = [await post(session, sim.url + CHAT, chat_body("hi", max_tokens=40)) for _ in range(3)]
        assert [status for status, _, _ in results] == [200, 200, 429]
        status, payload, headers = results[2]
        assert payload["error"]["type"] == "tokens"
        assert int(headers["Retry-After"]) >= 1
        assert headers["x-ratelimit-limit-tokens"] == "100"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 41

        # Bigger than the whole minute's budget: 429 that no wait can fix.
        status, payload, _ = await post(session, sim.url + CHAT, chat_body("hi", max_tokens=500))
        assert status == 429
        assert "too large" in payload["error"]["message"]


async def _statuses(session: aiohttp.ClientSession, sim: RunningSimulator, count: int) -> list[int]:
    statuses = []
    for index in range(count):
        status, payload, _ = await post(session, sim.url + CHAT, chat_body(f"request {index}"))
        if status >= 500:
            assert payload["error"]["type"] == "server_error"
        statuses.append(status)
    return statuses


@pytest.mark.asyncio
async def test_injected_5xx_rate_is_seeded_and_repeatable() -> None:
    async with simulator(error_rate_5xx=0.5, seed=7) as (sim, session):
        first = await _statuses(session, sim, 40)
        stats = await get_json(session, sim.root_url + "/_sim/stats")
        failures = [s for s in first if s != 200]
        assert set(failures) <= {500, 502, 503}
        assert 5 <= len(failures) <= 35
        assert stats["injected_5xx"] == len(failures)

        async with session.post(sim.root_url + "/_sim/reset") as response:
            assert response.status == 200
        assert await _statuses(session, sim, 40) == first  # reset reseeds: same sequence

    async with simulator(error_rate_5xx=0.5, seed=7) as (sim, session):
        assert await _statuses(session, sim, 40) == first  # same seed, fresh server
    async with simulator(error_rate_5xx=0.5, seed=8) as (sim, session):
        assert await _statuses(session, sim, 40) != first


@pytest.mark.asyncio
async def test_injected_429_carries_configured_retry_after() -> None:
    async with simulator(error_rate_429=1.0, retry_after_s=2.5) as (sim, session):
        status, payload, headers = await post(session, sim.url + CHAT, chat_body())
        assert status == 429
        assert payload["error"]["code"] == "rate_limit_exceeded"
        assert headers["Retry-After"] == "3"
        assert headers["retry-after-ms"] == "2500"


@pytest.mark.asyncio
async def test_markers_target_specific_requests() -> None:
    async with simulator() as (sim, session):
        flaky = chat_body("flaky [[sim:fail-first-2:503]]")
        statuses = [(await post(session, sim.url + CHAT, flaky))[0] for _ in range(3)]
        assert statuses == [503, 503, 200]
        # The counter is per exact text: a different text starts its own count.
        other = chat_body("other [[sim:fail-first-2:503]]")
        assert (await post(session, sim.url + CHAT, other))[0] == 503

        status, payload, _ = await post(session, sim.url + CHAT, chat_body("[[sim:400]]"))
        assert (status, payload["error"]["type"]) == (400, "invalid_request_error")
        status, _, headers = await post(session, sim.url + "/completions", {"model": "m", "prompt": "[[sim:429]]"})
        assert status == 429 and headers["Retry-After"] == "1"
        status, payload, _ = await post(session, sim.url + "/embeddings", {"model": "m", "input": ["[[sim:502]]"]})
        assert (status, payload["error"]["type"]) == (502, "server_error")

        status, payload, _ = await post(session, sim.url + CHAT, chat_body("[[sim:explode]]"))
        assert status == 400 and "marker" in payload["error"]["message"]

        # sleep adds latency: a lower bound is safe on a noisy machine (sleeps never end early).
        status, _, headers = await post(session, sim.url + CHAT, chat_body("[[sim:sleep=0.2]]"))
        assert status == 200
        assert int(headers["openai-processing-ms"]) >= 190

        # Content parts are scanned too.
        parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "[[sim:500]]"}]}]}
        assert (await post(session, sim.url + CHAT, parts))[0] == 500

        stats = await get_json(session, sim.root_url + "/_sim/stats")
        assert stats["injected_5xx"] == 5  # two flaky + other + 502 + 500


# --------------------------------------------------------------------------------------------
# Capacity, queueing and disconnects
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_slots_bound_concurrency_and_queue_the_rest() -> None:
    slots = 3
    async with simulator(slots=slots, base_latency_s=0.05) as (sim, session):
        results = await asyncio.gather(
            *(post(session, sim.url + CHAT, chat_body(f"q{index}")) for index in range(3 * slots))
        )
        assert [status for status, _, _ in results] == [200] * (3 * slots)
        stats = await get_json(session, sim.root_url + "/_sim/stats")
        assert stats["max_in_flight"] == slots
        assert stats["max_queued"] > 0
        assert stats["max_concurrent_requests"] > slots
        assert stats["in_flight"] == 0 and stats["queued"] == 0
        assert stats["busy_slot_seconds"] > 0
        assert stats["requests_total"] == 3 * slots


async def _wait_for_stats(
    session: aiohttp.ClientSession, sim: RunningSimulator, key: str, value: int
) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for _ in range(200):
        stats = await get_json(session, sim.root_url + "/_sim/stats")
        if stats[key] == value:
            break
        await asyncio.sleep(0.02)
    return stats


@pytest.mark.asyncio
async def test_client_disconnect_releases_the_slot() -> None:
    async with simulator(slots=1) as (sim, session):
        with pytest.raises(asyncio.TimeoutError):
            await post(session, sim.url + CHAT, chat_body("[[sim:hang]]"), timeout=aiohttp.ClientTimeout(total=0.3))
        stats = await _wait_for_stats(session, sim, "in_flight", 0)
        assert stats["in_flight"] == 0
        assert stats["hangs"] == 1
        assert stats["client_disconnects"] == 1
        # The only slot is free again: a normal request is served, not stuck behind the hang.
        status, _, _ = await post(session, sim.url + CHAT, chat_body(), timeout=aiohttp.ClientTimeout(total=5))
        assert status == 200


@pytest.mark.asyncio
async def test_close_does_not_wait_for_hung_requests() -> None:
    running = await start_simulator(SimulatorConfig(hang_rate=1.0, hang_s=3600))
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(post(session, running.url + CHAT, chat_body()))
        stats: dict[str, Any] = {}
        for _ in range(200):
            stats = running.simulator.stats()
            if stats["hangs"] == 1:
                break
            await asyncio.sleep(0.01)
        assert stats["hangs"] == 1
        await asyncio.wait_for(running.close(), timeout=5)
        with pytest.raises(aiohttp.ClientError):
            await pending


# --------------------------------------------------------------------------------------------
# Control routes
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stats_reset_and_config_routes() -> None:
    async with simulator(slots=2) as (sim, session):
        for custom_id in ("a", "a", "b"):
            await post(session, sim.url + CHAT, chat_body(), headers={"x-llmbatch-custom-id": custom_id})
        await session.get(sim.url + "/models")
        stats = await get_json(session, sim.root_url + "/_sim/stats")
        for key in (
            "requests_total",
            "requests_by_route",
            "responses_by_status",
            "rate_limited_429",
            "injected_5xx",
            "hangs",
            "in_flight",
            "queued",
            "max_in_flight",
            "max_concurrent_requests",
            "busy_slot_seconds",
            "started_at",
            "prompt_tokens",
            "completion_tokens",
            "calls_by_custom_id",
        ):
            assert key in stats, key
        assert stats["requests_total"] == 4
        assert stats["requests_by_route"] == {"/v1/chat/completions": 3, "/v1/models": 1}
        assert stats["responses_by_status"] == {"200": 4}
        assert stats["calls_by_custom_id"] == {"a": 2, "b": 1}
        assert stats["prompt_tokens"] == 3 * (len("hello") // 4 + 1)
        assert stats["completion_tokens"] > 0

        async with session.post(sim.root_url + "/_sim/reset") as response:
            reset = await response.json()
        assert reset["requests_total"] == 0
        assert reset["responses_by_status"] == {} and reset["calls_by_custom_id"] == {}
        assert reset["busy_slot_seconds"] == 0

        config = await get_json(session, sim.root_url + "/_sim/config")
        assert config["slots"] == 2 and config["error_rate_5xx"] == 0.0
        status, updated, _ = await post(session, sim.root_url + "/_sim/config", {"error_rate_5xx": 1.0})
        assert status == 200
        assert updated["error_rate_5xx"] == 1.0 and updated["slots"] == 2
        assert (await get_json(session, sim.root_url + "/_sim/config")) == updated
        # Live: the next request sees the fault, and turning it off takes effect just as fast.
        assert (await post(session, sim.url + CHAT, chat_body()))[0] in (500, 502, 503)
        await post(session, sim.root_url + "/_sim/config", {"error_rate_5xx": 0})
        assert (await post(session, sim.url + CHAT, chat_body()))[0] == 200

        status, payload, _ = await post(session, sim.root_url + "/_sim/config", {"no_such_key": 1})
        assert status == 400 and "no_such_key" in payload["error"]["message"]
        status, _, _ = await post(session, sim.root_url + "/_sim/config", {"slots": 0})
        assert status == 400


# --------------------------------------------------------------------------------------------
# Running it: thread and CLI
# --------------------------------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_simulator_thread_serves_sync_callers() -> None:
    with SimulatorThread(SimulatorConfig(models=("t",))) as thread:
        assert thread.url == f"http://127.0.0.1:{thread.port}/v1"
        assert _get(thread.url + "/models")["data"][0]["id"] == "t"
        assert thread.stats()["requests_total"] == 1
        assert thread.update_config(slots=4).slots == 4
        thread.reset()
        assert thread.stats()["requests_total"] == 0


def test_cli_prints_url_and_exits_cleanly_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "llmbatch.local.simulator",
        "--port",
        "0",
        "--slots",
        "2",
        "--config-json",
        '{"models": ["cli-model"], "slots": 5}',
    ]
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, "simulator printed nothing"
            line = json.loads(proc.stdout.readline())
            assert line["url"] == f"http://127.0.0.1:{line['port']}/v1"
            assert _get(line["url"] + "/models")["data"][0]["id"] == "cli-model"
            config = _get(line["url"].removesuffix("/v1") + "/_sim/config")
            assert config["slots"] == 2  # flags override --config-json
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert out == ""  # the url line is the only thing on stdout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
