"""OpenAI request and answer shapes to and from Amazon Bedrock's, as pure functions.

A job written for an OpenAI-compatible server runs on Bedrock unchanged, and its results
look the same whatever endpoint served them:

- ``/v1/chat/completions`` becomes a Converse request, and the Converse answer becomes a
  ``chat.completion`` (text, finish reason, usage);
- ``/v1/embeddings`` becomes one Titan-style InvokeModel body per input string, and the
  vectors come back as an OpenAI embeddings list;
- a Bedrock batch record's ``modelInput`` goes unchanged; only its usage is read, from the
  token-count headers Bedrock sends with every InvokeModel answer.

Anything that cannot be translated faithfully is refused as a :class:`PermanentError`
rather than silently dropped (a tool call quietly ignored would be a wrong answer).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from shared.endpoints.base import content_texts, invalid
from shared.endpoints.specs import CHAT_ROUTE, EMBEDDINGS_ROUTE
from shared.errors import PermanentError
from shared.messages import BEDROCK_RECORD_ROUTE
from shared.results import Usage

#: HTTP status recorded for a request that cannot be translated (as a server would answer it).

#: OpenAI chat roles that carry the system prompt; Converse takes it apart from the messages.
SYSTEM_ROLES: Final = frozenset({"system", "developer"})
CONVERSATION_ROLES: Final = frozenset({"user", "assistant"})

#: Converse ``stopReason`` → OpenAI ``finish_reason``.
FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

#: Request fields with no Converse equivalent, refused with the reason (value: when it matters).
_UNSUPPORTED_CHAT_FIELDS: Final[Mapping[str, str]] = {
    "tools": "tool definitions",
    "tool_choice": "tool choice",
    "functions": "function definitions",
    "function_call": "function calling",
    "response_format": "response_format (JSON mode)",
    "logprobs": "logprobs",
    "stream": "streaming",
}

#: Token-count headers Bedrock sends with an InvokeModel answer.
INPUT_TOKENS_HEADER: Final = "x-amzn-bedrock-input-token-count"
OUTPUT_TOKENS_HEADER: Final = "x-amzn-bedrock-output-token-count"


def model_id(body: Mapping[str, Any], default_model: str | None) -> str:
    """The request's ``model``, else the endpoint's default model."""
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise invalid("no model: set the request's 'model' or the endpoint's default_model")
    return model


# --------------------------------------------------------------------------------------------
# Chat completions <-> Converse
# --------------------------------------------------------------------------------------------


def chat_to_converse(body: Mapping[str, Any], *, default_model: str | None = None) -> dict[str, Any]:
    """The keyword arguments of ``converse()`` for an OpenAI chat completions body.

    Raises
    ------
    PermanentError
        ``invalid_request`` for a malformed body, ``unsupported_parameter`` for a feature
        Converse cannot express.
    """
    _refuse_unsupported(body)
    system, messages = _split_messages(body.get("messages"))
    request: dict[str, Any] = {"modelId": model_id(body, default_model), "messages": messages}
    if system:
        request["system"] = system
    config = _inference_config(body)
    if config:
        request["inferenceConfig"] = config
    return request


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for name, what in _UNSUPPORTED_CHAT_FIELDS.items():
        if body.get(name) not in (None, False) and not (name == "response_format" and _is_text_format(body[name])):
            raise invalid(f"{what} cannot be sent to Bedrock's Converse API", code="unsupported_parameter")
    n = body.get("n")
    if n not in (None, 1):
        raise invalid("n > 1 is not supported by Bedrock's Converse API", code="unsupported_parameter")


def _is_text_format(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == "text"


def _split_messages(raw: Any) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """System prompts apart; consecutive turns of one role merged, as Converse wants
    user and assistant to alternate."""
    if not isinstance(raw, list) or not raw:
        raise invalid("'messages' must be a non-empty list")
    system: list[dict[str, str]] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, Mapping):
            raise invalid(f"messages[{i}] must be an object")
        role = message.get("role")
        texts = content_texts(message.get("content"), where=f"messages[{i}]", destination="sent to Bedrock")
        if role in SYSTEM_ROLES:
            system.extend({"text": t} for t in texts if t)
        elif role in CONVERSATION_ROLES:
            blocks = [{"text": t} for t in texts]
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)
            else:
                messages.append({"role": role, "content": blocks})
        else:
            raise invalid(f"messages[{i}]: role {role!r} is not supported on Bedrock", code="unsupported_parameter")
    if not messages:
        raise invalid("'messages' holds no user or assistant message")
    return system, messages


def _inference_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    elif stop not in (None, []):
        raise invalid("'stop' must be a string or a list of strings")
    # Types and ranges are checked by botocore against Bedrock's own model before sending.
    return config


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def converse_to_chat(response: Mapping[str, Any], *, model: str, request_id: str, created: int) -> dict[str, Any]:
    """A Converse answer as an OpenAI ``chat.completion`` body."""
    message = (response.get("output") or {}).get("message") or {}
    text = "".join(block["text"] for block in message.get("content", []) if isinstance(block.get("text"), str))
    usage = response.get("usage") or {}
    prompt, completion = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(response.get("stopReason")),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": int(usage.get("totalTokens", prompt + completion)),
        },
    }


# --------------------------------------------------------------------------------------------
# Embeddings <-> Titan-style InvokeModel
# --------------------------------------------------------------------------------------------


def embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    """The strings to embed: Titan embeds one text per call."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise invalid("'input' must be a string or a non-empty list of strings (token arrays are not supported)")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'")
    return inputs


