"""An OpenAI-compatible endpoint simulator for tests, benchmarks and fault drills.

llmbatch's workers talk to "an OpenAI-compatible endpoint" (OpenAI itself, vLLM, TGI, ...).
Testing them against a stub that answers instantly and never fails proves very little: the
interesting behaviour (back-pressure, retries, deadlines, rate limits, hung connections) only
shows up against a server that behaves like a real one under load.  This simulator does:

* it serves a bounded number of requests at once (``slots``, like a vLLM batch) and queues the
  rest FIFO, so concurrency beyond capacity turns into latency, not into free throughput;
* latency grows with prompt and output size, with seeded jitter and optional slow tails;
* RPM/TPM limits are enforced with continuously refilling token buckets and answered the way
  OpenAI answers them (429 + ``Retry-After`` + ``x-ratelimit-*`` headers);
* faults (429, 5xx, hangs) can be injected at a rate, or targeted at specific requests with
  text markers such as ``[[sim:fail-first-2:503]]`` so integration tests are deterministic;
* everything it did is counted at ``GET /_sim/stats`` and its config can be changed live with
  ``POST /_sim/config`` (drills that turn faults on mid-run).

It binds to 127.0.0.1 only: it has no real authentication and must never face a network.

Run it with ``python -m llmbatch.local.simulator.core --port 0 --slots 8``; it prints one JSON line
``{"url": "http://127.0.0.1:PORT/v1", "port": PORT}`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import struct
import sys
import threading
import time
import types
import typing
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "CUSTOM_ID_HEADER",
    "MISSING_MODEL",
    "SIMULATOR_KEY",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "SimulatorThread",
    "SlotPool",
    "build_app",
    "config_from_args",
    "format_duration",
    "main",
    "start_simulator",
]

#: The model name that always answers 404 ``model_not_found`` (every other name is served).
MISSING_MODEL = "missing-model"
#: Request header whose value is counted per call in ``calls_by_custom_id``.
CUSTOM_ID_HEADER = "x-llmbatch-custom-id"
#: The only interface the simulator listens on (it has no real auth; never expose it).
LOCALHOST = "127.0.0.1"

_EMBEDDING_DIM_DEFAULT = 8
_MAX_EMBEDDING_DIM = 4096
_MAX_N = 128
_CLIENT_MAX_SIZE = 32 * 1024 * 1024
_MARKER_RE = re.compile(r"\[\[sim:([^\]]*)\]\]")
_FIVE_XX_CODES = (500, 502, 503)
_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "batch", "queue", "lambda", "token",
    "model", "answer", "result", "record", "stream", "signal", "vector", "matrix", "cloud", "river",
    "stone", "light", "paper", "orbit", "pixel", "amber", "cedar", "delta", "ember", "frost",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated endpoint behaves.

    Frozen so a live update (``POST /_sim/config``) swaps the whole object atomically: a
    request in flight sees one consistent config, never half of an update.
    """

    #: Requests served at once; the rest wait in a FIFO queue (like a vLLM batch size).
    slots: int = 8
    #: Fixed part of every request's service time.
    base_latency_s: float = 0.05
    #: Service time per (estimated) prompt token.
    per_prompt_token_s: float = 0.0
    #: Service time per generated token.
    per_output_token_s: float = 0.001
    #: Uniform +- jitter added to the service time (seeded, never below zero in total).
    jitter_s: float = 0.01
    #: Requests per minute; ``None`` = unlimited.
    rpm_limit: int | None = None
    #: Tokens (prompt estimate + max_tokens) per minute; ``None`` = unlimited.
    tpm_limit: int | None = None
    #: Probability of an injected 429, independent of the limits.
    error_rate_429: float = 0.0
    #: Probability of an injected 500/502/503 (the code is drawn from the seeded RNG too).
    error_rate_5xx: float = 0.0
    #: Probability that a request hangs for ``hang_s`` while holding its slot.
    hang_rate: float = 0.0
    #: How long a hang lasts (default: an hour, i.e. until the client gives up).
    hang_s: float = 3600.0
    #: Probability of a slow tail: ``slow_tail_s`` extra service time.
    slow_tail_rate: float = 0.0
    slow_tail_s: float = 2.0
    #: Seeds every random choice: fault draws, jitter, generated text, embeddings.
    seed: int = 0
    #: max_tokens used when the request gives neither max_tokens nor max_completion_tokens.
    max_output_tokens_default: int = 16
    #: Retry-After sent with injected (not limit-driven) 429s.
    retry_after_s: float = 1.0
    #: When set, ``Authorization: Bearer <api_key>`` is required on /v1 routes.
    api_key: str | None = None
    #: Names listed by ``GET /v1/models`` (any name but ``missing-model`` is served).
    models: tuple[str, ...] = ("sim-model",)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be >= 1")
        for name in ("error_rate_429", "error_rate_5xx", "hang_rate", "slow_tail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in (
            "base_latency_s",
            "per_prompt_token_s",
            "per_output_token_s",
            "jitter_s",
            "hang_s",
            "slow_tail_s",
            "retry_after_s",
        ):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if self.max_output_tokens_default < 1:
            raise ValueError("max_output_tokens_default must be >= 1")
        if not self.models:
            raise ValueError("models must name at least one model")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulatorConfig:
        """Build a config from JSON-like data; missing keys take their defaults.

        Unknown keys and wrong types raise ``ValueError`` rather than being ignored: a drill
        that mistypes ``error_rate_5xx`` should fail loudly, not run without its fault.
        """
        if not isinstance(data, Mapping):
            raise ValueError("simulator config must be a JSON object")
        hints = _config_hints()
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise ValueError(f"unknown simulator config key(s): {', '.join(unknown)}")
        kwargs = {name: _coerce_config_value(name, hints[name], value) for name, value in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``models`` as a list); ``from_dict(to_dict())`` round-trips."""
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        return data

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with ``changes`` (a partial dict, validated like ``from_dict``) applied."""
        if not isinstance(changes, Mapping):
            raise ValueError("simulator config changes must be a JSON object")
        return SimulatorConfig.from_dict({**self.to_dict(), **changes})


