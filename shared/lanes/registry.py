"""Which endpoints have a native batch API, its limits, and the API object for one.

``submit`` asks :func:`native_limits` (no clients needed) to choose and split; the lane
poller asks :class:`ApiBuilder` for the API object, made from its container's clients. The
Bedrock adapter is imported only when a Bedrock endpoint needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.endpoints.specs import BedrockSpec, EndpointSpec, OpenAISpec
from shared.lanes.native import NativeBatchApi, NativeLimits
from shared.secrets import resolve_api_key


def native_limits(spec: EndpointSpec) -> NativeLimits | None:
    """The endpoint's native batch API's limits; None when it has none."""
    if isinstance(spec, BedrockSpec):
        from shared.lanes.bedrock_batch import bedrock_limits

        return bedrock_limits(spec)
    if isinstance(spec, OpenAISpec) and spec.offers_batch_api:
        from shared.lanes.openai_batch import openai_limits

        return openai_limits(spec)
    return None


def native_refusal(name: str, spec: EndpointSpec, route: str, body: Mapping[str, Any]) -> str | None:
    """Why the endpoint's native batch API cannot take this request though the online lane
    could (Bedrock batch records carry the model's native input), or None: what submit
    refuses a batch-lane job file for."""
    if isinstance(spec, BedrockSpec):
        from shared.lanes.bedrock_batch import bedrock_batch_refusal

        return bedrock_batch_refusal(name, spec, route, body)
    return None


@dataclass
class LaneClients:
    """What building an API object may need, each made on first use (a poller serving only
    OpenAI endpoints never makes a Bedrock client)."""

    #: The aiohttp session of OpenAI-compatible calls.
    http_session: Callable[[], Awaitable[Any]]
    #: ``aws_client(service, region, endpoint_url)``: an aiobotocore client.
    aws_client: Callable[[str, str | None, str | None], Awaitable[Any]]
    #: The payload bucket (Bedrock reads its input and writes its output there).
    bucket: str
    #: The service role Bedrock batch jobs run as (``BATCH_ROLE_ARN``).
    role_arn: str
    call_timeout_s: float = 60.0
    resolve_key: Callable[[str], str | None] = resolve_api_key


class ApiBuilder:
    """One API object per endpoint name, made on first use and kept."""

    def __init__(self, clients: LaneClients) -> None:
        self._clients = clients
        self._apis: dict[str, NativeBatchApi] = {}

    async def api(self, name: str, spec: EndpointSpec) -> NativeBatchApi | None:
        if name in self._apis:
            return self._apis[name]
        built = await self._build(name, spec)
        if built is not None:
            self._apis[name] = built
        return built

    async def _build(self, name: str, spec: EndpointSpec) -> NativeBatchApi | None:
        c = self._clients
        if isinstance(spec, OpenAISpec) and spec.offers_batch_api:
            from shared.lanes.openai_batch import OpenAIBatchApi

            key = c.resolve_key(spec.api_key_ref) if spec.api_key_ref else None
            return OpenAIBatchApi(
                name, spec, session=await c.http_session(), api_key=key, call_timeout_s=c.call_timeout_s
            )
        if isinstance(spec, BedrockSpec):
            from shared.lanes.bedrock_batch import BedrockBatchApi

            bedrock = await c.aws_client("bedrock", spec.region, spec.endpoint_url)
            s3 = await c.aws_client("s3", None, None)
            api: NativeBatchApi = BedrockBatchApi(
                name, spec, bedrock=bedrock, s3=s3, bucket=c.bucket, role_arn=c.role_arn
            )
            return api
        return None
