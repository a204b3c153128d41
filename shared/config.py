"""Configuration, from one place: the environment the stack gives each function.

``template.yaml`` sets these variables on the functions (from its Parameters and
resources); the local stack reads the same template and sets the same variables.
Limits that operators change while jobs run live in one SSM parameter (``LIMITS_PARAMETER``)
that workers re-read every few seconds.

Both are pydantic models: the types and ``Field`` bounds are the checks, and a value out of
its range is a :class:`~shared.errors.ConfigError` naming the setting and what it allows.
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from shared.endpoints.specs import EndpointSpec, parse_endpoints, with_legacy_endpoint
from shared.errors import ConfigError
from shared.limits.rate_math import RateLimits

#: Model calls in flight at once within one invocation: a live limit, and the worker's
#: default for it (``MAX_CONCURRENCY``).
Concurrency = Annotated[int, Field(ge=1, le=1000)]


class _Settings(BaseModel):
    """A frozen settings model whose refusals are :class:`ConfigError`."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_as_config_error(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as e:
            # Not a ValueError, so pydantic lets it through as it is.
            raise ConfigError(_describe(e, cls.model_fields)) from e


class RuntimeLimits(_Settings):
    """Limits tuned live from the console; stored as JSON in the limits parameter.

    Strict: the JSON's numbers must be whole numbers (not ``4.0``, ``"16"`` or ``true``) and
    the switch ``true`` or ``false``. Keys this version does not know are ignored, so a newer
    console's parameter still reads.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    #: (lowest, highest) of each bounded limit, from its ``Field``; the console shows them.
    BOUNDS: ClassVar[Mapping[str, tuple[int, int]]]

    #: Model calls in flight at once within one invocation.
    max_concurrency: Concurrency = 16
    #: Let the calls in flight follow the endpoint (shared/limits/adaptive.py), up to max_concurrency.
    adaptive_concurrency: bool = False
    #: The worker's invocations at once (its event source mappings' MaximumConcurrency) follow
    #: what the endpoints declare they serve (llmbatch/client/worker_sizing.py): set by the
    #: operator's client at each new job and change of limits. Off when an operator sets them.
    #: The workers do not read it.
    auto_workers: bool = True
    #: Requests and tokens per minute allowed at the endpoint (None: no limit).
    rpm_limit: int | None = Field(default=None, ge=1, le=10_000_000)
    tpm_limit: int | None = Field(default=None, ge=1, le=1_000_000_000)
    #: Guards against accidents: requests per job, and max_tokens a request may ask for.
    max_requests_per_job: int = Field(default=1_000_000, ge=1, le=100_000_000)
    max_tokens_per_request: int = Field(default=32_768, ge=1, le=10_000_000)
    #: Most inputs sent in one call where a route takes a list (embeddings ``input``,
    #: completions ``prompt``): single-input requests of a batch that differ only in their
    #: input share a call (see shared/packing.py). 1 turns packing off. On by default: it is
    #: what embeddings users expect, and an endpoint that refuses lists is noticed and
    #: called one request at a time. At most 2048, OpenAI's own limit for embeddings inputs.
    max_inputs_per_call: int = Field(default=16, ge=1, le=2048)

    @classmethod
    def from_json(cls, raw: str | Mapping[str, Any], *, defaults: RuntimeLimits | None = None) -> RuntimeLimits:
        """The limits parameter's value; a limit it does not name takes its value from
        ``defaults`` (the worker's configured ones), or the class default without them."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as e:
            raise ConfigError(f"the limits are not valid JSON: {e.msg} (at character {e.pos})") from e
        if not isinstance(data, Mapping):
            raise ConfigError(f"the limits must be a JSON object of limit to value, got {type(data).__name__}")
        base = {} if defaults is None else defaults.model_dump()
        return cls.model_validate({**base, **data})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)

    def with_changes(self, **changes: Any) -> RuntimeLimits:
        """These limits with ``changes`` applied, checked like any others."""
        unknown = changes.keys() - type(self).model_fields.keys()
        if unknown:
            raise TypeError(f"RuntimeLimits has no limit {', '.join(sorted(unknown))}")
        return self.model_validate({**self.model_dump(), **changes})


