"""How ``SageMakerEndpoint`` classifies failures (shared/endpoints/sagemaker.py).

moto's InvokeEndpoint always succeeds, so the error answers come from a small stand-in for
SageMaker's runtime API that sends them as SageMaker does (rest-json: the error type in the
``x-amzn-ErrorType`` header, a JSON body with ``ModelError``'s ``OriginalStatusCode`` and
``OriginalMessage``). The real aiobotocore client, configured as the worker's factory
configures it, parses them into the ``ClientError`` objects the endpoint sees in production.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError, NoCredentialsError

from shared.endpoints.aws_sdk import classify_botocore_error
from shared.endpoints.factory import model_client_config
from shared.endpoints.sagemaker import SageMakerEndpoint, classify_client_error
from shared.errors import (
    EndpointConnectionError,
    EndpointHTTPError,
    EndpointTimeoutError,
    PermanentError,
    TransientError,
)

CHAT = "/v1/chat/completions"
SERVICE_FAULT = "http://internal.amazon.com/coral/com.amazon.coral.service/"
RUNTIME_FAULT = "http://internal.amazon.com/coral/com.amazon.sage.runtime/"
LOG_STREAM = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/llama"


def model_error(original_status: int | None, original_message: str, summary: str) -> tuple[int, str, dict[str, Any]]:
    body: dict[str, Any] = {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL"
        if original_status and original_status < 500
        else "SERVER_ERROR_FROM_MODEL",
        "LogStreamArn": LOG_STREAM,
        "Message": f'{summary} from primary with message "{original_message}". See https://us-east-1.console.'
        "aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:group=/aws/sagemaker/Endpoints/llama "
        "in account 123456789012 for more information.",
        "OriginalMessage": original_message,
    }
    if original_status is not None:
        body["OriginalStatusCode"] = original_status
    return 424, f"ModelError:{RUNTIME_FAULT}", body


TGI_VALIDATION = json.dumps(
    {
        "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
        "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
        "error_type": "validation",
    }
)

#: Endpoint name → (HTTP status, x-amzn-ErrorType, JSON body) of SageMaker's answer.
ANSWERS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "throttled": (400, f"ThrottlingException:{SERVICE_FAULT}", {"message": "Rate exceeded"}),
    "unavailable": (503, f"ServiceUnavailable:{RUNTIME_FAULT}", {"Message": "Service is unavailable"}),
    "internal": (500, f"InternalFailure:{RUNTIME_FAULT}", {"Message": "An internal failure occurred"}),
    "dependency": (530, f"InternalDependencyException:{RUNTIME_FAULT}", {"Message": "Dependency failure"}),
    "not-ready": (429, f"ModelNotReadyException:{RUNTIME_FAULT}", {"Message": "Model is not ready"}),
    "missing": (
        400,
        f"ValidationError:{SERVICE_FAULT}",
        {"message": "Endpoint missing of account 123456789012 not found."},
    ),
    "denied": (
        400,
        f"AccessDeniedException:{SERVICE_FAULT}",
        {"Message": "not authorized to sagemaker:InvokeEndpoint"},
    ),
    "model-422": model_error(422, TGI_VALIDATION, "Received client error (422)"),
    "model-429": model_error(
        429, json.dumps({"error": "Model is overloaded", "error_type": "overloaded"}), "Received client error (429)"
    ),
    "model-500": model_error(
        500,
        json.dumps({"error": "Incomplete generation", "error_type": "incomplete_generation"}),
        "Received server error (500)",
    ),
    "model-503-text": model_error(503, "upstream connect error", "Received server error (503)"),
    "model-no-status": model_error(None, "", "Received server error"),
}

# (endpoint, error type, recorded status_code, code)
CLASSIFIED = [
    ("throttled", EndpointHTTPError, 400, "ThrottlingException"),
    ("unavailable", EndpointHTTPError, 503, "ServiceUnavailable"),
    ("internal", EndpointHTTPError, 500, "InternalFailure"),
    ("dependency", EndpointHTTPError, 530, "InternalDependencyException"),
    ("not-ready", EndpointHTTPError, 429, "ModelNotReadyException"),
    ("missing", PermanentError, 400, "ValidationError"),
    ("denied", PermanentError, 400, "AccessDeniedException"),
    ("model-422", PermanentError, 422, "http_422"),
    ("model-429", EndpointHTTPError, 429, "http_429"),
    ("model-500", EndpointHTTPError, 500, "http_500"),
    ("model-503-text", EndpointHTTPError, 503, "http_503"),
    ("model-no-status", EndpointHTTPError, None, "ModelError"),
]


async def invocations(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "silent":
        await asyncio.Event().wait()  # never answers, like a container stuck mid-generation
    status, error_type, body = ANSWERS[name]
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": f"rid-{name}", "Content-Type": "application/json"},
    )


@pytest.fixture
async def runtime_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", invocations)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def client(url: str, call_timeout_s: float = 30.0) -> Any:
    return get_session().create_client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=model_client_config(call_timeout_s),
    )


async def call_error(
    url: str, endpoint_name: str, *, timeout_s: float = 10.0, call_timeout_s: float = 30.0
) -> Exception:
    async with client(url, call_timeout_s) as c:
        endpoint = SageMakerEndpoint("llama", c, endpoint_name, "tgi")
        try:
            reply = await endpoint.call(
                CHAT, {"messages": [{"role": "user", "content": "Hi"}]}, timeout_s=timeout_s, custom_id="r1"
            )
        except Exception as e:
            return e
    raise AssertionError(f"expected a failure, got {reply!r}")


@pytest.mark.parametrize(("endpoint_name", "kind", "status_code", "code"), CLASSIFIED, ids=[c[0] for c in CLASSIFIED])
async def test_each_error_answer_is_classified_with_its_status_and_code(
    runtime_url: str, endpoint_name: str, kind: type[Exception], status_code: int | None, code: str
) -> None:
    # GIVEN SageMaker answering this error
    # WHEN the endpoint is called through the real client
    error = await call_error(runtime_url, endpoint_name)
    # THEN it is the right llmbatch error, carrying the status that decides it and a code
    assert type(error) is kind
    assert isinstance(error, PermanentError | TransientError)
    assert error.status_code == status_code
    assert error.code == code
    # AND the botocore error it came from is kept as the cause
    assert isinstance(error.__cause__, ClientError)


async def test_a_container_error_carries_the_containers_own_message(runtime_url: str) -> None:
    error = await call_error(runtime_url, "model-422")
    assert isinstance(error, PermanentError)
    assert "HTTP 422" in error.message
    assert "`inputs` tokens + `max_new_tokens` must be <= 4096" in error.message
    # the container's message is unwrapped from its JSON, not shown as JSON text
    assert '"error_type"' not in error.message


async def test_a_call_that_outlives_its_timeout_is_transient(runtime_url: str) -> None:
    # GIVEN a container that never answers, and a client that would wait longer than the call may
    error = await call_error(runtime_url, "silent", timeout_s=0.3, call_timeout_s=30.0)
    # THEN the call's own timeout ends it as a transient timeout
    assert isinstance(error, EndpointTimeoutError)
    assert error.code == "timeout"


async def test_botocores_read_timeout_is_a_transient_timeout_too(runtime_url: str) -> None:
    # GIVEN a client whose read timeout (the worker's call timeout) is shorter than the call's budget
    error = await call_error(runtime_url, "silent", timeout_s=30.0, call_timeout_s=0.3)
    assert isinstance(error, EndpointTimeoutError)


async def test_an_unreachable_endpoint_is_a_transient_connection_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port is closed again: nothing listens there
    error = await call_error(f"http://127.0.0.1:{port}", "llama")
    assert isinstance(error, EndpointConnectionError)
    assert error.code == "connection"


def test_missing_credentials_are_a_permanent_configuration_error() -> None:
    error = classify_botocore_error("SageMaker", NoCredentialsError(), timeout_s=5.0)
    assert isinstance(error, PermanentError)
    assert error.code == "aws_config"


def test_an_unknown_code_is_judged_by_its_http_status() -> None:
    def client_error(code: str, status: int) -> ClientError:
        # The shape botocore parses an error answer into (see the tests above for real ones).
        response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "InvokeEndpoint")

    assert isinstance(classify_client_error(client_error("SomethingNewException", 502)), TransientError)
    assert isinstance(classify_client_error(client_error("SomethingNewException", 409)), TransientError)
    assert isinstance(classify_client_error(client_error("SomethingNewException", 403)), PermanentError)
