"""Amazon Bedrock through aiobotocore: Converse for chat, InvokeModel for embeddings and for
Bedrock's own batch records, all concurrent on the container's one event loop.

The translation is :mod:`shared.endpoints.bedrock_translate`; this module makes the calls
and classifies every failure where it is first seen, like the HTTP endpoint does: throttling
and service trouble are transient (retried through SQS), a request Bedrock refuses is
permanent. The client is made by :mod:`shared.endpoints.factory` with botocore's own retries
off, so the worker's backoff is the only retry loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from shared.endpoints import bedrock_translate as tr
from shared.endpoints.aws_sdk import (
    classified_call,
    error_parts,
    parse_json_answer,
    response_request_id,
    response_status,
)
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import TRANSIENT_STATUS
from shared.endpoints.specs import CHAT_ROUTE, EMBEDDINGS_ROUTE
from shared.errors import EndpointHTTPError, PermanentError, TransientError
from shared.messages import BEDROCK_RECORD_ROUTE
from shared.results import Usage

#: Bedrock's error codes worth trying again later, whatever HTTP status they came with
#: (ServiceQuotaExceededException comes as a 400, ModelNotReadyException as a 429).
TRANSIENT_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "ServiceQuotaExceededException",
    }
)
#: Bedrock's error codes that no retry will change (the request, the model or the grant is wrong).
PERMANENT_CODES: Final = frozenset(
    {"ValidationException", "AccessDeniedException", "ResourceNotFoundException", "ModelErrorException"}
)

#: Titan embeds one text per call; a request's inputs go at most this many at a time, so
#: one embeddings request cannot flood the model past the worker's concurrency limit.
EMBEDDING_FANOUT: Final = 8

JSON: Final = "application/json"
SERVICE: Final = "Bedrock"


def classify_client_error(error: ClientError) -> PermanentError | TransientError:
    """The llmbatch error for an error answer of Bedrock's runtime API."""
    code, message, status = error_parts(error)
    text = f"Bedrock {code or 'error'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if code in TRANSIENT_CODES:
        return EndpointHTTPError(text, status_code=status, code=code)
    if code in PERMANENT_CODES:
        return PermanentError(text, status_code=status, code=code)
    # A code this version does not know: judge by the status, as for any HTTP server.
    if status is not None and (status in TRANSIENT_STATUS or status >= 500):
        return EndpointHTTPError(text, status_code=status, code=code or f"http_{status}")
    return PermanentError(text, status_code=status, code=code or (f"http_{status}" if status else "bedrock_error"))


class BedrockEndpoint:
    """One named Bedrock endpoint: a ``bedrock-runtime`` client and an optional default model."""

    def __init__(self, name: str, client: Any, *, default_model: str | None = None) -> None:
        self.name = name
        self._client = client
        self._default_model = default_model
        self._routes: Mapping[str, Callable[[dict[str, Any]], Awaitable[EndpointReply]]] = {
            CHAT_ROUTE: self._chat,
            EMBEDDINGS_ROUTE: self._embeddings,
            BEDROCK_RECORD_ROUTE: self._record,
        }

    def __repr__(self) -> str:
        return f"BedrockEndpoint(name={self.name!r}, default_model={self._default_model!r})"

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        handler = self._routes.get(route)
        if handler is None:
            raise PermanentError(
                f"endpoint {self.name!r} (bedrock) does not serve {route}; it serves {', '.join(self._routes)}",
                code="unsupported_route",
            )
        async with classified_call(SERVICE, timeout_s, classify_client_error):
            return await handler(body)

    async def _chat(self, body: dict[str, Any]) -> EndpointReply:
        request = tr.chat_to_converse(body, default_model=self._default_model)
        response = await self._client.converse(**request)
        request_id = response_request_id(response)
        answer = tr.converse_to_chat(
            response, model=request["modelId"], request_id=request_id, created=int(time.time())
        )
        return EndpointReply(
            status_code=response_status(response), body=answer, usage=Usage.from_body(answer), request_id=request_id
        )

    async def _embeddings(self, body: dict[str, Any]) -> EndpointReply:
        inputs = tr.embedding_inputs(body)
        model = tr.model_id(body, self._default_model)
        gate = asyncio.Semaphore(EMBEDDING_FANOUT)

        async def embed(text: str) -> tuple[tuple[list[float], int], str]:
            async with gate:
                answer, response = await self._invoke(model, tr.titan_embedding_request(text, body))
                return tr.titan_embedding(answer), response_request_id(response)

        results = await asyncio.gather(*(embed(text) for text in inputs))
        answer = tr.embeddings_list(
            [r for r, _ in results], model=model, encoding_format=body.get("encoding_format", "float")
        )
        return EndpointReply(status_code=200, body=answer, usage=Usage.from_body(answer), request_id=results[0][1])

    async def _record(self, body: dict[str, Any]) -> EndpointReply:
        if not self._default_model:
            raise tr.invalid(
                f"endpoint {self.name!r} has no default_model: Bedrock records name no model, the endpoint must"
            )
        answer, response = await self._invoke(self._default_model, body)
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return EndpointReply(
            status_code=response_status(response),
            body=answer,
            usage=tr.record_usage(headers, answer),
            request_id=response_request_id(response),
        )

    async def _invoke(self, model: str, payload: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        response = await self._client.invoke_model(
            modelId=model, body=json.dumps(payload).encode(), contentType=JSON, accept=JSON
        )
        async with response["body"] as stream:
            raw = await stream.read()
        return parse_json_answer(raw, response, SERVICE), response
