"""Request packing: single-input requests that could share one model call are sent together.

``/v1/embeddings`` takes a list ``input`` and ``/v1/completions`` a list ``prompt``; a server
answers one list call far more cheaply than the same inputs one by one (one request against
the RPM limit, one HTTP round trip, one forward pass batched by the server). The records of
one SQS batch all arrive at once, so :class:`Packer` is a micro-batcher: requests that share
endpoint, route, caller's group and every body parameter but the input wait together until
``max_inputs`` of them are there or ``max_wait_s`` (a few milliseconds: only long enough for
the batch's gather to schedule them) has passed, then go out as one call whose answer is
split back to each request.

The rules, as users see them:

* **What is packed.** Only a single input (a string, a token list, or a list of exactly one
  of those; strings and token lists are packed apart, as servers take a list of either but
  not a mix) on a route that takes lists, with no parameter that changes the answer's shape:
  ``n`` absent or 1, no ``stream``, and for completions no ``echo``, ``best_of`` or
  ``logprobs``. Anything else is sent as it is, alone. A group that holds one request when it
  flushes sends that request's own body, unchanged.
* **Splitting.** Embeddings: ``data[i]`` with ``index == i`` belongs to input ``i``;
  completions: ``choices[i]`` with ``index == i`` (``n`` is 1, so one choice per prompt). Each
  request gets the whole answer (``id``, ``model``, ``created``, ... kept) with only its own
  result, re-indexed to 0, and its share of ``usage``.
* **Usage shares.** Servers report one total. Prompt tokens are split in proportion to each
  input's size: its length in tokens for token lists (exact), in characters for strings.
  Completion tokens: a choice that ended with ``finish_reason == "length"`` used exactly the
  request's ``max_tokens``; the rest of the total is split by the length of each remaining
  choice's text. Shares are whole numbers that add up to the totals (largest remainder).
* **Errors.** A transient failure of the packed call (429, 5xx, timeout, ...) is given to
  every member, so they are all retried. A permanent one (4xx) is not: one bad input (too
  long, say) makes the server reject the whole list, so each member is then sent alone and
  gets its own answer. An answer that does not hold exactly one result per input is likewise
  followed by one call per member. Either way, when the one-by-one calls show the server
  cannot take lists (it answered them all, or the list answer was malformed), packing stops
  for that endpoint and route for the life of the :class:`Packer`.
* **Deadlines.** The packed call gets the smallest time left of its members, so no member's
  call outlives its own timeout. A member whose waiter is cancelled (its deadline passed)
  leaves: before the flush its input is not sent; after it, the others still get their
  answers; when every member has left, the call is cancelled.

Pure asyncio: the call itself goes through a ``send`` function, so the worker decides how a
call takes its concurrency slot and its timeout.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.apportion import apportion
from shared.endpoints.base import Endpoint, EndpointReply
from shared.errors import PermanentError, TransientError
from shared.results import Usage

log = logging.getLogger("llmbatch.packing")

#: How long a group waits for company once its first request has arrived. The records of an
#: SQS batch are started together, so this need only cover a few turns of the event loop.
DEFAULT_MAX_WAIT_S = 0.005

#: A single input: text, or a list of token ids.
PromptItem = str | list[int]


class UnpackError(TransientError):
    """A packed answer that does not hold exactly one result per input."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="unpack_mismatch")


@dataclass(frozen=True)
class OutgoingCall:
    """One call for ``send`` to make: a lone request, or several packed into one body."""

    endpoint: Endpoint
    route: str
    body: dict[str, Any]
    timeout_s: float
    #: The requests answered by this call, in input order.
    custom_ids: tuple[str, ...]
    #: The caller's own grouping key (the worker: the job id); requests of different groups
    #: are never packed together.
    group: Hashable = None

    @property
    def custom_id(self) -> str:
        """The id sent with the call (the first member's: a header cannot hold 2048 ids)."""
        return self.custom_ids[0]


#: Makes one endpoint call; raises PermanentError or TransientError like ``Endpoint.call``.
Send = Callable[[OutgoingCall], Awaitable[EndpointReply]]


