"""Configuration, from one place: the environment the stack gives each function.

``template.yaml`` sets these variables on the functions (from its Parameters and
resources); the local stack reads the same template and sets the same variables.
Limits that operators change while jobs run live in one SSM parameter (``LIMITS_PARAMETER``)
that workers re-read every few seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from shared.endpoints.specs import EndpointSpec, parse_endpoints, with_legacy_endpoint
from shared.errors import ConfigError
from shared.rate_math import RateLimits


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not a number") from e


@dataclass(frozen=True)
class RuntimeLimits:
    """Limits tuned live from the console; stored as JSON in the limits parameter."""

    #: Model calls in flight at once within one invocation.
    max_concurrency: int = 16
    #: Let the calls in flight follow the endpoint (shared/adaptive.py), up to max_concurrency.
    adaptive_concurrency: bool = False
    #: Requests and tokens per minute allowed at the endpoint (None: no limit).
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    #: Guards against accidents: requests per job, and max_tokens a request may ask for.
    max_requests_per_job: int = 1_000_000
    max_tokens_per_request: int = 32_768
    #: Most inputs sent in one call where a route takes a list (embeddings ``input``,
    #: completions ``prompt``): single-input requests of a batch that differ only in their
    #: input share a call (see shared/packing.py). 1 turns packing off. On by default: it is
    #: what embeddings users expect, and an endpoint that refuses lists is noticed and
    #: called one request at a time.
    max_inputs_per_call: int = 16

    BOUNDS = {
        "max_concurrency": (1, 1000),
        "rpm_limit": (1, 10_000_000),
        "tpm_limit": (1, 1_000_000_000),
        "max_requests_per_job": (1, 100_000_000),
        "max_tokens_per_request": (1, 10_000_000),
        # OpenAI's own limit for embeddings inputs per request.
        "max_inputs_per_call": (1, 2048),
    }
    OPTIONAL = frozenset({"rpm_limit", "tpm_limit"})

    def __post_init__(self) -> None:
        for name, (lo, hi) in self.BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in self.OPTIONAL:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
        if not isinstance(self.adaptive_concurrency, bool):
            raise ConfigError(f"adaptive_concurrency must be true or false, got {self.adaptive_concurrency!r}")

    @classmethod
    def from_json(cls, raw: str | Mapping[str, Any]) -> RuntimeLimits:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def with_changes(self, **changes: Any) -> RuntimeLimits:
        return replace(self, **changes)


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of the worker function, read from its environment."""

    jobs_table: str
    results_table: str
    #: The stack's original single endpoint (``EndpointName``/``EndpointUrl``), also in ``endpoints``.
    endpoint_name: str
    endpoint_url: str
    #: ``ssm:/name`` (SecureString) or ``secretsmanager:name``; empty for no key.
    endpoint_api_key_ref: str
    call_timeout_s: float
    write_reserve_s: float
    min_call_s: float
    counter_shards: int
    limits_parameter: str
    limits_max_age_s: float
    default_limits: RuntimeLimits
    #: The queue the worker reads; failed messages get their visibility set on it.
    request_queue_url: str = ""
    dead_letter_queue_url: str = ""
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    #: Model calls a request may use (the template's MaxAttempts, also the queue's maxReceiveCount).
    max_attempts: int = 8
    #: The S3 bucket for payloads too big for a message or an item (the claim check).
    payload_bucket: str = ""
    #: Every endpoint a job may name: ``ENDPOINTS`` plus the original one (see ``from_env``).
    endpoints: Mapping[str, EndpointSpec] = field(default_factory=dict)
    #: The ``LogPayloads`` debug switch: request and answer text in the request log lines.
    log_payloads: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        jobs_table, results_table = _get(env, "JOBS_TABLE"), _get(env, "RESULTS_TABLE")
        endpoint_name = _get(env, "ENDPOINT_NAME", "default")
        endpoint_url = env.get("ENDPOINT_URL", "")
        endpoint_api_key_ref = env.get("ENDPOINT_API_KEY_REF", "")
        # ENDPOINT_URL is needed only while ENDPOINTS does not define ENDPOINT_NAME itself.
        endpoints = with_legacy_endpoint(
            parse_endpoints(env.get("ENDPOINTS", "")),
            name=endpoint_name,
            url=endpoint_url,
            api_key_ref=endpoint_api_key_ref,
        )
        return cls(
            jobs_table=jobs_table,
            results_table=results_table,
            endpoint_name=endpoint_name,
            endpoint_url=endpoint_url,
            endpoint_api_key_ref=endpoint_api_key_ref,
            endpoints=endpoints,
            call_timeout_s=_number(env, "CALL_TIMEOUT_S", 60.0),
            write_reserve_s=_number(env, "WRITE_RESERVE_S", 5.0),
            min_call_s=_number(env, "MIN_CALL_S", 1.0),
            counter_shards=int(_number(env, "COUNTER_SHARDS", 8)),
            limits_parameter=env.get("LIMITS_PARAMETER", ""),
            limits_max_age_s=_number(env, "LIMITS_MAX_AGE_S", 5.0),
            default_limits=RuntimeLimits(max_concurrency=int(_number(env, "MAX_CONCURRENCY", 16))),
            request_queue_url=env.get("REQUEST_QUEUE_URL", ""),
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL", ""),
            retry_base_s=_number(env, "RETRY_BASE_S", 2.0),
            retry_max_s=_number(env, "RETRY_MAX_S", 300.0),
            max_attempts=int(_number(env, "MAX_ATTEMPTS", 8)),
            payload_bucket=env.get("PAYLOAD_BUCKET", ""),
            log_payloads=env.get("LOG_PAYLOADS", "false").strip().lower() == "true",
        )

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
