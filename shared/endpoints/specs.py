"""Named endpoints: what each one is (its kind and settings), read from configuration.

The stack's ``Endpoints`` parameter becomes the worker's ``ENDPOINTS`` variable: a JSON
object from endpoint name to spec, each spec tagged by ``kind``. A job names the endpoint
it runs on (``llmbatch submit --endpoint NAME``); the worker builds one client per name
(:mod:`shared.endpoints.factory`).

Example::

    {"claude": {"kind": "bedrock", "region": "us-east-1",
                "default_model": "anthropic.claude-3-haiku-20240307-v1:0", "rpm_limit": 500},
     "llama": {"kind": "sagemaker", "endpoint_name": "llama-3-8b", "mapping": "tgi"},
     "vllm": {"kind": "openai", "url": "https://vllm.internal/v1"}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import ConfigError, PermanentError
from shared.messages import BEDROCK_RECORD_ROUTE, ENDPOINT_NAME_PATTERN, SUPPORTED_URLS

CHAT_ROUTE: Final = "/v1/chat/completions"
COMPLETIONS_ROUTE: Final = "/v1/completions"
EMBEDDINGS_ROUTE: Final = "/v1/embeddings"


class _Spec(BaseModel):
    """Settings every kind has. The limits are carried for the global rate limiter and
    request packing, which read them from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The job routes this kind can serve; others are refused with ``unsupported_route``.
    ROUTES: ClassVar[frozenset[str]] = frozenset(SUPPORTED_URLS)

    rpm_limit: int | None = Field(default=None, ge=1, description="Requests per minute this endpoint allows.")
    tpm_limit: int | None = Field(default=None, ge=1, description="Tokens per minute this endpoint allows.")
    max_inputs_per_call: int | None = Field(
        default=None, ge=1, description="How many inputs one call may carry when requests are packed."
    )
    #: What the endpoint serves at once (vLLM's --max-num-seqs, TGI's --max-concurrent-requests,
    #: llama.cpp's --parallel): the operator's client sizes the workers to it (``auto_workers``).
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Calls the endpoint serves at once; the stack sizes its workers to it.",
    )
    #: Failover (online lane): endpoints to send a job's requests to, in order, while this
    #: one fails transiently beyond its threshold; see :mod:`shared.endpoints.failover`.
    fallback: tuple[str, ...] = Field(default=(), description="Endpoint names to fail over to, in order.")
    #: Routing by model: a request whose body names one of these models goes to that endpoint.
    models: dict[str, str] = Field(default_factory=dict, description="Model name to endpoint name.")
    #: Batch lane quotas (adjustable per account, so settings, not constants).
    batch_max_records: int = Field(default=50_000, ge=1, description="Most records per native batch job.")
    batch_max_jobs: int | None = Field(default=None, ge=1, description="Most native batch jobs running at once.")

    def __hash__(self) -> int:
        # Frozen models hash their fields; ``models`` is a dict, so hash the settings' JSON.
        return hash((type(self).__name__, self.model_dump_json()))

    @property
    def routes(self) -> frozenset[str]:
        """The job routes this endpoint serves (a SageMaker endpoint's depend on its mapping)."""
        return self.ROUTES

    @property
    def description(self) -> str:
        """The kind, and what else decides the routes: ``sagemaker, mapping 'tgi'``."""
        return str(getattr(self, "kind", ""))

    def route_refusal(self, name: str, route: str) -> str | None:
        """Why this endpoint (called ``name``) cannot serve ``route``, or None. The worker
        refuses such a request before any call (``unsupported_route``)."""
        if route in self.routes:
            return None
        return (
            f"endpoint {name!r} ({self.description}) does not serve {route}; it serves {', '.join(sorted(self.routes))}"
        )

    def refusal(self, name: str, route: str, body: Mapping[str, Any]) -> str | None:
        """Why a request on ``route`` with ``body`` will surely fail on this endpoint, or
        None: what ``submit`` refuses a job file for, before anything is enqueued."""
        return self.route_refusal(name, route)


class OpenAISpec(_Spec):
    """Any OpenAI-compatible HTTP server (vLLM, TGI, llama.cpp, Ollama, OpenAI)."""

    kind: Literal["openai"]
    url: str = Field(min_length=1, pattern=r"^https?://", description="Base URL as OpenAI clients take it (…/v1).")
    #: ``ssm:/name`` or ``secretsmanager:name``; never the key itself.
    api_key_ref: str = Field(default="", pattern=r"^$|^(ssm|secretsmanager):.+")
    #: Whether the server implements the OpenAI Batch API (``/v1/files`` + ``/v1/batches``);
    #: unset means "only if it is OpenAI's own API" (``api.openai.com``).
    batch_api: bool | None = Field(default=None, description="The server offers /v1/batches.")

    @property
    def offers_batch_api(self) -> bool:
        if self.batch_api is not None:
            return self.batch_api
        return self.url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] == "api.openai.com"


