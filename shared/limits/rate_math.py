"""The arithmetic of the global rate limit, without any I/O.

A limit of L units per minute (requests, or tokens) is a token bucket that refills at L/60
units a second and holds at most one second's worth (``BURST_S``). The bucket is stored as
one number per limit: the moment it was (or will be) empty, ``empty_at``. Its level at
``now`` is ``(now - empty_at) * rate``, capped at the capacity, so nothing needs to refill
it: the stored time does (the generic cell rate algorithm, GCRA, written as a bucket).

Taking ``n`` units moves ``empty_at`` forward by ``n / rate``. That is one conditional
UpdateItem with no read first, in one of two forms:

* the bucket is full (``empty_at`` before ``now - capacity / rate``): set it to
  ``now - capacity / rate + n / rate``, on condition it is still that old;
* otherwise add ``n / rate`` to it, on condition it lies between that floor and
  ``now - n / rate`` (the level covers ``n``). Concurrent takers of this form commute, so a
  busy bucket shared by many invocations rarely fails a condition.

When the level does not cover ``n``, the wait is ``empty_at + n / rate - now``: the time
the refill needs, known without asking DynamoDB again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.messages import BEDROCK_RECORD_ROUTE
from shared.results import Usage

MICROS_PER_S = 1_000_000
US_PER_MINUTE = 60 * MICROS_PER_S
#: The bucket holds at most this many seconds of its rate: the largest burst it grants, and
#: the largest lease. One second keeps bursts within what endpoints that enforce limits
#: over short windows (1 or 10 s) accept, while a lease still covers many calls.
BURST_S = 1.0
#: Roughly four characters to a token, as OpenAI's and the simulator's estimates count.
CHARS_PER_TOKEN = 4
#: Output tokens assumed for a generation that names no ``max_tokens``; the usage returned
#: corrects it.
DEFAULT_MAX_TOKENS = 256

#: Where a request names the most output tokens it may be given, in order of precedence:
#: OpenAI's fields (``max_completion_tokens``, then the older ``max_tokens``; Bedrock's
#: Converse and SageMaker's mappings read the same two).
OPENAI_TOKEN_FIELDS: tuple[tuple[str, ...], ...] = (("max_completion_tokens",), ("max_tokens",))
#: ... and in a Bedrock record's native input, each model family's own: Anthropic, Mistral,
#: Cohere and AI21 ``max_tokens``; Meta Llama ``max_gen_len``; Amazon Titan Text
#: ``textGenerationConfig.maxTokenCount``; Amazon Nova ``inferenceConfig.max_new_tokens``.
BEDROCK_RECORD_TOKEN_FIELDS: tuple[tuple[str, ...], ...] = (
    ("max_tokens",),
    ("max_gen_len",),
    ("textGenerationConfig", "maxTokenCount"),
    ("inferenceConfig", "max_new_tokens"),
)

#: The bucket's attributes, one per kind of limit.
REQUESTS_ATTR = "requests_empty_at_us"
TOKENS_ATTR = "tokens_empty_at_us"


@dataclass(frozen=True)
class RateLimits:
    """Requests and tokens per minute allowed at one endpoint (None: no limit)."""

    rpm: int | None = None
    tpm: int | None = None

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True)
class Dimension:
    """One limit of the bucket: its stored attribute and its units per minute."""

    attribute: str
    per_minute: int

    @property
    def capacity(self) -> int:
        """The most units the bucket holds, and so the largest single take."""
        return max(1, math.floor(self.per_minute * BURST_S / 60))

    def span_us(self, units: int) -> int:
        """How long the bucket takes to refill ``units`` (rounded up: never too generous)."""
        return math.ceil(units * US_PER_MINUTE / self.per_minute)


def dimensions(limits: RateLimits) -> tuple[Dimension | None, Dimension | None]:
    """(requests, tokens) dimensions of ``limits``; None where there is no limit."""
    return (
        Dimension(REQUESTS_ATTR, limits.rpm) if limits.rpm else None,
        Dimension(TOKENS_ATTR, limits.tpm) if limits.tpm else None,
    )


@dataclass(frozen=True)
class Step:
    """One dimension's part of a conditional take."""

    attribute: str
    #: The bucket was full: ``empty_at`` is set to ``new_us`` (condition: older than ``floor_us``);
    #: otherwise ``add_us`` is added (condition: between ``floor_us`` and ``ceil_us``).
    full: bool
    floor_us: int
    ceil_us: int
    add_us: int

    @property
    def new_us(self) -> int:
        return self.floor_us + self.add_us


@dataclass(frozen=True)
class TakePlan:
    """What to do next to take units from the bucket."""

    #: Attributes the stored bucket lacks: create them (empty as of now) before any take.
    create: tuple[str, ...] = ()
    #: Above zero: the level does not cover the take yet; try again after this long.
    wait_us: int = 0
    #: The conditional update to make (when nothing is to be created and no wait is due).
    steps: tuple[Step, ...] = ()