def _config_hints() -> dict[str, Any]:
    # Resolved lazily: with `from __future__ import annotations` the field types are strings.
    return typing.get_type_hints(SimulatorConfig)


def _coerce_config_value(name: str, hint: Any, value: Any) -> Any:
    """Check one JSON value against a config field's type (int -> float is allowed)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = next(arg for arg in args if arg is not type(None))
        return _coerce_config_value(name, inner, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list of strings, got {value!r}")
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"{name} must be a list of strings, got {value!r}")
        return tuple(value)
    raise ValueError(f"{name}: unsupported config type {hint!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Capacity: FIFO slots
# --------------------------------------------------------------------------------------------


class SlotPool:
    """A FIFO-fair counting semaphore that also keeps the peaks the stats report.

    Written out rather than using ``asyncio.Semaphore`` because fairness matters here (a
    barging newcomer would distort queueing latency in benchmarks), the capacity must be
    resizable live, and a waiter cancelled right after being handed a slot must give it back.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._in_use = 0
        self._waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.peak_in_use = 0
        self.peak_waiting = 0
        self.peak_total = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        """Take a slot, waiting in arrival order; cancellation never leaks a slot."""
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            self._note_peaks()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._waiting += 1
        self._note_peaks()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed over just before the cancellation landed: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
                self._waiting -= 1
            raise

    def release(self) -> None:
        """Give a slot back, handing it straight to the oldest waiter (no barging)."""
        if self._in_use <= 0:
            raise RuntimeError("SlotPool.release() without a matching acquire()")
        self._in_use -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        """Change capacity live; shrinking lets in-flight requests finish, growing wakes waiters."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._wake()

    def reset_peaks(self) -> None:
        self.peak_in_use = self._in_use
        self.peak_waiting = self._waiting
        self.peak_total = self._in_use + self._waiting

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            fut = self._waiters.popleft()
            if fut.done():  # cancelled; its owner fixes the waiting count when it resumes
                continue
            self._in_use += 1
            self._waiting -= 1
            fut.set_result(None)
        self._note_peaks()

    def _note_peaks(self) -> None:
        self.peak_in_use = max(self.peak_in_use, self._in_use)
        self.peak_waiting = max(self.peak_waiting, self._waiting)
        self.peak_total = max(self.peak_total, self._in_use + self._waiting)


# --------------------------------------------------------------------------------------------
# Rate limits: continuously refilling token buckets (what OpenAI effectively enforces)
# --------------------------------------------------------------------------------------------


class _Bucket:
    """``limit`` units per minute, refilled continuously, starting full.

    A bucket (rather than a fixed one-minute window) spreads the allowance over the minute
    the way OpenAI does, so a client pacing itself from the headers sees a steady rate.
    """

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self.updated = now

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(float(self.limit), self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0 = now, ``inf`` = never: cost exceeds the limit)."""
        self.refill(now)
        if cost > self.limit:
            return math.inf
        if self.level >= cost:
            return 0.0
        return (cost - self.level) / self.rate

    def remaining(self, now: float) -> int:
        self.refill(now)
        return max(0, math.floor(self.level))

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        self.refill(now)
        return (self.limit - self.level) / self.rate