async def send_directly(call: OutgoingCall) -> EndpointReply:
    """The plain ``send``: straight to the endpoint, no slot, no deadline of its own."""
    return await call.endpoint.call(call.route, call.body, timeout_s=call.timeout_s, custom_id=call.custom_id)


@dataclass
class PackingStats:
    #: Calls handed to ``send``, packed or not.
    calls: int = 0
    #: Of those, calls carrying more than one input, and the inputs they carried.
    packed_calls: int = 0
    packed_inputs: int = 0
    #: Packed calls whose members were then sent one by one (a 4xx or a malformed answer).
    fallbacks: int = 0


# --------------------------------------------------------------------------------------------
# Which requests can be packed
# --------------------------------------------------------------------------------------------

#: The values of a parameter that leave an answer's shape alone (absent counts as None).
_NEUTRAL_STREAM: Mapping[str, tuple[Any, ...]] = {"stream": (None, False)}


@dataclass(frozen=True)
class RouteShape:
    """Where a route keeps its inputs and its results."""

    #: The body field that takes a list of inputs.
    input_field: str
    #: The answer field holding one result per input, each with an ``index``.
    results_field: str
    #: Parameters that must hold one of these values for a request to be packed.
    neutral: Mapping[str, tuple[Any, ...]]


PACKABLE_ROUTES: Mapping[str, RouteShape] = {
    "/v1/embeddings": RouteShape("input", "data", _NEUTRAL_STREAM),
    "/v1/completions": RouteShape(
        "prompt",
        "choices",
        {**_NEUTRAL_STREAM, "n": (None, 1), "best_of": (None, 1), "echo": (None, False), "logprobs": (None,)},
    ),
}


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def single_item(value: Any) -> PromptItem | None:
    """The one input of ``value`` (a string, a token list, or a list of one of those)."""
    if isinstance(value, str):
        return value
    if _is_tokens(value):
        return list(value)
    if isinstance(value, list) and len(value) == 1:
        only = value[0]
        if isinstance(only, str):
            return only
        if _is_tokens(only):
            return list(only)
    return None


@dataclass(frozen=True)
class _Request:
    """A packable request, taken apart."""

    shape: RouteShape
    item: PromptItem
    #: The body without its input: equal templates (and route, endpoint, group) pack together.
    template: dict[str, Any]
    template_key: str


def _packable(route: str, body: Any) -> _Request | None:
    shape = PACKABLE_ROUTES.get(route)
    if shape is None or not isinstance(body, dict):
        return None
    item = single_item(body.get(shape.input_field))
    if item is None:
        return None
    if any(body.get(name) not in allowed for name, allowed in shape.neutral.items()):
        return None
    template = {k: v for k, v in body.items() if k != shape.input_field}
    try:
        key = json.dumps(template, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return _Request(shape, item, template, key)


# --------------------------------------------------------------------------------------------
# Splitting an answer
# --------------------------------------------------------------------------------------------


def input_weight(item: PromptItem) -> float:
    """An input's size: tokens of a token list, characters of a string. A call never mixes
    the two, so within one call these are in proportion to the tokens the server counts."""
    return float(len(item))


def completion_shares(total: int, results: Sequence[Mapping[str, Any]], max_tokens: Any) -> list[int]:
    """Completion tokens per choice: ``max_tokens`` for a choice cut off at that length, the
    rest by text length. When the fixed part cannot fit the total, all by text length."""
    cut = [isinstance(max_tokens, int) and max_tokens > 0 and r.get("finish_reason") == "length" for r in results]
    fixed = sum(max_tokens for c in cut if c) if any(cut) else 0
    free = [i for i, c in enumerate(cut) if not c]
    if fixed > total or (not free and fixed != total):
        cut, fixed, free = [False] * len(results), 0, list(range(len(results)))
    shares = [max_tokens if c else 0 for c in cut]
    texts = [results[i].get("text") for i in free]
    for i, share in zip(
        free, apportion(total - fixed, [len(t) if isinstance(t, str) else 0 for t in texts]), strict=True
    ):
        shares[i] = share
    return shares


def _results_in_input_order(body: Mapping[str, Any], shape: RouteShape, count: int) -> list[dict[str, Any]]:
    results = body.get(shape.results_field)
    if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
        got = len(results) if isinstance(results, list) else "no list of"
        raise UnpackError(f"packed call of {count} inputs answered with {got} {shape.results_field}")
    if all("index" not in r for r in results):
        return list(results)  # a server that leaves the index out answers in input order
    ordered: list[dict[str, Any] | None] = [None] * count
    for r in results:
        index = r.get("index")
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < count
            or ordered[index] is not None
        ):
            raise UnpackError(f"packed call of {count} inputs answered with {shape.results_field} index {index!r}")
        ordered[index] = r
    return [r for r in ordered if r is not None]


