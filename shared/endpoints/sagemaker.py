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

import json
import time
from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from shared.endpoints.aws_sdk import (
    classified_call,
    error_parts,
    parse_json_answer,
    response_request_id,
    response_status,
)
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import TRANSIENT_STATUS, error_message
from shared.endpoints.sagemaker_mapping import mapping_for
from shared.errors import EndpointHTTPError, PermanentError, TransientError

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
SERVICE: Final = "SageMaker"

#: InvokeEndpoint's ``InferenceId`` (shown in data capture): at most 64 printable ASCII characters.
INFERENCE_ID_MAX_LEN: Final = 64


def classify_client_error(error: ClientError) -> PermanentError | TransientError:
    """The llmbatch error for an error answer of SageMaker's runtime API."""
    code, message, status = error_parts(error)
    if code == MODEL_ERROR:
        return _classify_model_error(error.response, message)
    text = f"SageMaker {code or 'error'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if code in TRANSIENT_CODES or (status is not None and (status in TRANSIENT_STATUS or status >= 500)):
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
        async with classified_call(SERVICE, timeout_s, classify_client_error):
            response = await self._client.invoke_endpoint(**request)
            async with response["Body"] as stream:
                raw = await stream.read()

        status, request_id = response_status(response), response_request_id(response)
        parsed = parse_json_answer(raw, response, SERVICE)
        model = body.get("model") or self._default_model or self._endpoint_name
        answer = self._mapping.answer(
            route, body, parsed, model=str(model), request_id=request_id, created=int(time.time())
        )
        return EndpointReply(status_code=status, body=answer.body, usage=answer.usage, request_id=request_id)
