"""Every named endpoint of a container, built once from its specs, sharing connections.

One aiohttp session (one connection pool) serves every ``openai`` endpoint, and one
aiobotocore client serves every endpoint of the same (service, region, endpoint URL). All
are made on the container's event loop and closed through its ``AsyncExitStack``: clients
belong to the loop they were made on, and a client per call would pay a TLS handshake and
credential lookup each time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from shared.aws_http import aws_config
from shared.config import RuntimeLimits
from shared.endpoints.base import Endpoint, EndpointReply
from shared.endpoints.failover import check_routing
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.endpoints.specs import BedrockSpec, EndpointSpec, OpenAISpec, SageMakerSpec
from shared.errors import PermanentError
from shared.secrets import ApiKey, KeyResolver, resolve_api_key

#: Longest wait for a TCP/TLS connection to an AWS model API (the call's own timeout caps it too).
CONNECT_TIMEOUT_S: Final = 10.0
#: Connections a model client may hold: as many as the live concurrency limit may ever allow,
#: so that limit (raised from the console) is the only cap on calls in flight.
MODEL_CLIENT_POOL: Final = RuntimeLimits.BOUNDS["max_concurrency"][1]

AwsClientKey = tuple[str, str | None, str | None]


def model_client_config(call_timeout_s: float) -> AioConfig:
    """Settings of the clients that call models (Bedrock, SageMaker).

    Retries are off (one attempt in all): a failed call goes back to SQS, which retries it
    later with backoff and counts its attempts toward the dead-letter queue. botocore's own
    retries would instead spend the invocation's shared deadline and hold a concurrency slot
    sleeping, and hide paid attempts from the results. The read timeout matches the call
    timeout so botocore never cuts a call the worker still allows.
    """
    return aws_config(
        retries={"mode": "standard", "total_max_attempts": 1},
        read_timeout=call_timeout_s,
        connect_timeout=min(CONNECT_TIMEOUT_S, call_timeout_s),
        max_pool_connections=MODEL_CLIENT_POOL,
    )


class RouteGuard:
    """Refuses, before any call, the routes an endpoint cannot serve (a Bedrock record sent
    to an OpenAI server, say), as a permanent ``unsupported_route`` failure; ``submit``
    refuses them with the same words (:meth:`EndpointSpec.route_refusal`)."""

    def __init__(self, endpoint: Endpoint, spec: EndpointSpec) -> None:
        self.name = endpoint.name
        self._endpoint = endpoint
        self._spec = spec

    def __repr__(self) -> str:
        return f"RouteGuard({self._endpoint!r})"

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        refused = self._spec.route_refusal(self.name, route)
        if refused is not None:
            raise PermanentError(refused, code="unsupported_route")
        return await self._endpoint.call(route, body, timeout_s=timeout_s, custom_id=custom_id)


class EndpointFactory:
    """Builds endpoints from specs inside one container (see the module docstring)."""

    def __init__(
        self,
        stack: AsyncExitStack,
        *,
        call_timeout_s: float,
        aws_session: AioSession | None = None,
        resolve_key: KeyResolver = resolve_api_key,
    ) -> None:
        self._stack = stack
        self._aws = aws_session or get_session()
        self._model_config = model_client_config(call_timeout_s)
        self._resolve_key = resolve_key
        self._http: aiohttp.ClientSession | None = None
        self._clients: dict[AwsClientKey, Any] = {}
        self._builders: Mapping[type[Any], Callable[[str, Any], Awaitable[Endpoint]]] = {
            OpenAISpec: self._openai,
            BedrockSpec: self._bedrock,
            SageMakerSpec: self._sagemaker,
        }

    async def build(self, specs: Mapping[str, EndpointSpec]) -> dict[str, Endpoint]:
        """One endpoint per name, fallbacks and ``models`` targets among them: each called
        by its own name, so its own limits, packing and metrics apply to its calls.

        Raises
        ------
        ConfigError
            A ``fallback`` or ``models`` entry names no endpoint, or the fallbacks loop
            (checked before any client is made).
        """
        check_routing(specs)
        endpoints: dict[str, Endpoint] = {}
        for name, spec in specs.items():
            endpoint = await self._builders[type(spec)](name, spec)
            endpoints[name] = RouteGuard(endpoint, spec)
        return endpoints

    @property
    def aws_clients(self) -> Mapping[AwsClientKey, Any]:
        """The model clients made so far, by (service, region, endpoint URL)."""
        return dict(self._clients)

    async def http_session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No pool limit here: the worker's concurrency limit is the one cap on calls.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
            self._http = await self._stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        return self._http

    async def aws_client(self, service: str, region: str | None, endpoint_url: str | None) -> Any:
        key = (service, region, endpoint_url)
        if key not in self._clients:
            client = self._aws.create_client(
                service, region_name=region, endpoint_url=endpoint_url, config=self._model_config
            )
            self._clients[key] = await self._stack.enter_async_context(client)
        return self._clients[key]

    async def _openai(self, name: str, spec: OpenAISpec) -> Endpoint:
        # The key is read once per container, and again when the endpoint refuses it (rotated).
        key = ApiKey(spec.api_key_ref, self._resolve_key)
        return OpenAIHttpEndpoint(name, await self.http_session(), spec.url, key)

    async def _bedrock(self, name: str, spec: BedrockSpec) -> Endpoint:
        # Imported here, as SageMaker's below: a stack without Bedrock endpoints never loads
        # it or its translation (a cold start's import time; tests/bench/test_cold_start_imports.py).
        from shared.endpoints.bedrock import BedrockEndpoint

        client = await self.aws_client("bedrock-runtime", spec.region, spec.endpoint_url)
        return BedrockEndpoint(name, client, default_model=spec.default_model)

    async def _sagemaker(self, name: str, spec: SageMakerSpec) -> Endpoint:
        # Imported here so a stack without SageMaker endpoints never loads that module.
        from shared.endpoints.sagemaker import SageMakerEndpoint

        client = await self.aws_client("sagemaker-runtime", spec.region, spec.endpoint_url)
        endpoint: Endpoint = SageMakerEndpoint(
            name, client, spec.endpoint_name, spec.mapping, default_model=spec.default_model
        )
        return endpoint