def split_reply(
    reply: EndpointReply, shape: RouteShape, items: Sequence[PromptItem], template: Mapping[str, Any]
) -> list[EndpointReply]:
    """One reply per input, in input order (see the module docstring for the rules).

    Raises
    ------
    UnpackError
        The answer does not hold exactly one result per input.
    """
    body = reply.body
    if not isinstance(body, dict):
        raise UnpackError("packed call answered without a JSON object")
    results = _results_in_input_order(body, shape, len(items))
    prompt = apportion(reply.usage.prompt_tokens, [input_weight(i) for i in items])
    completion = completion_shares(reply.usage.completion_tokens, results, template.get("max_tokens"))
    usage_in_body = body.get("usage")
    replies = []
    for result, p, c in zip(results, prompt, completion, strict=True):
        own: dict[str, Any] = {**body, shape.results_field: [{**result, "index": 0}]}
        if isinstance(usage_in_body, dict):
            own["usage"] = {"prompt_tokens": p, "total_tokens": p + c}
            if "completion_tokens" in usage_in_body:
                own["usage"]["completion_tokens"] = c
        replies.append(
            EndpointReply(status_code=reply.status_code, body=own, usage=Usage(p, c), request_id=reply.request_id)
        )
    return replies


# --------------------------------------------------------------------------------------------
# The micro-batcher
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Member:
    custom_id: str
    body: dict[str, Any]
    item: PromptItem
    #: Loop time by which this request's call must be over.
    deadline: float
    future: asyncio.Future[EndpointReply]


@dataclass(eq=False)
class _Group:
    key: tuple[Hashable, ...]
    endpoint: Endpoint
    route: str
    request: _Request  # the first member's: shape and template are the same for all
    group: Hashable
    members: list[_Member] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None


class ListSupport:
    """Which endpoint routes were found unable to take packed inputs.

    Kept apart from :class:`Packer` so a container can keep what it learned across
    invocations (each invocation has a Packer of its own, bound to its deadline)."""

    def __init__(self) -> None:
        self._refused: set[tuple[str, str]] = set()

    def takes_lists(self, endpoint: Endpoint, route: str) -> bool:
        return (endpoint.name, route) not in self._refused

    def refuses_lists(self, endpoint: Endpoint, route: str) -> None:
        if self.takes_lists(endpoint, route):
            log.warning(
                "endpoint does not take packed inputs; packing off for it",
                extra={"endpoint": endpoint.name, "route": route},
            )
        self._refused.add((endpoint.name, route))


def _copy_error(error: BaseException) -> BaseException:
    """Each member raises its own copy (same type, code, status, Retry-After): one exception
    object raised in many tasks would pile all their tracebacks onto itself."""
    try:
        clone = copy.copy(error)
    except Exception:
        return error
    clone.__cause__ = error.__cause__
    return clone


