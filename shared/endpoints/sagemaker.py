"""A SageMaker real-time endpoint through aiobotocore's InvokeEndpoint, JSON in and out,
concurrent on the container's one event loop.

The request and answer shapes of its container are :mod:`shared.endpoints.sagemaker_mapping`;
this module makes the call and classifies every failure where it is first seen, like the
HTTP endpoint does. SageMaker's own trouble (throttling, an endpoint still scaling, internal
failures) is transient. A ``ModelError`` is the container's own error answer relayed by
SageMaker, judged by the container's status (``OriginalStatusCode``) exactly as the HTTP
endpoint judges a server's: 4xx is permanent, 408/409/425/429 and 5xx are transient. The
client is made by :mod:`shared.endpoints.factory` with botocore's own retries off, so the
worker's backoff is the only retry loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import TRANSIENT_STATUS, error_message
from shared.endpoints.sagemaker_mapping import invalid, mapping_for
from shared.errors import (
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    PermanentError,
    TransientError,
)

#: sagemaker-runtime's error codes worth trying again later, whatever HTTP status they came
#: with (ThrottlingException comes as a 400, ModelNotReadyException as a 429).
TRANSIENT_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
        "ModelNotReadyException",
    }
)
#: The container answered with an error; SageMaker relays its status and message.
MODEL_ERROR: Final = "ModelError"

JSON: Final = "application/json"

#: InvokeEndpoint's ``InferenceId`` (shown in data capture): at most 64 printable ASCII characters.
INFERENCE_ID_MAX_LEN: Final = 64


def classify_client_error(error: ClientError) -> PermanentError | TransientError:
    """The llmbatch error for an error answer of SageMaker's runtime API."""
    info = error.response.get("Error", {})
    code = str(info.get("Code") or "")
    message = str(info.get("Message") or error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == MODEL_ERROR:
        return _classify_model_error(error.response, message)
    text = f"SageMaker {code or 'error'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if code in TRANSIENT_CODES or (isinstance(status, int) and (status in TRANSIENT_STATUS or status >= 500)):
        return EndpointHTTPError(text, status_code=status, code=code or f"http_{status}")
    # ValidationError (no such endpoint, a body it refuses), AccessDeniedException, ...
    return PermanentError(text, status_code=status, code=code or (f"http_{status}" if status else "sagemaker_error"))


def _classify_model_error(response: Mapping[str, Any], message: str) -> PermanentError | TransientError:
    original = response.get("OriginalStatusCode")
    if not isinstance(original, int):
        # No status to judge by (a container that closed the connection, say): worth another try.
        return EndpointHTTPError(f"SageMaker ModelError: {message}", status_code=None, code=MODEL_ERROR)
    raw = response.get("OriginalMessage")
    try:
        parsed: Any = json.loads(raw) if isinstance(raw, str) and raw else None
    except json.JSONDecodeError:
        parsed = None
    detail, container_code = error_message(parsed, (raw if isinstance(raw, str) and raw else message)[:500])
    text = f"the container answered HTTP {original} (SageMaker ModelError): {detail}"
    code = container_code or f"http_{original}"
    if original in TRANSIENT_STATUS or original >= 500:
        return EndpointHTTPError(text, status_code=original, code=code)
    return PermanentError(text, status_code=original, code=code)


def classify_botocore_error(error: BotoCoreError, timeout_s: float) -> PermanentError | TransientError:
    """The llmbatch error for a failure of the SDK itself (no answer from SageMaker)."""
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return EndpointTimeoutError(f"SageMaker call timed out after {timeout_s:.1f}s: {error}", code="timeout")
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return EndpointConnectionError(f"cannot reach SageMaker: {type(error).__name__}: {error}", code="connection")
    if isinstance(error, ParamValidationError):
        return invalid(f"SageMaker refuses the request's parameters: {error}")
    # No credentials, no region: the configuration, not the request; recorded, not retried.
    return PermanentError(f"SageMaker client error: {type(error).__name__}: {error}", code="aws_config")


def inference_id(custom_id: str) -> str | None:
    """The request's id as InvokeEndpoint's ``InferenceId``, when SageMaker would accept it."""
    fits = len(custom_id) <= INFERENCE_ID_MAX_LEN and custom_id.isascii() and custom_id.isprintable()
    return custom_id if fits and not custom_id[:1].isspace() else None


class SageMakerEndpoint:
    """One named SageMaker endpoint: a ``sagemaker-runtime`` client, the endpoint's name in
    SageMaker, and the mapping of its container (``tgi``, ``lmi`` or ``openai``)."""

    def __init__(
        self, name: str, client: Any, endpoint_name: str, mapping: str, *, default_model: str | None = None
    ) -> None:
        self.name = name
        self._client = client
        self._endpoint_name = endpoint_name
        self._mapping_name = mapping
        self._mapping = mapping_for(mapping)
        self._default_model = default_model

    def __repr__(self) -> str:
        return (
            f"SageMakerEndpoint(name={self.name!r}, endpoint_name={self._endpoint_name!r}, "
            f"mapping={self._mapping_name!r})"
        )

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        if route not in self._mapping.routes:
            raise PermanentError(
                f"endpoint {self.name!r} (sagemaker, mapping {self._mapping_name!r}) does not serve {route}; "
                f"it serves {', '.join(sorted(self._mapping.routes))}",
                code="unsupported_route",
            )
        payload = self._mapping.request(route, body, default_model=self._default_model)
        request: dict[str, Any] = {
            "EndpointName": self._endpoint_name,
            "Body": json.dumps(payload).encode(),
            "ContentType": JSON,
            "Accept": JSON,
        }
        if (inference := inference_id(custom_id)) is not None:
            request["InferenceId"] = inference
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.invoke_endpoint(**request)
                async with response["Body"] as stream:
                    raw = await stream.read()
        except TimeoutError as e:
            raise EndpointTimeoutError(f"SageMaker call timed out after {timeout_s:.1f}s", code="timeout") from e
        except ClientError as e:
            raise classify_client_error(e) from e
        except BotoCoreError as e:
            raise classify_botocore_error(e, timeout_s) from e

        metadata = response.get("ResponseMetadata", {})
        status = int(metadata.get("HTTPStatusCode") or 200)
        request_id = str(metadata.get("RequestId") or uuid.uuid4().hex)
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EndpointHTTPError(
                f"SageMaker answered {status} without JSON (content type {response.get('ContentType')!r})",
                status_code=status,
                code="bad_body",
            ) from e
        model = body.get("model") or self._default_model or self._endpoint_name
        answer = self._mapping.answer(
            route, body, parsed, model=str(model), request_id=request_id, created=int(time.time())
        )
        return EndpointReply(status_code=status, body=answer.body, usage=answer.usage, request_id=request_id)