def plan_take(state: Mapping[str, int], wants: Sequence[tuple[Dimension, int]], now_us: int) -> TakePlan:
    """How to take ``units`` of each ``(dimension, units)`` given the last known stored
    ``state`` (attribute -> empty_at in microseconds).

    A dimension the bucket does not hold yet is created empty: an invocation cannot know
    how much of the endpoint's own limit others used just before, so it assumes all of it.
    """
    wants = [(d, n) for d, n in wants if n > 0]
    missing = tuple(d.attribute for d, _ in wants if d.attribute not in state)
    if missing:
        return TakePlan(create=missing)
    steps: list[Step] = []
    wait_us = 0
    for dim, units in wants:
        if units > dim.capacity:
            raise ValueError(f"cannot take {units} at once from a bucket of {dim.capacity}")
        empty_at = state[dim.attribute]
        floor_us = now_us - dim.span_us(dim.capacity)
        add_us = dim.span_us(units)
        ceil_us = now_us - add_us
        if empty_at < floor_us:
            steps.append(Step(dim.attribute, True, floor_us, ceil_us, add_us))
        elif empty_at <= ceil_us:
            steps.append(Step(dim.attribute, False, floor_us, ceil_us, add_us))
        else:
            wait_us = max(wait_us, empty_at - ceil_us)
    if wait_us:
        return TakePlan(wait_us=wait_us)
    return TakePlan(steps=tuple(steps))


def apply_steps(state: Mapping[str, int], steps: Sequence[Step]) -> dict[str, int]:
    """The stored state after ``steps`` succeeded (what DynamoDB returns as ALL_NEW)."""
    out = dict(state)
    for s in steps:
        out[s.attribute] = s.new_us if s.full else out[s.attribute] + s.add_us
    return out


# ---- what a request costs -------------------------------------------------------------------


@dataclass(frozen=True)
class TokenEstimate:
    """Tokens a request is charged before it is sent."""

    prompt: int
    #: Output tokens it may generate: its max_tokens times its choices, or None where it
    #: names none (then DEFAULT_MAX_TOKENS is charged until the usage is known).
    output_cap: int | None

    @property
    def total(self) -> int:
        return self.prompt + (DEFAULT_MAX_TOKENS if self.output_cap is None else self.output_cap)

    def charged(self, usage: Usage) -> int:
        """What the call really cost against a TPM limit, from the usage returned.

        Endpoints count the prompt and the *requested* output up front (OpenAI's and the
        simulator's rule), so the estimate's prompt part is replaced by the real prompt
        count and a named max_tokens stays; where none was named, what was generated counts.
        """
        prompt = usage.prompt_tokens or self.prompt
        output = usage.completion_tokens if self.output_cap is None else self.output_cap
        return prompt + output


def _text_chars(value: Any) -> int:
    """Characters of prompt text in a content value: a string, a list of strings or of
    content parts; token arrays count one token each (returned as 4 characters)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return CHARS_PER_TOKEN
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return _text_chars(value.get("text", ""))
    return 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _prompts(value: Any) -> int:
    """How many prompts a completions ``prompt`` holds (a list of strings or token arrays)."""
    if isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        return len(value)
    return 1


def token_fields(route: str) -> tuple[tuple[str, ...], ...]:
    """The fields a request on ``route`` names its output cap in (none for embeddings)."""
    if route.endswith("/embeddings"):
        return ()
    return BEDROCK_RECORD_TOKEN_FIELDS if route == BEDROCK_RECORD_ROUTE else OPENAI_TOKEN_FIELDS


def named_token_fields(route: str, body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Each output-cap field ``body`` holds, dotted (``inferenceConfig.max_new_tokens``),
    with its value as given (``None`` for a JSON null), in order of precedence."""
    named = []
    for path in token_fields(route):
        holder: Any = body
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, Mapping) else None
        if isinstance(holder, Mapping) and path[-1] in holder:
            named.append((".".join(path), holder[path[-1]]))
    return named


def output_cap(route: str, body: Mapping[str, Any]) -> int:
    """The output tokens the request asks for at most (its first field with a positive whole
    number), 0 when it names none."""
    return next((c for _, value in named_token_fields(route, body) if (c := _count(value))), 0)


def estimate_tokens(route: str, body: Mapping[str, Any]) -> TokenEstimate:
    """A request's tokens before sending it: prompt characters / 4, plus max_tokens."""
    n = _count(body.get("n")) or 1
    cap = output_cap(route, body)
    if route.endswith("/chat/completions"):
        messages = body.get("messages")
        chars = (
            sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
            if isinstance(messages, list)
            else 0
        )
        return TokenEstimate(_tokens(chars), cap * n if cap else None)
    if route.endswith("/completions"):
        prompt = body.get("prompt")
        return TokenEstimate(_tokens(_text_chars(prompt)), cap * n * _prompts(prompt) if cap else None)
    if route.endswith("/embeddings"):
        return TokenEstimate(_tokens(_text_chars(body.get("input"))), 0)
    # Any other body (a provider's native input): its JSON text, and max_tokens if named.
    return TokenEstimate(_tokens(len(json.dumps(body, default=str))), cap or None)


def _tokens(chars: int) -> int:
    return chars // CHARS_PER_TOKEN + 1