class BedrockSpec(_Spec):
    """Amazon Bedrock: Converse for chat, InvokeModel for embeddings and Bedrock batch records."""

    ROUTES: ClassVar[frozenset[str]] = frozenset({CHAT_ROUTE, EMBEDDINGS_ROUTE, BEDROCK_RECORD_ROUTE})

    kind: Literal["bedrock"]
    region: str | None = Field(default=None, min_length=1, description="The function's own region when unset.")
    default_model: str | None = Field(
        default=None,
        min_length=1,
        description="Model id (or inference profile) for requests without a model, and for Bedrock records.",
    )
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://", description="Override, for tests.")
    #: Bedrock batch inference refuses jobs with fewer records (a per-model, adjustable quota).
    batch_min_records: int = Field(default=100, ge=1, description="Fewest records per batch inference job.")

    def refusal(self, name: str, route: str, body: Mapping[str, Any]) -> str | None:
        """Also what the worker's translation refuses (no model, images, tools, ``n > 1``...)."""
        if (refused := self.route_refusal(name, route)) is not None:
            return refused
        if route == BEDROCK_RECORD_ROUTE:
            if self.default_model:
                return None
            return f"endpoint {name!r} has no default_model: Bedrock records name no model, the endpoint must"
        # Imported here, as the factory does: only submit asks, and a worker that serves no
        # Bedrock endpoint never loads the translation.
        from shared.endpoints import bedrock_translate as tr

        try:
            if route == CHAT_ROUTE:
                tr.chat_to_converse(body, default_model=self.default_model)
            else:
                tr.model_id(body, self.default_model)
                tr.embedding_inputs(body)
        except PermanentError as e:
            return f"endpoint {name!r} ({self.description}) cannot send it: {e.message}"
        return None


SageMakerMapping = Literal["tgi", "lmi", "openai"]
#: The routes each SageMaker mapping serves: TGI's and LMI's native API generates text only
#: (no embeddings), a container speaking OpenAI's API takes every OpenAI route.
SAGEMAKER_ROUTES: Final[Mapping[str, frozenset[str]]] = {
    "tgi": frozenset({CHAT_ROUTE, COMPLETIONS_ROUTE}),
    "lmi": frozenset({CHAT_ROUTE, COMPLETIONS_ROUTE}),
    "openai": frozenset(SUPPORTED_URLS),
}


class SageMakerSpec(_Spec):
    """A SageMaker real-time endpoint, with the request/response mapping of its container."""

    kind: Literal["sagemaker"]
    endpoint_name: str = Field(min_length=1, max_length=63)
    mapping: SageMakerMapping
    region: str | None = Field(default=None, min_length=1)
    default_model: str | None = Field(default=None, min_length=1)
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")

    @property
    def routes(self) -> frozenset[str]:
        return SAGEMAKER_ROUTES[self.mapping]

    @property
    def description(self) -> str:
        return f"sagemaker, mapping {self.mapping!r}"

    def refusal(self, name: str, route: str, body: Mapping[str, Any]) -> str | None:
        """Also what the container's mapping refuses (with ``tgi``/``lmi``: ``n > 1``, tools,
        JSON mode, images...)."""
        if (refused := self.route_refusal(name, route)) is not None:
            return refused
        # Imported here, as the factory does: a worker without SageMaker endpoints never loads it.
        from shared.endpoints.sagemaker_mapping import mapping_for

        try:
            mapping_for(self.mapping).request(route, body, default_model=self.default_model)
        except PermanentError as e:
            return f"endpoint {name!r} ({self.description}) cannot send it: {e.message}"
        return None


EndpointSpec = Annotated[OpenAISpec | BedrockSpec | SageMakerSpec, Field(discriminator="kind")]
_SPEC: TypeAdapter[EndpointSpec] = TypeAdapter(EndpointSpec)
KINDS: Final = ("openai", "bedrock", "sagemaker")


def parse_endpoints(raw: str, *, variable: str = "ENDPOINTS") -> dict[str, EndpointSpec]:
    """``{"name": {"kind": ..., ...}, ...}`` as JSON text; empty text is no endpoints.

    Raises
    ------
    ConfigError
        Naming the variable, the endpoint and the field at fault.
    """
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{variable} is not valid JSON: {e.msg} (at character {e.pos})") from e
    if not isinstance(data, dict):
        raise ConfigError(
            f'{variable} must be a JSON object of endpoint name to settings, like {{"name": {{"kind": ...}}}}'
        )
    return {name: parse_spec(name, spec, variable=variable) for name, spec in data.items()}


def parse_spec(name: str, spec: Any, *, variable: str = "ENDPOINTS") -> EndpointSpec:
    where = f"{variable}: endpoint {name!r}"
    if not ENDPOINT_NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: a name is 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: settings must be a JSON object with a 'kind'")
    if spec.get("kind") not in KINDS:
        raise ConfigError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {spec.get('kind')!r}")
    try:
        return _SPEC.validate_python(spec)
    except ValidationError as e:
        raise ConfigError(f"{where}: {_describe(e)}") from e


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        # The first element of loc is the union member's tag ("bedrock"); the field follows.
        field = ".".join(str(p) for p in err["loc"][1:]) or "(settings)"
        if err["type"] == "missing":
            parts.append(f"field {field!r} is required")
        elif err["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        else:
            parts.append(f"field {field!r}: {err['msg']}")
    return "; ".join(parts)


def with_legacy_endpoint(
    specs: Mapping[str, EndpointSpec],
    *,
    name: str,
    url: str | None,
    api_key_ref: str,
    max_concurrency: int | None = None,
) -> dict[str, EndpointSpec]:
    """The endpoints with the stack's original single ``openai`` endpoint (``EndpointName``,
    ``EndpointUrl``, the key parameters) added, unless ``specs`` defines that name itself.

    Raises
    ------
    ConfigError
        When that endpoint is needed and has no URL.
    """
    if name in specs:
        return dict(specs)
    if not url:
        raise ConfigError("environment variable ENDPOINT_URL is not set")
    spec: dict[str, Any] = {"kind": "openai", "url": url, "api_key_ref": api_key_ref}
    if max_concurrency is not None:
        spec["max_concurrency"] = max_concurrency
    legacy = parse_spec(name, spec, variable="ENDPOINT_URL")
    return {name: legacy, **specs}
