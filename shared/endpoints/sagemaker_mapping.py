"""OpenAI request and answer shapes to and from the JSON of SageMaker LLM containers, as
pure functions.

A SageMaker real-time endpoint takes whatever JSON its container understands. Three
mappings cover the common containers, and every answer comes back in OpenAI's shape
(``chat.completion`` or ``text_completion``), so results look the same whatever served them:

``tgi``
    Hugging Face's Text Generation Inference container, native API:
    ``{"inputs": prompt, "parameters": {...}}`` → ``[{"generated_text": ..., "details": ...}]``
    (or the same object without the list).
``lmi``
    The DJL / Large Model Inference containers (vLLM, lmi-dist, TensorRT-LLM backends):
    the same request with ``stop_sequences`` for stops → ``{"generated_text": ..., "details": ...}``.
``openai``
    A container that serves OpenAI's Messages API itself (TGI ≥ 1.4, LMI ≥ 0.27): the body
    goes unchanged (``model`` filled in from the endpoint when it has none) and the answer is
    returned as it is.

Chat through ``tgi`` or ``lmi`` flattens the messages into one prompt with a plain role
template (see :func:`chat_prompt`). That suits base models and is serviceable for most
instruction-tuned ones, but a model's own chat template (its special tokens) is better
served through the ``openai`` mapping, where the container applies it.

Usage: TGI and LMI report the generated token count (``details.generated_tokens``, asked for
with ``details: true``) but not the prompt's. A count the container does not report is
estimated at one token per :data:`CHARS_PER_TOKEN` characters, and the answer's ``usage``
names the estimated fields (``"estimated": ["prompt_tokens"]``) so nobody mistakes them for
the model's own count.

Anything that cannot be translated faithfully (tools, several choices, logprobs, penalties)
is refused as a :class:`PermanentError` rather than silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Final, Protocol

from shared.endpoints.base import content_texts, invalid
from shared.endpoints.specs import CHAT_ROUTE, COMPLETIONS_ROUTE, SAGEMAKER_ROUTES, SageMakerMapping
from shared.errors import ConfigError, PermanentError
from shared.results import Usage

#: OpenAI's rule of thumb for English text; used only where the container reports no count.
CHARS_PER_TOKEN: Final = 4

#: Chat roles and the names the prompt template gives them.
ROLE_NAMES: Final[Mapping[str, str]] = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
}
#: Between turns of the flattened conversation.
TURN_SEPARATOR: Final = "\n\n"

#: TGI's and LMI's ``details.finish_reason`` → OpenAI's ``finish_reason``.
FINISH_REASONS: Final[Mapping[str, str]] = {
    "length": "length",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
}
#: LMI's finish reason for a generation that failed inside an HTTP 200 answer.
GENERATION_ERROR: Final = "error"

#: Request fields the native TGI/LMI APIs cannot express: refused when set to anything but
#: their neutral value (value: what to call them in the refusal).
_UNSUPPORTED_FIELDS: Final[Mapping[str, str]] = {
    "tools": "tool definitions",
    "tool_choice": "tool choice",
    "functions": "function definitions",
    "function_call": "function calling",
    "logprobs": "logprobs",
    "top_logprobs": "top_logprobs",
    "logit_bias": "logit_bias",
    "stream": "streaming",
    "echo": "echo",
    "suffix": "suffix",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_NEUTRAL_VALUES: Final[tuple[Any, ...]] = (None, False, 0, {}, [], "")


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Answer:
    """A container's answer in OpenAI's shape, with the usage to record."""

    body: Any
    usage: Usage


class ContainerMapping(Protocol):
    """How one kind of container is spoken to."""

    @property
    def routes(self) -> frozenset[str]:
        """The job routes this mapping can serve."""
        ...

    def request(self, route: str, body: Mapping[str, Any], *, default_model: str | None) -> dict[str, Any]:
        """The JSON to send for an OpenAI request body.

        Raises
        ------
        PermanentError
            ``invalid_request`` or ``unsupported_parameter``: the request cannot be sent.
        """
        ...

    def answer(
        self, route: str, body: Mapping[str, Any], raw: Any, *, model: str, request_id: str, created: int
    ) -> Answer:
        """The container's JSON answer ``raw`` to the request ``body``, in OpenAI's shape.

        Raises
        ------
        PermanentError
            ``unexpected_response`` when the answer is not of this container's shape (the
            endpoint's mapping is probably wrong), ``generation_error`` when the container
            reports that generation failed.
        """
        ...


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def chat_prompt(messages: Any) -> str:
    """The conversation as one prompt, each turn ``Role: text`` and a blank line between
    turns, ending with ``Assistant:`` for the model to continue::

        System: You are terse.

        User: Hello

        Assistant:

    ``system`` and ``developer`` messages are ``System``; only text content is accepted.
    """
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid(f"messages[{i}] must be an object")
        role = ROLE_NAMES.get(str(message.get("role")))
        if role is None:
            raise invalid(
                f"messages[{i}]: role {message.get('role')!r} cannot be put in a prompt "
                f"(supported: {', '.join(ROLE_NAMES)})",
                code="unsupported_parameter",
            )
        turns.append(f"{role}: {message_text(message.get('content'), where=f'messages[{i}]')}")
    turns.append(f"{ROLE_NAMES['assistant']}:")
    return TURN_SEPARATOR.join(turns)


def message_text(content: Any, *, where: str) -> str:
    return "".join(content_texts(content, where=where, destination="put in a prompt"))


def completion_prompt(prompt: Any) -> str:
    """A completions ``prompt``: one string (a list holding one string is the same)."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        raise invalid(
            "several prompts in one request cannot be sent to a SageMaker container; one prompt per request",
            code="unsupported_parameter",
        )
    raise invalid("'prompt' must be a string (token arrays cannot be sent to a SageMaker container)")


