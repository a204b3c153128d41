"""The simulator itself: one request through slots, rate limits and faults to an answer,
and everything it did counted (``GET /_sim/stats``). The package's docstring tells what it
simulates and why."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from llmbatch.local.simulator.capacity import SlotPool, _Bucket, _retry_headers, format_duration
from llmbatch.local.simulator.config import CUSTOM_ID_HEADER, SimulatorConfig
from llmbatch.local.simulator.faults import _FIVE_XX_CODES, _has_fail_first, _Markers, _parse_markers
from llmbatch.local.simulator.openai_api import _ApiError, _invalid, _stable_seed, _Work

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