class WorkerConfig(_Settings):
    """Settings of the worker function, read from its environment: each field from the
    variable of its name in capitals (``call_timeout_s`` from ``CALL_TIMEOUT_S``), except
    ``endpoints`` (see :meth:`from_env`)."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=AliasGenerator(validation_alias=str.upper),
        validate_by_alias=True,
        validate_by_name=True,
    )

    jobs_table: str
    results_table: str
    #: The stack's original single endpoint (``EndpointName``/``EndpointUrl``), also in ``endpoints``.
    endpoint_name: str = "default"
    endpoint_url: str = ""
    #: ``ssm:/name`` (SecureString) or ``secretsmanager:name``; empty for no key.
    endpoint_api_key_ref: str = ""
    #: The calls that endpoint serves at once (``EndpointMaxConcurrency``; unset: not declared).
    endpoint_max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    call_timeout_s: float = Field(default=60.0, gt=0)
    write_reserve_s: float = Field(default=5.0, ge=0)
    min_call_s: float = Field(default=1.0, ge=0)
    counter_shards: int = Field(default=8, ge=1)
    limits_parameter: str = ""
    limits_max_age_s: float = Field(default=5.0, ge=0)
    #: Calls per invocation while the limits parameter does not say (see ``default_limits``).
    max_concurrency: Concurrency = 16
    #: The normal-priority request queue (shared/priority.py); a record of no known queue
    #: is taken for one of it. A record's failed retry delay and deferred copy go to its own queue.
    request_queue_url: str = ""
    #: The high- and low-priority request queues (empty: the stack has none).
    high_priority_queue_url: str = ""
    low_priority_queue_url: str = ""
    #: How often a container re-reads the higher-priority queues' backlog, and about how long
    #: a record held back behind them waits before it comes back (shared/worker/priority.py).
    priority_check_s: float = Field(default=2.0, gt=0)
    priority_yield_s: float = Field(default=5.0, ge=1, le=900)
    dead_letter_queue_url: str = ""
    retry_base_s: float = Field(default=2.0, ge=0)
    retry_max_s: float = Field(default=300.0, ge=0)
    #: Model calls a request may use (the template's MaxAttempts, also the queue's maxReceiveCount).
    max_attempts: int = Field(default=8, ge=1)
    #: The S3 bucket for payloads too big for a message or an item (the claim check).
    payload_bucket: str = ""
    #: Every endpoint a job may name: ``ENDPOINTS`` plus the original one (see ``from_env``).
    endpoints: Mapping[str, EndpointSpec] = Field(default_factory=dict)
    #: The ``LogPayloads`` debug switch: request and answer text in the request log lines.
    log_payloads: bool = False
    #: The stack's event bus, for each job's "Job Finished" event (shared/finish.py); empty: none.
    event_bus_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        variables = (name.upper() for name in cls.model_fields if name != "endpoints")
        # An empty variable is an unset one: the template sets some to "" when a parameter is.
        config = cls.model_validate({v: env[v] for v in variables if env.get(v) not in (None, "")})
        # ENDPOINT_URL is needed only while ENDPOINTS does not define ENDPOINT_NAME itself.
        endpoints = with_legacy_endpoint(
            parse_endpoints(env.get("ENDPOINTS", "")),
            name=config.endpoint_name,
            url=config.endpoint_url,
            api_key_ref=config.endpoint_api_key_ref,
            max_concurrency=config.endpoint_max_concurrency,
        )
        return config.model_copy(update={"endpoints": endpoints})

    @property
    def default_limits(self) -> RuntimeLimits:
        """The limits in force while the limits parameter is unreadable, and for the limits
        it does not name."""
        return RuntimeLimits(max_concurrency=self.max_concurrency)

    def rate_limit_overrides(self) -> dict[str, RateLimits]:
        """The endpoints with RPM/TPM limits of their own; these win over the live limits."""
        return {
            name: RateLimits(rpm=spec.rpm_limit, tpm=spec.tpm_limit)
            for name, spec in self.endpoints.items()
            if spec.rpm_limit is not None or spec.tpm_limit is not None
        }

    def packing_caps(self) -> dict[str, int]:
        """The endpoints with an inputs-per-call cap of their own, in place of the live one."""
        return {
            name: spec.max_inputs_per_call
            for name, spec in self.endpoints.items()
            if spec.max_inputs_per_call is not None
        }


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _describe(e: ValidationError, fields: Mapping[str, FieldInfo]) -> str:
    """Each refused setting by its name (its variable, when read from one) and what it allows:
    ``max_concurrency must be a whole number from 1 to 1000, got 1001``."""
    by_variable = {info.validation_alias: info for info in fields.values() if isinstance(info.validation_alias, str)}
    problems = []
    for err in e.errors(include_url=False):
        key, *inside = [str(p) for p in err["loc"]] or ["(settings)"]
        subject = f"environment variable {key}" if key in by_variable else key
        info = fields.get(key) or by_variable.get(key)
        allowed = _allowed(info) if info is not None else None
        if inside:  # within a setting: an endpoint's own field
            problems.append(f"{subject} {'.'.join(inside)}: {err['msg']}")
        elif err["type"] == "missing":
            problems.append(f"{subject} is not set")
        elif allowed is None:
            problems.append(f"{subject}: {err['msg']}")
        else:
            problems.append(f"{subject} must be {allowed}, got {err['input']!r}")
    return "; ".join(problems)


def _allowed(info: FieldInfo) -> str | None:
    """What a field of a plain type accepts, in words: its type and the bounds of its
    ``Field``; None for other types (pydantic's own message then says what is wrong)."""
    kinds = {t for t in _members(info.annotation) if t is not type(None)}
    if kinds == {bool}:
        return "true or false"
    if kinds == {str}:
        return "text"
    if not kinds or not kinds <= {int, float}:
        return None
    what = "a whole number" if kinds == {int} else "a number"
    ge, gt, le = (_bound(info, kind) for kind in ("ge", "gt", "le"))
    if ge is not None and le is not None:
        return f"{what} from {ge} to {le}"
    if ge is not None:
        return f"{what} of at least {ge}"
    if gt is not None:
        return f"{what} above {gt}"
    return what


def _members(annotation: Any) -> tuple[Any, ...]:
    """``int | None`` as ``(int, NoneType)``; any other type as itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _bound(info: FieldInfo, kind: str) -> Any:
    """A field's ``ge``, ``gt`` or ``le`` bound (annotated-types metadata), or None."""
    return next((getattr(m, kind) for m in info.metadata if hasattr(m, kind)), None)


RuntimeLimits.BOUNDS = types.MappingProxyType(
    {
        name: (lo, hi)
        for name, info in RuntimeLimits.model_fields.items()
        if (lo := _bound(info, "ge")) is not None and (hi := _bound(info, "le")) is not None
    }
)
