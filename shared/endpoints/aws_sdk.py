"""What the endpoint kinds that call a model through the AWS SDK (Bedrock, SageMaker) share:
one way to run a call under its timeout and classify the SDK's failures, and the parts of a
response every answer needs.

Each kind classifies its service's error codes itself (``ClientError``: the service
answered); failures of the SDK before any answer are the same for every service, and
classified here like the HTTP endpoint classifies them: timeouts and connection trouble are
transient, a request the SDK refuses to send is the request's fault, and missing credentials
or region are the configuration's (recorded, not retried: no retry will find credentials).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.endpoints.base import invalid
from shared.errors import (
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    PermanentError,
    TransientError,
)

ClassifyClientError = Callable[[ClientError], PermanentError | TransientError]


def error_parts(error: ClientError) -> tuple[str, str, int | None]:
    """The error code, message and HTTP status of a service's error answer."""
    info = error.response.get("Error", {})
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(info.get("Code") or ""), str(info.get("Message") or error), status if isinstance(status, int) else None


def classify_botocore_error(service: str, error: BotoCoreError, timeout_s: float) -> PermanentError | TransientError:
    """The llmbatch error for a failure of the SDK itself (no answer from ``service``)."""
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return EndpointTimeoutError(f"{service} call timed out after {timeout_s:.1f}s: {error}", code="timeout")
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return EndpointConnectionError(f"cannot reach {service}: {type(error).__name__}: {error}", code="connection")
    if isinstance(error, ParamValidationError):
        return invalid(f"{service} refuses the request's parameters: {error}")
    return PermanentError(f"{service} client error: {type(error).__name__}: {error}", code="aws_config")


@asynccontextmanager
async def classified_call(
    service: str, timeout_s: float, classify_client_error: ClassifyClientError
) -> AsyncIterator[None]:
    """Run the SDK calls inside within ``timeout_s``, every failure raised as an llmbatch error."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as e:
        raise EndpointTimeoutError(f"{service} call timed out after {timeout_s:.1f}s", code="timeout") from e
    except ClientError as e:
        raise classify_client_error(e) from e
    except BotoCoreError as e:
        raise classify_botocore_error(service, e, timeout_s) from e


def response_status(response: Mapping[str, Any]) -> int:
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or HTTPStatus.OK)


def response_request_id(response: Mapping[str, Any]) -> str:
    return str(response.get("ResponseMetadata", {}).get("RequestId") or uuid.uuid4().hex)


def parse_json_answer(raw: bytes, response: Mapping[str, Any], service: str) -> Any:
    """The answer's JSON; an answer that is not JSON (a proxy's error page, say) is transient."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        status = response_status(response)
        content_type = response.get("ContentType") or response.get("contentType")
        raise EndpointHTTPError(
            f"{service} answered {status} without JSON" + (f" (content type {content_type!r})" if content_type else ""),
            status_code=status,
            code="bad_body",
        ) from e
