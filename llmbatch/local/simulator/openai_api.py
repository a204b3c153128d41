"""OpenAI request parsing and the fake answers: errors in OpenAI's shape, chat,
completion and embedding bodies checked as OpenAI checks them, seeded words and vectors."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmbatch.local.simulator.config import MISSING_MODEL, SimulatorConfig

_EMBEDDING_DIM_DEFAULT = 8
_MAX_EMBEDDING_DIM = 4096
_MAX_N = 128


_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "batch", "queue", "lambda", "token",
    "model", "answer", "result", "record", "stream", "signal", "vector", "matrix", "cloud", "river",
    "stone", "light", "paper", "orbit", "pixel", "amber", "cedar", "delta", "ember", "frost",
)  # fmt: skip


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