def refuse_unsupported(body: Mapping[str, Any], mapping: str) -> None:
    hint = (
        f"cannot be sent through the {mapping!r} mapping; "
        "a container serving the Messages API can take it through the 'openai' mapping"
    )
    for name, what in _UNSUPPORTED_FIELDS.items():
        if body.get(name) not in _NEUTRAL_VALUES:
            raise invalid(f"{what} {hint}", code="unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, Mapping) and response_format.get("type") == "text"
    ):
        raise invalid(f"response_format (JSON mode) {hint}", code="unsupported_parameter")
    for name in ("n", "best_of"):
        if body.get(name) not in (None, 1):
            raise invalid(f"{name} > 1 (several choices) {hint}", code="unsupported_parameter")


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise invalid(f"'{name}' must be a number")
    return float(value)


def generation_parameters(body: Mapping[str, Any], *, stop_field: str) -> dict[str, Any]:
    """TGI/LMI ``parameters`` for an OpenAI body.

    OpenAI's ``temperature: 0`` means greedy decoding: it becomes ``do_sample: false``
    with no temperature (TGI refuses a temperature of 0). A ``top_p`` of 1 or more filters
    nothing and is left out (TGI refuses it too). Any other temperature or ``top_p`` asks
    for sampling, which LMI only does with ``do_sample: true``. Without a temperature the
    container's own default decoding applies, as does its default ``max_new_tokens``
    without ``max_tokens``.
    """
    params: dict[str, Any] = {"details": True, "return_full_text": False}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise invalid("'max_tokens' must be a positive integer")
        params["max_new_tokens"] = max_tokens
    temperature = _number(body, "temperature")
    if temperature is not None:
        if temperature > 0:
            params["temperature"] = temperature
            params["do_sample"] = True
        else:
            params["do_sample"] = False
    top_p = _number(body, "top_p")
    if top_p is not None and 0 < top_p < 1 and params.get("do_sample") is not False:
        params["top_p"] = top_p
        params["do_sample"] = True
    stop = body.get("stop")
    if isinstance(stop, str):
        params[stop_field] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            params[stop_field] = stop
    elif stop is not None:
        raise invalid("'stop' must be a string or a list of strings")
    seed = body.get("seed")
    if seed is not None:
        params["seed"] = seed
    return params


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def generation(raw: Any) -> Mapping[str, Any]:
    """The one generation of a TGI/LMI answer: the object itself, or the only item of the
    one-item list TGI (and LMI's TGI-compatible mode) wraps it in."""
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, Mapping) or not isinstance(raw.get("generated_text"), str):
        raise PermanentError(
            f"the container's answer has no 'generated_text' (got {str(raw)[:200]}): "
            "is the endpoint's mapping right for its container?",
            code="unexpected_response",
        )
    return raw