def format_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    total = round(seconds, 3)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") or "0"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}s"
    if minutes:
        return f"{int(minutes)}m{sec_text}s"
    return f"{sec_text}s"


def _retry_headers(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(math.ceil(wait_s)), "retry-after-ms": str(math.ceil(wait_s * 1000))}


# --------------------------------------------------------------------------------------------
# Errors and request parsing
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """An OpenAI-shaped error answer, raised from anywhere in a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or _error_type(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error"


def _invalid(message: str, param: str | None) -> _ApiError:
    return _ApiError(400, message, type_="invalid_request_error", param=param)


def _estimate_tokens(text: str) -> int:
    """Deterministic ~4-characters-per-token estimate (what limits and usage are counted in)."""
    return len(text) // 4 + 1


def _stable_seed(*parts: Any) -> int:
    """A seed from JSON-able parts: same request content -> same output, across processes."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")


@dataclass
class _Work:
    """What a generation request asks for, after validation."""

    model: str
    texts: list[str]  # every piece of prompt text (marker scan, fail-first key)
    prompt_tokens: int
    output_cap: int  # max tokens per choice (0 for embeddings)
    n_outputs: int  # number of generated choices (0 for embeddings)
    build: Callable[[SimulatorConfig], tuple[dict[str, Any], int]]  # -> (body, completion tokens)

    @property
    def rate_cost_tokens(self) -> int:
        # OpenAI counts the prompt plus the *requested* max output against TPM up front.
        return self.prompt_tokens + self.output_cap * self.n_outputs


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _invalid("you must provide a model parameter", "model")
    if not isinstance(model, str) or not model:
        raise _invalid(f"{model!r} is not a valid model name - 'model'", "model")
    if model == MISSING_MODEL:
        raise _ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            type_="invalid_request_error",
            code="model_not_found",
        )
    return model


