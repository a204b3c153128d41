"""The simulator's settings: :class:`SimulatorConfig`, with values coerced to their
types wherever they come from (``POST /_sim/config``, the CLI's ``--config-json``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The model name that always answers 404 ``model_not_found`` (every other name is served).
MISSING_MODEL = "missing-model"
#: Request header whose value is counted per call in ``calls_by_custom_id``.
CUSTOM_ID_HEADER = "x-llmbatch-custom-id"
#: The only interface the simulator listens on (it has no real auth; never expose it).
LOCALHOST = "127.0.0.1"


_CLIENT_MAX_SIZE = 32 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated endpoint behaves.

    Frozen so a live update (``POST /_sim/config``) swaps the whole object atomically: a
    request in flight sees one consistent config, never half of an update.
    """

    #: Requests served at once; the rest wait in a FIFO queue (like a vLLM batch size).
    slots: int = 8
    #: Fixed part of every request's service time.
    base_latency_s: float = 0.05
    #: Service time per (estimated) prompt token.
    per_prompt_token_s: float = 0.0
    #: Service time per generated token.
    per_output_token_s: float = 0.001
    #: Uniform +- jitter added to the service time (seeded, never below zero in total).
    jitter_s: float = 0.01
    #: Requests per minute; ``None`` = unlimited.
    rpm_limit: int | None = None
    #: Tokens (prompt estimate + max_tokens) per minute; ``None`` = unlimited.
    tpm_limit: int | None = None
    #: Probability of an injected 429, independent of the limits.
    error_rate_429: float = 0.0
    #: Probability of an injected 500/502/503 (the code is drawn from the seeded RNG too).
    error_rate_5xx: float = 0.0
    #: Probability that a request hangs for ``hang_s`` while holding its slot.
    hang_rate: float = 0.0
    #: How long a hang lasts (default: an hour, i.e. until the client gives up).
    hang_s: float = 3600.0
    #: Probability of a slow tail: ``slow_tail_s`` extra service time.
    slow_tail_rate: float = 0.0
    slow_tail_s: float = 2.0
    #: Seeds every random choice: fault draws, jitter, generated text, embeddings.
    seed: int = 0
    #: max_tokens used when the request gives neither max_tokens nor max_completion_tokens.
    max_output_tokens_default: int = 16
    #: Retry-After sent with injected (not limit-driven) 429s.
    retry_after_s: float = 1.0
    #: When set, ``Authorization: Bearer <api_key>`` is required on /v1 routes.
    api_key: str | None = None
    #: Names listed by ``GET /v1/models`` (any name but ``missing-model`` is served).
    models: tuple[str, ...] = ("sim-model",)
    #: The Batch API (``/v1/files`` + ``/v1/batches``, simulator/batch_api.py): seconds a
    #: batch stays ``validating`` and ``finalizing`` (and ``cancelling``), requests done per
    #: second while ``in_progress``, and OpenAI's limits of one batch.
    batch_step_s: float = 1.0
    batch_records_per_s: float = 50.0
    batch_max_requests: int = 50_000
    batch_max_file_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be >= 1")
        for name in ("error_rate_429", "error_rate_5xx", "hang_rate", "slow_tail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in (
            "base_latency_s",
            "per_prompt_token_s",
            "per_output_token_s",
            "jitter_s",
            "hang_s",
            "slow_tail_s",
            "retry_after_s",
            "batch_step_s",
        ):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if self.max_output_tokens_default < 1:
            raise ValueError("max_output_tokens_default must be >= 1")
        if not self.models:
            raise ValueError("models must name at least one model")
        if not (math.isfinite(self.batch_records_per_s) and self.batch_records_per_s > 0):
            raise ValueError(f"batch_records_per_s must be a finite number > 0, got {self.batch_records_per_s}")
        if self.batch_max_requests < 1 or self.batch_max_file_bytes < 1:
            raise ValueError("batch_max_requests and batch_max_file_bytes must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulatorConfig:
        """Build a config from JSON-like data; missing keys take their defaults.

        Unknown keys and wrong types raise ``ValueError`` rather than being ignored: a drill
        that mistypes ``error_rate_5xx`` should fail loudly, not run without its fault.
        """
        if not isinstance(data, Mapping):
            raise ValueError("simulator config must be a JSON object")
        hints = _config_hints()
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise ValueError(f"unknown simulator config key(s): {', '.join(unknown)}")
        kwargs = {name: _coerce_config_value(name, hints[name], value) for name, value in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``models`` as a list); ``from_dict(to_dict())`` round-trips."""
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        return data

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with ``changes`` (a partial dict, validated like ``from_dict``) applied."""
        if not isinstance(changes, Mapping):
            raise ValueError("simulator config changes must be a JSON object")
        return SimulatorConfig.from_dict({**self.to_dict(), **changes})


def _config_hints() -> dict[str, Any]:
    # Resolved lazily: with `from __future__ import annotations` the field types are strings.
    return typing.get_type_hints(SimulatorConfig)


def _coerce_config_value(name: str, hint: Any, value: Any) -> Any:
    """Check one JSON value against a config field's type (int -> float is allowed)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = next(arg for arg in args if arg is not type(None))
        return _coerce_config_value(name, inner, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list of strings, got {value!r}")
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"{name} must be a list of strings, got {value!r}")
        return tuple(value)
    raise ValueError(f"{name}: unsupported config type {hint!r}")  # pragma: no cover