def titan_embedding_request(text: str, body: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {"inputText": text}
    if body.get("dimensions") is not None:
        request["dimensions"] = body["dimensions"]
    return request


def titan_embedding(answer: Any) -> tuple[list[float], int]:
    """The vector and input token count of a Titan embeddings answer."""
    vector = answer.get("embedding") if isinstance(answer, Mapping) else None
    if not isinstance(vector, list):
        raise PermanentError(
            "the model's answer has no 'embedding': is it a Titan-style embeddings model?",
            code="unexpected_response",
        )
    return [float(x) for x in vector], int(answer.get("inputTextTokenCount", 0))


def embeddings_list(
    vectors: Sequence[tuple[list[float], int]], *, model: str, encoding_format: str = "float"
) -> dict[str, Any]:
    """OpenAI's embeddings answer, from (vector, input tokens) per input in order."""
    tokens = sum(count for _, count in vectors)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(vector, encoding_format)}
            for i, (vector, _) in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what OpenAI sends: little-endian float32, base64
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


# --------------------------------------------------------------------------------------------
# Bedrock batch records
# --------------------------------------------------------------------------------------------


def record_usage(headers: Mapping[str, str], answer: Any) -> Usage:
    """Usage of an InvokeModel answer: Bedrock's token-count headers, else the body's own
    ``usage`` (Anthropic's, say) when the headers are missing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    prompt, completion = lowered.get(INPUT_TOKENS_HEADER), lowered.get(OUTPUT_TOKENS_HEADER)
    if prompt is None and completion is None:
        return Usage.from_body(answer)
    try:
        return Usage(int(prompt or 0), int(completion or 0))
    except ValueError:
        return Usage.from_body(answer)


# --------------------------------------------------------------------------------------------
# Batch inference (CreateModelInvocationJob): InvokeModel bodies per model family, and back
# --------------------------------------------------------------------------------------------
# A Bedrock batch job runs every record through InvokeModel, so a chat request is written in
# the body format of its model's family (Converse's structure cannot be used there), and the
# record's ``modelOutput`` is that family's answer. A family with no known format is refused.

#: The Messages API version Bedrock's Anthropic models take in an InvokeModel body.
ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
#: Anthropic's Messages API needs ``max_tokens``; OpenAI's default is "as many as the model allows".
ANTHROPIC_DEFAULT_MAX_TOKENS: Final = 4096
#: Titan text ``completionReason`` → OpenAI ``finish_reason``.
TITAN_FINISH_REASONS: Final[Mapping[str, str]] = {
    "FINISH": "stop",
    "STOP_CRITERIA_MET": "stop",
    "LENGTH": "length",
    "CONTENT_FILTERED": "content_filter",
}


class BatchFormat(StrEnum):
    """How a record's ``modelInput`` was written, hence how its ``modelOutput`` is read."""

    ANTHROPIC_CHAT = "anthropic-chat"
    TITAN_TEXT_CHAT = "titan-text-chat"
    TITAN_EMBEDDING = "titan-embedding"
    #: A Bedrock record (``recordId``/``modelInput`` job line): sent and answered as it is.
    RECORD = "record"


@dataclass(frozen=True)
class BatchInput:
    """One request as a Bedrock batch record's model and ``modelInput``."""

    model: str
    model_input: dict[str, Any]
    format: BatchFormat


def _model_name(model: str) -> str:
    """A model id without an ARN's path (``.../inference-profile/us.anthropic.x`` → ``us.anthropic.x``)."""
    return model.rsplit("/", 1)[-1]


def is_anthropic_model(model: str) -> bool:
    name = _model_name(model)
    return name.startswith("anthropic.") or ".anthropic." in name


def is_titan_text_model(model: str) -> bool:
    return "amazon.titan-text" in _model_name(model)