def _positive_int(body: Mapping[str, Any], name: str, default: int | None, upper: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{value!r} is not valid for '{name}': expected an integer >= 1", name)
    if upper is not None and value > upper:
        raise _invalid(f"{value} is greater than the maximum of {upper} - '{name}'", name)
    return value


def _reject_stream(body: Mapping[str, Any]) -> None:
    if body.get("stream"):
        raise _invalid("stream=true is not supported by the llmbatch simulator", "stream")


def _output_cap(body: Mapping[str, Any], config: SimulatorConfig) -> int:
    cap = _positive_int(body, "max_completion_tokens", None)
    if cap is None:
        cap = _positive_int(body, "max_tokens", None)
    return cap if cap is not None else config.max_output_tokens_default


def _message_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces: list[str] = []
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid(
                    "each content part must be an object with a 'type'",
                    f"messages[{index}].content[{part_index}]",
                )
            if part["type"] == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _invalid(
                        "a text content part needs a string 'text'",
                        f"messages[{index}].content[{part_index}].text",
                    )
                pieces.append(text)
        return "\n".join(pieces)
    raise _invalid("content must be a string, an array of content parts or null", f"messages[{index}].content")


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _generate_words(seed: int, cap: int) -> tuple[str, int, str]:
    """Deterministic text for one choice: (text, completion tokens, finish_reason).

    The natural length comes from the seed and max_tokens only truncates it, so raising
    max_tokens extends an answer instead of replacing it (as a real model would).
    """
    rng = random.Random(seed)
    natural = rng.randint(4, 48)
    count = min(cap, natural)
    words = [rng.choice(_WORDS) for _ in range(count)]
    return " ".join(words), count, ("length" if natural > cap else "stop")


def _parse_chat(body: Mapping[str, Any], config: SimulatorConfig) -> _Work:
    model = _require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise _invalid("Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array", "messages")
    texts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid("each message must be an object", f"messages[{index}]")
        role = message.get("role")
        if role not in _ROLES:
            raise _invalid(f"{role!r} is not a valid role", f"messages[{index}].role")
        texts.append(_message_text(message.get("content"), index))
    _reject_stream(body)
    cap = _output_cap(body, config)
    n = _positive_int(body, "n", 1, _MAX_N) or 1
    response_format = body.get("response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
    prompt_tokens = sum(_estimate_tokens(text) for text in texts)

    def build(cfg: SimulatorConfig) -> tuple[dict[str, Any], int]:
        choices: list[dict[str, Any]] = []
        total = 0
        for choice_index in range(n):
            seed = _stable_seed(cfg.seed, "chat", model, messages, json_mode, choice_index)
            text, count, finish = _generate_words(seed, cap)
            content = json.dumps({"answer": text}) if json_mode else text
            total += count
            choices.append(
                {
                    "index": choice_index,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        response = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_llmbatch_sim",
            "choices": choices,
            "usage": _usage(prompt_tokens, total),
        }
        return response, total

    return _Work(model, texts, prompt_tokens, cap, n, build)


def _prompt_items(value: Any, param: str) -> list[str | list[int]]:
    """OpenAI's accepted prompt/input shapes: str, [str], [int] (tokens), [[int]]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [list(value)]
        if all(
            isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
            for item in value
        ):
            return [list(item) for item in value]
    raise _invalid(
        f"'{param}' must be a string, an array of strings, or token arrays (non-empty)",
        param,
    )


def _item_tokens(item: str | list[int]) -> int:
    return _estimate_tokens(item) if isinstance(item, str) else len(item)


def _parse_completion(body: Mapping[str, Any], config: SimulatorConfig) -> _Work:
    model = _require_model(body)
    if "prompt" not in body or body.get("prompt") is None:
        raise _invalid("Missing required parameter: 'prompt'.", "prompt")
    prompts = _prompt_items(body["prompt"], "prompt")
    _reject_stream(body)
    cap = _output_cap(body, config)
    n = _positive_int(body, "n", 1, _MAX_N) or 1
    echo = bool(body.get("echo"))
    prompt_tokens = sum(_item_tokens(item) for item in prompts)
    texts = [item for item in prompts if isinstance(item, str)]

    def build(cfg: SimulatorConfig) -> tuple[dict[str, Any], int]:
        choices: list[dict[str, Any]] = []
        total = 0
        for prompt_index, prompt in enumerate(prompts):
            for choice_index in range(n):
                seed = _stable_seed(cfg.seed, "completion", model, prompt, choice_index)
                text, count, finish = _generate_words(seed, cap)
                if echo and isinstance(prompt, str):
                    text = prompt + text
                total += count
                choices.append(
                    {
                        "text": text,
                        "index": prompt_index * n + choice_index,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                )
        response = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_llmbatch_sim",
            "choices": choices,
            "usage": _usage(prompt_tokens, total),
        }
        return response, total

    return _Work(model, texts, prompt_tokens, cap, n * len(prompts), build)


def _parse_embeddings(body: Mapping[str, Any], config: SimulatorConfig) -> _Work:
    model = _require_model(body)
    if "input" not in body or body.get("input") is None:
        raise _invalid("Missing required parameter: 'input'.", "input")
    inputs = _prompt_items(body["input"], "input")
    if any(item == "" for item in inputs):
        raise _invalid("'input' cannot contain empty strings", "input")
    dim = _positive_int(body, "dimensions", _EMBEDDING_DIM_DEFAULT, _MAX_EMBEDDING_DIM) or _EMBEDDING_DIM_DEFAULT
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _invalid("encoding_format must be 'float' or 'base64'", "encoding_format")
    prompt_tokens = sum(_item_tokens(item) for item in inputs)
    texts = [item for item in inputs if isinstance(item, str)]

    def build(cfg: SimulatorConfig) -> tuple[dict[str, Any], int]:
        data: list[dict[str, Any]] = []
        for index, item in enumerate(inputs):
            vector = _embedding(_stable_seed(cfg.seed, "embedding", model, item), dim)
            embedding: list[float] | str = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        response = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return response, 0

    return _Work(model, texts, prompt_tokens, 0, 0, build)


def _embedding(seed: int, dim: int) -> list[float]:
    """A unit-length vector from the seed (so cosine similarity behaves like a real model's)."""
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --------------------------------------------------------------------------------------------
# Markers: per-request fault targeting
# --------------------------------------------------------------------------------------------


@dataclass
class _Markers:
    status: int | None = None
    fail_first: tuple[int, int] | None = None  # (N, status)
    hang: bool = False
    sleep_s: float = 0.0


def _has_fail_first(text: str) -> bool:
    return any(m.group(1).strip().startswith("fail-first-") for m in _MARKER_RE.finditer(text))


def _parse_markers(texts: Sequence[str]) -> _Markers:
    """Read ``[[sim:...]]`` markers; an unknown marker is a 400 so typos can't pass silently."""
    markers = _Markers()
    for text in texts:
        for match in _MARKER_RE.finditer(text):
            spec = match.group(1).strip()
            if spec == "hang":
                markers.hang = True
            elif spec.startswith("sleep="):
                try:
                    seconds = float(spec.removeprefix("sleep="))
                except ValueError:
                    seconds = -1.0
                if not (math.isfinite(seconds) and seconds >= 0):
                    raise _invalid(f"bad simulator marker [[sim:{spec}]]: sleep needs seconds >= 0", None)
                markers.sleep_s += seconds
            elif spec.startswith("fail-first-"):
                count_text, _, status_text = spec.removeprefix("fail-first-").partition(":")
                if not (count_text.isdigit() and _is_error_status(status_text)):
                    raise _invalid(f"bad simulator marker [[sim:{spec}]]: use [[sim:fail-first-N:STATUS]]", None)
                if markers.fail_first is None:
                    markers.fail_first = (int(count_text), int(status_text))
            elif _is_error_status(spec):
                if markers.status is None:
                    markers.status = int(spec)
            else:
                raise _invalid(f"unknown simulator marker [[sim:{spec}]]", None)
    return markers


def _is_error_status(text: str) -> bool:
    return text.isdigit() and len(text) == 3 and 400 <= int(text) <= 599


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class Simulator:
    """State of one simulated endpoint: config, slots, limits, RNGs and counters.

    All of it lives on one event loop, so plain attributes are safe without locks.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.slots = SlotPool(self.config.slots)
        self._request_bucket: _Bucket | None = None
        self._token_bucket: _Bucket | None = None
        self._configure_limits(self.config, fresh=True)
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._busy_since: dict[object, float] = {}  # slot holder -> monotonic start
        self._reset_state()

    # -- configuration ------------------------------------------------------------------------

    def update_config(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a partial config live; in-flight requests keep the config they started with."""
        new = self.config.updated(changes)
        old = self.config
        self.config = new
        self.slots.resize(new.slots)
        self._configure_limits(new, fresh=False)
        if new.seed != old.seed:
            self._seed_rngs()
        return new

    def _configure_limits(self, config: SimulatorConfig, *, fresh: bool) -> None:
        now = time.monotonic()
        self._request_bucket = self._rebuild_bucket(self._request_bucket, config.rpm_limit, now, fresh)
        self._token_bucket = self._rebuild_bucket(self._token_bucket, config.tpm_limit, now, fresh)

    @staticmethod
    def _rebuild_bucket(old: _Bucket | None, limit: int | None, now: float, fresh: bool) -> _Bucket | None:
        if limit is None:
            return None
        if old is None or fresh:
            return _Bucket(limit, now)
        if old.limit == limit:
            return old
        # A changed limit keeps what was already used (clamped), like a plan change would.
        old.refill(now)
        bucket = _Bucket(limit, now)
        bucket.level = min(float(limit), old.level)
        return bucket

    def _seed_rngs(self) -> None:
        # Two streams so that turning jitter on doesn't move which requests get faults.
        self._fault_rng = random.Random(_stable_seed(self.config.seed, "faults"))
        self._latency_rng = random.Random(_stable_seed(self.config.seed, "latency"))

    # -- counters -----------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.started_at = time.time()
        self.requests_total = 0
        self.requests_by_route: dict[str, int] = {}
        self.responses_by_status: dict[str, int] = {}
        self.calls_by_custom_id: dict[str, int] = {}
        self.rate_limited_429 = 0
        self.injected_5xx = 0
        self.hangs = 0
        self.slow_tails = 0
        self.client_disconnects = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._busy_done_s = 0.0
        now = time.monotonic()
        for holder in self._busy_since:  # in-flight requests count as busy from the reset on
            self._busy_since[holder] = now
        self._fail_first_calls: dict[str, int] = {}
        self.slots.reset_peaks()
        self._seed_rngs()

    def reset(self) -> None:
        """Zero counters, reseed the RNGs, refill the limits and forget fail-first counts.

        Reseeding too means a drill that resets between runs replays the same fault sequence.
        """
        self._reset_state()
        self._configure_limits(self.config, fresh=True)

    def stats(self) -> dict[str, Any]:
        """The counters as JSON; utilisation = busy_slot_seconds / (slots * (now - started_at))."""
        mono = time.monotonic()
        busy = self._busy_done_s + sum(mono - start for start in self._busy_since.values())
        return {
            "requests_total": self.requests_total,
            "requests_by_route": dict(self.requests_by_route),
            "responses_by_status": dict(self.responses_by_status),
            "rate_limited_429": self.rate_limited_429,
            "injected_5xx": self.injected_5xx,
            "hangs": self.hangs,
            "slow_tails": self.slow_tails,
            "client_disconnects": self.client_disconnects,
            "slots": self.slots.capacity,
            "in_flight": self.slots.in_use,
            "queued": self.slots.waiting,
            "max_in_flight": self.slots.peak_in_use,
            "max_queued": self.slots.peak_waiting,
            "max_concurrent_requests": self.slots.peak_total,
            "busy_slot_seconds": busy,
            "started_at": self.started_at,
            "now": time.time(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls_by_custom_id": dict(self.calls_by_custom_id),
        }

    def _count(self, counter: dict[str, int], key: str) -> None:
        counter[key] = counter.get(key, 0) + 1

    # -- rate limits --------------------------------------------------------------------------

    def _take_rate_limit(self, work: _Work) -> None:
        """Consume from both buckets atomically, or raise OpenAI's 429 (consuming nothing)."""
        now = time.monotonic()
        token_cost = work.rate_cost_tokens
        checks: list[tuple[str, _Bucket, float]] = []
        if self._request_bucket is not None:
            checks.append(("requests", self._request_bucket, 1.0))
        if self._token_bucket is not None:
            checks.append(("tokens", self._token_bucket, float(token_cost)))
        waits = [(kind, bucket, cost, bucket.wait_s(cost, now)) for kind, bucket, cost in checks]
        blocked = [entry for entry in waits if entry[3] > 0]
        if not blocked:
            for _, bucket, cost, _ in waits:
                bucket.level -= cost
            return
        kind, bucket, cost, _ = blocked[0]
        wait = max(entry[3] for entry in blocked)
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        if math.isinf(wait):
            # Like OpenAI: a request bigger than the whole per-minute budget can never succeed.
            raise _ApiError(
                429,
                f"Request too large for {work.model} on {unit}: Limit {bucket.limit}, "
                f"Requested {int(cost)}. Please reduce your prompt or max_tokens.",
                type_=kind,
                code="rate_limit_exceeded",
                headers=_retry_headers(60.0),
            )
        used = bucket.limit - bucket.remaining(now)
        raise _ApiError(
            429,
            f"Rate limit reached for {work.model} in organization org-llmbatch-sim on {unit}: "
            f"Limit {bucket.limit}, Used {used}, Requested {int(cost)}. "
            f"Please try again in {format_duration(wait)}.",
            type_=kind,
            code="rate_limit_exceeded",
            headers=_retry_headers(wait),
        )

    def rate_limit_headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for whichever limits are configured (none when unlimited)."""
        now = time.monotonic()
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", self._request_bucket), ("tokens", self._token_bucket)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining(now))
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.reset_s(now))
        return headers

    # -- request handling ---------------------------------------------------------------------

    async def handle_generation(
        self, request: web.Request, parse: Callable[[Mapping[str, Any], SimulatorConfig], _Work]
    ) -> web.Response:
        """Validate, apply markers/limits/faults, wait for a slot, 'generate', answer."""
        config = self.config
        body = await _read_json(request)
        work = parse(body, config)
        markers = _parse_markers(work.texts)
        self._apply_status_markers(work, markers, config)
        self._take_rate_limit(work)
        self._apply_injected_faults(config)

        # Latency draws happen now, in arrival order, so the sequence is fixed by the seed.
        jitter = self._latency_rng.uniform(-config.jitter_s, config.jitter_s)
        slow = self._latency_rng.random() < config.slow_tail_rate
        hang = self._latency_rng.random() < config.hang_rate or markers.hang

        response, completion_tokens = work.build(config)
        delay = (
            config.base_latency_s
            + config.per_prompt_token_s * work.prompt_tokens
            + config.per_output_token_s * completion_tokens
            + jitter
        )
        delay = max(0.0, delay) + markers.sleep_s
        if slow:
            delay += config.slow_tail_s

        arrived = time.monotonic()
        await self.slots.acquire()
        token = object()
        self._busy_since[token] = time.monotonic()
        try:
            if slow:
                self.slow_tails += 1
            if hang:
                self.hangs += 1
                await asyncio.sleep(config.hang_s)
            await asyncio.sleep(delay)
        finally:
            started = self._busy_since.pop(token, None)
            if started is not None:
                self._busy_done_s += time.monotonic() - started
            self.slots.release()
        self.prompt_tokens += work.prompt_tokens
        self.completion_tokens += completion_tokens
        headers = {"openai-processing-ms": str(round((time.monotonic() - arrived) * 1000))}
        return web.json_response(response, headers=headers)

    def _apply_status_markers(self, work: _Work, markers: _Markers, config: SimulatorConfig) -> None:
        status: int | None = markers.status
        label = f"[[sim:{status}]]"
        if status is None and markers.fail_first is not None:
            limit, fail_status = markers.fail_first
            # Counted per marked text, not per whole request, so a marked input keeps its count
            # whichever other inputs a client packs into the same call with it.
            key = "\x00".join(text for text in work.texts if _has_fail_first(text))
            calls = self._fail_first_calls.get(key, 0) + 1
            self._fail_first_calls[key] = calls
            if calls <= limit:
                status = fail_status
                label = f"[[sim:fail-first-{limit}:{fail_status}]] (call {calls} of {limit})"
        if status is not None:
            raise self._injected_error(status, f"Simulated error from marker {label}", config)

    def _apply_injected_faults(self, config: SimulatorConfig) -> None:
        # Always three draws per request: changing one rate never shifts the other faults.
        draw_429 = self._fault_rng.random()
        draw_5xx = self._fault_rng.random()
        code = self._fault_rng.choice(_FIVE_XX_CODES)
        if draw_429 < config.error_rate_429:
            raise self._injected_error(429, "Simulated rate limit (error_rate_429)", config)
        if draw_5xx < config.error_rate_5xx:
            raise self._injected_error(code, "Simulated server error (error_rate_5xx)", config)

    def _injected_error(self, status: int, message: str, config: SimulatorConfig) -> _ApiError:
        if status == 429:
            return _ApiError(
                429, message, type_="requests", code="rate_limit_exceeded", headers=_retry_headers(config.retry_after_s)
            )
        if status >= 500:
            self.injected_5xx += 1
            return _ApiError(status, f"{message}: {status} {_reason(status)}", type_="server_error")
        return _ApiError(status, message)

    # -- middleware ---------------------------------------------------------------------------

    async def dispatch(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Counting, auth and OpenAI-shaped errors for every /v1 route, in one place."""
        if not request.path.startswith("/v1/") and request.path != "/v1":
            try:
                return await handler(request)
            except _ApiError as exc:
                return exc.response()
        task = asyncio.current_task()
        if task is not None:
            self._handler_tasks.add(task)
        self.requests_total += 1
        resource = request.match_info.route.resource
        self._count(self.requests_by_route, resource.canonical if resource is not None else "<unmatched>")
        custom_id = request.headers.get(CUSTOM_ID_HEADER)
        if custom_id is not None:
            self._count(self.calls_by_custom_id, custom_id)
        response: web.StreamResponse
        try:
            self._check_auth(request)
            response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:  # router 404/405, body too large, ...
            response = _ApiError(exc.status, exc.reason or "error").response()
        except asyncio.CancelledError:
            if not self._closing:
                self.client_disconnects += 1
            raise
        finally:
            if task is not None:
                self._handler_tasks.discard(task)
        self._count(self.responses_by_status, str(response.status))
        if response.status == 429:
            self.rate_limited_429 += 1
        response.headers.update(self.rate_limit_headers())
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return response

    def _check_auth(self, request: web.Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                type_="invalid_request_error",
                code="missing_api_key" if not header else "invalid_api_key",
            )
        if given.strip() != key:
            raise _ApiError(
                401,
                "Incorrect API key provided.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )

    async def on_shutdown(self, _app: web.Application) -> None:
        """Cancel handlers still sleeping or hanging so shutdown is prompt, not hang_s long."""
        self._closing = True
        for task in list(self._handler_tasks):
            task.cancel()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPException as exc:
        raise _ApiError(exc.status, exc.reason or "could not read the request body") from exc
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
        ) from exc
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.", None)
    return body


# --------------------------------------------------------------------------------------------
# The aiohttp application
# --------------------------------------------------------------------------------------------

SIMULATOR_KEY: web.AppKey[Simulator] = web.AppKey("llmbatch_simulator", Simulator)


def build_app(config: SimulatorConfig | None = None) -> web.Application:
    """The aiohttp app; its :class:`Simulator` is at ``app[SIMULATOR_KEY]``.

    Serve it with ``handler_cancellation=True`` (as :func:`start_simulator` does) so a client
    that gives up frees its slot instead of leaving a ghost request running.
    """
    sim = Simulator(config)

    @web.middleware
    async def simulator_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await sim.dispatch(request, handler)

    app = web.Application(middlewares=[simulator_middleware], client_max_size=_CLIENT_MAX_SIZE)
    app[SIMULATOR_KEY] = sim

    async def chat(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_chat)

    async def completions(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_completion)

    async def embeddings(request: web.Request) -> web.Response:
        return await sim.handle_generation(request, _parse_embeddings)

    async def list_models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_model_object(m) for m in sim.config.models]})

    async def get_model(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model == MISSING_MODEL:
            _require_model({"model": model})
        return web.json_response(_model_object(model))

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    async def post_reset(_request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response(sim.stats())

    async def get_config(_request: web.Request) -> web.Response:
        return web.json_response(sim.config.to_dict())

    async def post_config(request: web.Request) -> web.Response:
        changes = await _read_json(request)
        try:
            new = sim.update_config(changes)
        except ValueError as exc:
            raise _invalid(str(exc), None) from exc
        return web.json_response(new.to_dict())

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.on_shutdown.append(sim.on_shutdown)
    return app


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "llmbatch-simulator"}


@dataclass
class RunningSimulator:
    """A simulator listening on 127.0.0.1; ``url`` is the OpenAI base URL (ends in ``/v1``)."""

    runner: web.AppRunner
    app: web.Application
    host: str
    port: int
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """Base for the control routes: ``root_url + "/_sim/stats"``."""
        return f"http://{self.host}:{self.port}"

    @property
    def simulator(self) -> Simulator:
        return self.app[SIMULATOR_KEY]

    async def close(self) -> None:
        """Stop listening and cancel hung requests; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.runner.cleanup()


async def start_simulator(
    config: SimulatorConfig | None = None, host: str = LOCALHOST, port: int = 0
) -> RunningSimulator:
    """Start serving on ``host:port`` (0 = any free port) and return once listening."""
    app = build_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(runner=runner, app=app, host=host, port=bound_port)


class SimulatorThread:
    """A simulator on its own event loop in a daemon thread, for synchronous code and tests.

    ``start()`` returns the ``/v1`` URL once the server listens; ``stop()`` shuts it down.
    Also a context manager.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, port: int = 0) -> None:
        self._config = config
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: RunningSimulator | None = None

    @property
    def running(self) -> RunningSimulator:
        if self._running is None:
            raise RuntimeError("SimulatorThread is not started")
        return self._running

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def root_url(self) -> str:
        return self.running.root_url

    @property
    def port(self) -> int:
        return self.running.port

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            raise RuntimeError("SimulatorThread already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._running = loop.run_until_complete(start_simulator(self._config, port=self._port))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _drain_loop(loop)

        self._thread = threading.Thread(target=run, name="llmbatch-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("simulator did not start in time")
        if errors:
            self._thread = None
            raise errors[0]
        return self.url

    def _call(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        if self._loop is None or self._running is None:
            raise RuntimeError("SimulatorThread is not started")

        async def wrapper() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        """The same dict as ``GET /_sim/stats``, read on the server's loop."""

        async def read() -> dict[str, Any]:
            return self.running.simulator.stats()

        return typing.cast(dict[str, Any], self._call(read()))

    def reset(self) -> None:
        async def do() -> None:
            self.running.simulator.reset()

        self._call(do())

    def update_config(self, **changes: Any) -> SimulatorConfig:
        async def do() -> SimulatorConfig:
            return self.running.simulator.update_config(changes)

        return typing.cast(SimulatorConfig, self._call(do()))

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, running = self._thread, self._loop, self._running
        if thread is None or loop is None:
            return
        if running is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._running = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _drain_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel leftovers and close the loop without 'task was destroyed' warnings."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_cli_value(name: str, hint: Any, text: str) -> Any:
    """Turn a flag's text into JSON-like data for ``SimulatorConfig.from_dict``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        if text.strip().lower() in ("none", "null", ""):
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError as exc:
        raise ValueError(f"--{name.replace('_', '-')}: {exc}") from exc
    if origin is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmbatch.local.simulator.core",
        description="OpenAI-compatible endpoint simulator (listens on 127.0.0.1 only).",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument(
        "--config-json", default=None, help="SimulatorConfig as JSON; individual flags override its keys"
    )
    for config_field in dataclasses.fields(SimulatorConfig):
        parser.add_argument(
            f"--{config_field.name.replace('_', '-')}",
            dest=config_field.name,
            default=argparse.SUPPRESS,
            metavar=config_field.name.upper(),
            help=f"default: {config_field.default!r}"
            + (" (comma-separated)" if config_field.name == "models" else "")
            + (" ('none' = unlimited)" if config_field.name.endswith("_limit") else ""),
        )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Defaults, then ``--config-json``, then individual flags."""
    data: dict[str, Any] = {}
    if args.config_json:
        loaded = json.loads(args.config_json)
        if not isinstance(loaded, dict):
            raise ValueError("--config-json must be a JSON object")
        data.update(loaded)
    hints = _config_hints()
    for name, hint in hints.items():
        if hasattr(args, name):
            data[name] = _parse_cli_value(name, hint, getattr(args, name))
    return SimulatorConfig.from_dict(data)


async def _serve(config: SimulatorConfig, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    running = await start_simulator(config, port=port)
    try:
        print(json.dumps({"url": running.url, "port": running.port}), flush=True)
        await stop.wait()
    finally:
        await running.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; prints ``{"url": ..., "port": ...}`` once listening."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(config, args.port))
    except KeyboardInterrupt:  # a second Ctrl-C before the handler was installed
        pass
    except OSError as exc:
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