def generated_usage(gen: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """OpenAI's ``usage`` for a generation, counts the container did not report estimated."""
    raw_details = gen.get("details")
    details: Mapping[str, Any] = raw_details if isinstance(raw_details, Mapping) else {}
    estimated = []
    prompt_tokens = _count(details.get("prompt_tokens"))  # LMI's legacy handlers report it
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(prompt)
        estimated.append("prompt_tokens")
    completion_tokens = _count(details.get("generated_tokens"))
    if completion_tokens is None:
        completion_tokens = estimate_tokens(gen["generated_text"])
        estimated.append("completion_tokens")
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if estimated:
        usage["estimated"] = estimated
    return usage


def _count(value: Any) -> int | None:
    """A token count the container reported, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def finish_reason(gen: Mapping[str, Any]) -> str:
    """OpenAI's finish reason; ``stop`` when the container gives none (LMI without details).

    Raises
    ------
    PermanentError
        ``generation_error`` when LMI reports a failed generation in a 200 answer. Its docs
        give a bad generation parameter as one cause, so a retry would fail again; the
        request is recorded and ``llmbatch retry`` sends it again once fixed.
    """
    details = gen.get("details")
    reason = details.get("finish_reason") if isinstance(details, Mapping) else None
    if reason == GENERATION_ERROR:
        raise PermanentError(
            "the container reports that generation failed (finish_reason 'error'); see the endpoint's logs",
            code="generation_error",
        )
    return FINISH_REASONS.get(str(reason), "stop")


def chat_completion(
    text: str, reason: str, usage: dict[str, Any], *, model: str, request_id: str, created: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
        "usage": usage,
    }


def text_completion(
    text: str, reason: str, usage: dict[str, Any], *, model: str, request_id: str, created: int
) -> dict[str, Any]:
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
        "usage": usage,
    }


# --------------------------------------------------------------------------------------------
# The mappings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateMapping:
    """TGI's and LMI's native ``{"inputs", "parameters"}`` API (see the module docstring)."""

    name: str
    #: The parameter that carries stop sequences: ``stop`` for TGI, ``stop_sequences`` for LMI.
    stop_field: str
    routes: frozenset[str] = SAGEMAKER_ROUTES["tgi"]

    def prompt(self, route: str, body: Mapping[str, Any]) -> str:
        if route == CHAT_ROUTE:
            return chat_prompt(body.get("messages"))
        if route == COMPLETIONS_ROUTE:
            return completion_prompt(body.get("prompt"))
        raise invalid(
            f"{route} cannot be sent through the {self.name!r} mapping (it serves {', '.join(sorted(self.routes))})",
            code="unsupported_route",
        )

    def request(self, route: str, body: Mapping[str, Any], *, default_model: str | None) -> dict[str, Any]:
        prompt = self.prompt(route, body)
        refuse_unsupported(body, self.name)
        return {"inputs": prompt, "parameters": generation_parameters(body, stop_field=self.stop_field)}

    def answer(
        self, route: str, body: Mapping[str, Any], raw: Any, *, model: str, request_id: str, created: int
    ) -> Answer:
        gen = generation(raw)
        reason = finish_reason(gen)
        usage = generated_usage(gen, self.prompt(route, body))
        text = gen["generated_text"]
        if route == CHAT_ROUTE:
            # After "Assistant:" the model's text starts with the space or newline that
            # separates it from the role: not part of the reply.
            answer = chat_completion(text.lstrip(), reason, usage, model=model, request_id=request_id, created=created)
        else:
            answer = text_completion(text, reason, usage, model=model, request_id=request_id, created=created)
        return Answer(answer, Usage(usage["prompt_tokens"], usage["completion_tokens"]))


@dataclass(frozen=True)
class PassThroughMapping:
    """A container that speaks OpenAI's API itself: nothing to translate."""

    routes: frozenset[str] = SAGEMAKER_ROUTES["openai"]

    def request(self, route: str, body: Mapping[str, Any], *, default_model: str | None) -> dict[str, Any]:
        if "model" not in body and default_model:
            return {**body, "model": default_model}
        return dict(body)

    def answer(
        self, route: str, body: Mapping[str, Any], raw: Any, *, model: str, request_id: str, created: int
    ) -> Answer:
        return Answer(raw, Usage.from_body(raw))


MAPPINGS: Final[Mapping[str, ContainerMapping]] = {
    "tgi": GenerateMapping("tgi", stop_field="stop"),
    "lmi": GenerateMapping("lmi", stop_field="stop_sequences", routes=SAGEMAKER_ROUTES["lmi"]),
    "openai": PassThroughMapping(),
}


def mapping_for(name: SageMakerMapping | str) -> ContainerMapping:
    """The mapping called ``name``.

    Raises
    ------
    ConfigError
        For a name no mapping has.
    """
    try:
        return MAPPINGS[name]
    except KeyError:
        raise ConfigError(f"unknown SageMaker mapping {name!r}: one of {', '.join(MAPPINGS)}") from None