def batch_input(route: str, body: Mapping[str, Any], *, default_model: str | None) -> BatchInput:
    """The batch record for a request on ``route`` (an OpenAI route or Bedrock's record route).

    Raises
    ------
    PermanentError
        ``invalid_request``/``unsupported_parameter`` for what the model's InvokeModel body
        cannot express (as online), ``unsupported_model`` for a chat model whose body format
        is not known here, ``unsupported_route`` for a route batch inference cannot serve.
    """
    if route == BEDROCK_RECORD_ROUTE:
        if not default_model:
            raise invalid("no default_model: Bedrock records name no model, the endpoint must")
        return BatchInput(default_model, dict(body), BatchFormat.RECORD)
    if route == EMBEDDINGS_ROUTE:
        model = model_id(body, default_model)
        inputs = embedding_inputs(body)
        if len(inputs) != 1:
            raise invalid(
                "batch inference embeds one text per record: send one 'input' string per request",
                code="unsupported_parameter",
            )
        return BatchInput(model, titan_embedding_request(inputs[0], body), BatchFormat.TITAN_EMBEDDING)
    if route != CHAT_ROUTE:
        raise invalid(f"Bedrock batch inference does not serve {route}", code="unsupported_route")
    request = chat_to_converse(body, default_model=default_model)  # every online check, once
    model = str(request["modelId"])
    if is_anthropic_model(model):
        return BatchInput(model, _anthropic_body(request), BatchFormat.ANTHROPIC_CHAT)
    if is_titan_text_model(model):
        return BatchInput(model, _titan_text_body(request), BatchFormat.TITAN_TEXT_CHAT)
    raise invalid(
        f"no InvokeModel body format is known here for {model!r} (Anthropic and Titan text are): "
        "write the job as Bedrock records (recordId/modelInput) for this model",
        code="unsupported_model",
    )


def _anthropic_body(request: Mapping[str, Any]) -> dict[str, Any]:
    config = request.get("inferenceConfig", {})
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": config.get("maxTokens", ANTHROPIC_DEFAULT_MAX_TOKENS),
        "messages": [
            {"role": m["role"], "content": [{"type": "text", "text": b["text"]} for b in m["content"]]}
            for m in request["messages"]
        ],
    }
    if request.get("system"):
        body["system"] = "\n\n".join(block["text"] for block in request["system"])
    for ours, theirs in (("temperature", "temperature"), ("topP", "top_p"), ("stopSequences", "stop_sequences")):
        if ours in config:
            body[theirs] = config[ours]
    return body


def _titan_text_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """Titan text takes one prompt: the conversation in its ``User:``/``Bot:`` convention."""
    turns = [
        f"{'User' if m['role'] == 'user' else 'Bot'}: {' '.join(b['text'] for b in m['content'])}"
        for m in request["messages"]
    ]
    system = "\n".join(block["text"] for block in request.get("system", []))
    prompt = "\n".join(([system, ""] if system else []) + turns + ["Bot:"])
    config = request.get("inferenceConfig", {})
    generation = {
        theirs: config[ours]
        for ours, theirs in (
            ("maxTokens", "maxTokenCount"),
            ("temperature", "temperature"),
            ("topP", "topP"),
            ("stopSequences", "stopSequences"),
        )
        if ours in config
    }
    return {"inputText": prompt, **({"textGenerationConfig": generation} if generation else {})}


def batch_answer(
    batch: BatchInput, output: Any, *, body: Mapping[str, Any], request_id: str, created: int
) -> dict[str, Any]:
    """A record's ``modelOutput`` in the OpenAI response shape of its route (a Bedrock
    record's answer as it is, as online).

    Raises
    ------
    PermanentError
        ``unexpected_response`` when the output is not the answer its format promises.
    """
    if batch.format is BatchFormat.RECORD:
        return output if isinstance(output, dict) else {"output": output}
    if not isinstance(output, Mapping):
        raise PermanentError("the model's output is not a JSON object", code="unexpected_response")
    if batch.format is BatchFormat.TITAN_EMBEDDING:
        return embeddings_list(
            [titan_embedding(output)], model=batch.model, encoding_format=body.get("encoding_format", "float")
        )
    if batch.format is BatchFormat.ANTHROPIC_CHAT:
        blocks = output.get("content")
        if not isinstance(blocks, list):
            raise PermanentError("the model's answer has no 'content' list", code="unexpected_response")
        text = "".join(b["text"] for b in blocks if isinstance(b, Mapping) and isinstance(b.get("text"), str))
        usage = output.get("usage") or {}
        prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        reason = finish_reason(output.get("stop_reason"))
    else:
        results = output.get("results")
        if not isinstance(results, list) or not results or not isinstance(results[0], Mapping):
            raise PermanentError("the model's answer has no 'results'", code="unexpected_response")
        text = str(results[0].get("outputText", ""))
        prompt, completion = int(output.get("inputTextTokenCount", 0)), int(results[0].get("tokenCount", 0))
        reason = TITAN_FINISH_REASONS.get(str(results[0].get("completionReason")), "stop")
    return _chat_completion(text, reason, prompt, completion, model=batch.model, request_id=request_id, created=created)


def _chat_completion(
    text: str, reason: str, prompt: int, completion: int, *, model: str, request_id: str, created: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