class Packer:
    """Packs single-input requests into shared calls; see the module docstring.

    Parameters
    ----------
    send
        Makes one call (default :func:`send_directly`). The worker passes its own, which takes
        a concurrency slot and clamps the timeout to the invocation's deadline.
    max_inputs
        The most inputs per call; 1 turns packing off. ``set_cap`` changes it later.
    max_wait_s
        How long the first request of a group waits for others.
    endpoint_caps
        A cap of its own for some endpoints, by name (the endpoint's configured
        ``max_inputs_per_call``), in place of ``max_inputs``.
    list_support
        What is known of which endpoints refuse lists (shared between packers; default: a
        new one for this packer).

    Example
    -------
    >>> packer = Packer(max_inputs=16)
    >>> reply = await packer.call(endpoint, "/v1/embeddings", {"model": "m", "input": "hi"},
    ...                           timeout_s=30, custom_id="r1")
    """

    def __init__(
        self,
        send: Send = send_directly,
        *,
        max_inputs: int = 1,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        list_support: ListSupport | None = None,
        endpoint_caps: Mapping[str, int] | None = None,
    ) -> None:
        self._send = send
        self._cap = 1
        self.set_cap(max_inputs)
        self._endpoint_caps = dict(endpoint_caps or {})
        self._max_wait_s = max_wait_s
        self._open: dict[tuple[Hashable, ...], _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.list_support = list_support or ListSupport()
        self.stats = PackingStats()

    @property
    def cap(self) -> int:
        return self._cap

    def set_cap(self, max_inputs: int) -> None:
        """Change the most inputs per call (applies to groups from now on)."""
        if isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 1:
            raise ValueError(f"max_inputs must be a whole number >= 1, got {max_inputs!r}")
        self._cap = max_inputs

    def cap_for(self, endpoint: Endpoint) -> int:
        return self._endpoint_caps.get(endpoint.name, self._cap)

    def packs(self, endpoint: Endpoint, route: str, body: Any) -> bool:
        """Whether :meth:`call` would let this request wait to share a call."""
        return self._packable(endpoint, route, body) is not None

    async def call(
        self,
        endpoint: Endpoint,
        route: str,
        body: dict[str, Any],
        *,
        timeout_s: float,
        custom_id: str,
        group: Hashable = None,
    ) -> EndpointReply:
        """This request's answer, from a packed call or a call of its own.

        Raises
        ------
        PermanentError, TransientError
            As ``Endpoint.call`` (and whatever else ``send`` raises); a packed call's
            transient error is raised to each of its members.
        """
        request = self._packable(endpoint, route, body)
        if request is None:
            return await self._send_alone(endpoint, route, body, timeout_s, custom_id, group)
        loop = asyncio.get_running_loop()
        member = _Member(custom_id, body, request.item, loop.time() + timeout_s, loop.create_future())
        # Token lists and strings never share a call: servers refuse a list that mixes them.
        key = (id(endpoint), route, group, request.template_key, isinstance(request.item, list))
        grp = self._open.get(key)
        if grp is None:
            grp = _Group(key, endpoint, route, request, group)
            grp.timer = loop.call_later(self._max_wait_s, self._flush, grp)
            self._open[key] = grp
        grp.members.append(member)
        member.future.add_done_callback(lambda fut: self._left(grp, member, fut))
        if len(grp.members) >= self.cap_for(endpoint):
            self._flush(grp)
        # Awaited directly: cancelling this waiter cancels the future, which _left notices.
        return await member.future

    async def aclose(self) -> None:
        """Cancel what is still waiting or in flight (the end of an invocation)."""
        for grp in list(self._open.values()):
            if grp.timer is not None:
                grp.timer.cancel()
            for m in grp.members:
                m.future.cancel()
        self._open.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------------

    def _packable(self, endpoint: Endpoint, route: str, body: Any) -> _Request | None:
        if self.cap_for(endpoint) <= 1 or not self.list_support.takes_lists(endpoint, route):
            return None
        return _packable(route, body)

    async def _send_alone(
        self, endpoint: Endpoint, route: str, body: dict[str, Any], timeout_s: float, custom_id: str, group: Hashable
    ) -> EndpointReply:
        self.stats.calls += 1
        return await self._send(OutgoingCall(endpoint, route, body, timeout_s, (custom_id,), group))

    def _left(self, grp: _Group, member: _Member, fut: asyncio.Future[EndpointReply]) -> None:
        if not fut.cancelled():
            return
        if self._open.get(grp.key) is grp:  # not sent yet: its input is not sent at all
            grp.members.remove(member)
            if not grp.members:
                if grp.timer is not None:
                    grp.timer.cancel()
                del self._open[grp.key]
        elif grp.task is not None and all(m.future.done() for m in grp.members):
            grp.task.cancel()  # nobody is waiting for this call any more

    def _flush(self, grp: _Group) -> None:
        if self._open.get(grp.key) is not grp:
            return
        del self._open[grp.key]
        if grp.timer is not None:
            grp.timer.cancel()
        members = [m for m in grp.members if not m.future.done()]
        grp.members = members
        if not members:
            return
        grp.task = asyncio.get_running_loop().create_task(self._run(grp, members))
        self._tasks.add(grp.task)
        grp.task.add_done_callback(self._tasks.discard)

    async def _run(self, grp: _Group, members: list[_Member]) -> None:
        try:
            if len(members) == 1:
                await self._settle(members[0], self._alone(grp, members[0]))
            else:
                await self._packed(grp, members)
        except asyncio.CancelledError:
            for m in members:
                m.future.cancel()
            raise

    async def _alone(self, grp: _Group, m: _Member) -> EndpointReply:
        timeout_s = max(0.0, m.deadline - asyncio.get_running_loop().time())
        return await self._send_alone(grp.endpoint, grp.route, m.body, timeout_s, m.custom_id, grp.group)

    @staticmethod
    async def _settle(m: _Member, outcome: Awaitable[EndpointReply]) -> bool:
        """Hand ``outcome`` to the member; True when it was an answer."""
        try:
            reply = await outcome
        except Exception as e:
            if not m.future.done():
                m.future.set_exception(e)
            return False
        if not m.future.done():
            m.future.set_result(reply)
        return True

    async def _packed(self, grp: _Group, members: list[_Member]) -> None:
        shape, template = grp.request.shape, grp.request.template
        items = [m.item for m in members]
        loop = asyncio.get_running_loop()
        timeout_s = max(0.0, min(m.deadline for m in members) - loop.time())
        call = OutgoingCall(
            grp.endpoint,
            grp.route,
            {**template, shape.input_field: items},
            timeout_s,
            tuple(m.custom_id for m in members),
            grp.group,
        )
        self.stats.calls += 1
        self.stats.packed_calls += 1
        self.stats.packed_inputs += len(members)
        try:
            reply = await self._send(call)
            parts = split_reply(reply, shape, items, template)
        except UnpackError as e:
            log.warning("packed answer could not be split; sending one by one", extra={"reason": e.message})
            await self._one_by_one(grp, members, shape_at_fault=True)
            return
        except PermanentError as e:
            log.info("packed call refused; sending one by one", extra={"reason": e.message, "inputs": len(members)})
            await self._one_by_one(grp, members, shape_at_fault=False)
            return
        except Exception as e:
            for m in members:
                if not m.future.done():
                    m.future.set_exception(_copy_error(e))
            return
        for m, part in zip(members, parts, strict=True):
            if not m.future.done():
                m.future.set_result(part)

    async def _one_by_one(self, grp: _Group, members: list[_Member], *, shape_at_fault: bool) -> None:
        self.stats.fallbacks += 1
        waiting = [m for m in members if not m.future.done()]
        answered = await asyncio.gather(*(self._settle(m, self._alone(grp, m)) for m in waiting))
        # Every member answered alone: it was the list the server refused, not an input.
        if shape_at_fault or (len(answered) > 1 and all(answered)):
            self.list_support.refuses_lists(grp.endpoint, grp.route)


__all__ = [
    "DEFAULT_MAX_WAIT_S",
    "PACKABLE_ROUTES",
    "ListSupport",
    "OutgoingCall",
    "Packer",
    "PackingStats",
    "RouteShape",
    "Send",
    "UnpackError",
    "completion_shares",
    "input_weight",
    "send_directly",
    "single_item",
    "split_reply",
]
