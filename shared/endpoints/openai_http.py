"""Any OpenAI-compatible HTTP server: vLLM, TGI, llama.cpp, Ollama, OpenAI itself.

One ``aiohttp.ClientSession`` (one connection pool) per container, shared by every
invocation and every concurrent call: the session is made once, on the container's event
loop, and never per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from http import HTTPStatus
from typing import Any

import aiohttp

from shared.endpoints.base import EndpointReply
from shared.errors import (
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    PermanentError,
    TransientError,
)
from shared.results import Usage
from shared.secrets import ApiKey

#: Status codes that mean "try again later" (everything else below 500 is the request's fault).
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


def join_url(base_url: str, route: str) -> str:
    """``http://host/v1`` + ``/v1/chat/completions`` → ``http://host/v1/chat/completions``.

    The base URL is given as OpenAI clients take it (ending in ``/v1``) and the job's url
    names the route with its ``/v1`` prefix, as in the OpenAI Batch format.
    """
    base = base_url.rstrip("/")
    if base.endswith("/v1") and route.startswith("/v1/"):
        route = route[3:]
    return base + route


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


def error_message(body: Any, fallback: str) -> tuple[str, str | None]:
    """The message and code of an OpenAI-style error body, or the raw text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or fallback), (str(err["code"]) if err.get("code") else None)
        if isinstance(err, str):
            return err, None
        if "message" in body:
            return str(body["message"]), None
    return fallback, None


class OpenAIHttpEndpoint:
    """Calls an OpenAI-compatible server and classifies every answer.

    ``api_key`` is the key itself, or an :class:`ApiKey` read from a store: then a 401 makes
    the endpoint read the store again, and a key that changed (rotated) gets the call tried
    once more before the 401 counts as the request's answer.
    """

    def __init__(
        self, name: str, session: aiohttp.ClientSession, base_url: str, api_key: str | ApiKey | None = None
    ) -> None:
        self.name = name
        self._session = session
        self._base_url = base_url
        self._key = api_key if isinstance(api_key, ApiKey) else ApiKey.fixed(api_key)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIHttpEndpoint(name={self.name!r}, base_url={self._base_url!r})"

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        url = join_url(self._base_url, route)
        data = json.dumps(body)
        try:
            async with asyncio.timeout(timeout_s):
                key = self._key.value
                status, text, resp_headers = await self._post(url, data, key, custom_id)
                if status == HTTPStatus.UNAUTHORIZED:
                    newer = await self._key_after_refusal(key)
                    if newer is not None:
                        status, text, resp_headers = await self._post(url, data, newer, custom_id)
        except TimeoutError as e:
            raise EndpointTimeoutError(f"model call timed out after {timeout_s:.1f}s", code="timeout") from e
        except aiohttp.ClientError as e:
            raise EndpointConnectionError(f"cannot reach endpoint: {type(e).__name__}: {e}", code="connection") from e
        return _reply(status, text, resp_headers)

    async def _key_after_refusal(self, used: str | None) -> str | None:
        try:
            return await self._key.after_refusal(used, time.monotonic())
        except Exception as e:  # the store unreachable: judge the 401 once it can be read
            raise TransientError(
                f"HTTP 401, and the API key could not be read again: {type(e).__name__}",
                status_code=HTTPStatus.UNAUTHORIZED,
                code="api_key_unreadable",
            ) from e

    async def _post(self, url: str, data: str, key: str | None, custom_id: str) -> tuple[int, str, Any]:
        headers = {"Content-Type": "application/json", "x-llmbatch-custom-id": custom_id}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async with self._session.post(url, data=data, headers=headers) as resp:
            return resp.status, await resp.text(), resp.headers


def _reply(status: int, text: str, resp_headers: Any) -> EndpointReply:
    """The reply of a 2xx answer; any other answer raised as the error it is."""
    try:
        parsed: Any = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = None

    if 200 <= status < 300:
        if parsed is None:
            raise EndpointHTTPError(f"endpoint answered {status} without JSON", status_code=status, code="bad_body")
        return EndpointReply(
            status_code=status,
            body=parsed,
            usage=Usage.from_body(parsed),
            request_id=resp_headers.get("x-request-id") or (parsed.get("id") if isinstance(parsed, dict) else None),
        )
    message, code = error_message(parsed, text[:500] or f"HTTP {status}")
    if status in TRANSIENT_STATUS or status >= 500:
        raise EndpointHTTPError(
            f"HTTP {status}: {message}",
            status_code=status,
            code=code or f"http_{status}",
            retry_after_s=parse_retry_after(resp_headers),
        )
    raise PermanentError(f"HTTP {status}: {message}", status_code=status, code=code or f"http_{status}")
