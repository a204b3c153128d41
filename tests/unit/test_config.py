"""Tests of configuration (shared/config.py): the live limits read from their SSM parameter
(and edited by the console), and the worker's settings read from its environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmbatch.local.template import Resolver, function_spec, load_template, parameter_values
from shared.config import RuntimeLimits, WorkerConfig
from shared.errors import ConfigError
from shared.limits.source import LimitsSource

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
#: The variables the worker cannot do without.
REQUIRED_ENV = {"JOBS_TABLE": "jobs", "RESULTS_TABLE": "results", "ENDPOINT_URL": "http://model/v1"}

# --------------------------------------------------------------------------------------------
# RuntimeLimits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 1},
        {"max_concurrency": 1000},
        {"max_concurrency": 16, "rpm_limit": 1, "tpm_limit": 1},
        {"max_concurrency": 16, "rpm_limit": 10_000_000, "tpm_limit": 1_000_000_000},
        {"max_concurrency": 16, "rpm_limit": None, "tpm_limit": None},
    ],
)
def test_limits_on_the_bounds_are_accepted(kwargs: dict[str, Any]) -> None:
    # GIVEN / WHEN limits at the edge of their range
    limits = RuntimeLimits(**kwargs)

    # THEN they are kept as given
    for name, value in kwargs.items():
        assert getattr(limits, name) == value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 0},
        {"max_concurrency": 1001},
        {"max_concurrency": None},
        {"max_concurrency": 4.0},
        {"max_concurrency": True},
        {"max_concurrency": "16"},
        {"rpm_limit": 0},
        {"rpm_limit": 10_000_001},
        {"tpm_limit": 0},
        {"tpm_limit": 1_000_000_001},
    ],
)
def test_limits_out_of_bounds_or_not_whole_numbers_are_refused(kwargs: dict[str, Any]) -> None:
    # GIVEN / WHEN / THEN an out-of-range limit is a configuration error naming the field
    with pytest.raises(ConfigError) as info:
        RuntimeLimits(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


def test_limits_from_json_ignore_unknown_keys() -> None:
    # GIVEN the limits parameter written by a newer console, with a key this worker does not know
    raw = json.dumps({"max_concurrency": 32, "rpm_limit": 600, "tpm_limit": None, "adaptive": True})

    # WHEN it is read
    limits = RuntimeLimits.from_json(raw)

    # THEN the known keys are used and the rest ignored
    assert limits == RuntimeLimits(max_concurrency=32, rpm_limit=600, tpm_limit=None)


def test_limits_from_json_take_defaults_for_missing_keys_and_round_trip() -> None:
    # GIVEN a parameter naming only the concurrency (also given as a mapping)
    # WHEN it is read
    from_text = RuntimeLimits.from_json('{"max_concurrency": 5}')
    from_mapping = RuntimeLimits.from_json({"max_concurrency": 5})

    # THEN the rest take their defaults, and to_json/from_json round-trips
    assert from_text == from_mapping == RuntimeLimits(max_concurrency=5)
    assert RuntimeLimits.from_json(from_text.to_json()) == from_text


def test_limits_from_json_still_check_bounds() -> None:
    # GIVEN / WHEN / THEN a parameter with an out-of-range value is refused
    with pytest.raises(ConfigError):
        RuntimeLimits.from_json('{"max_concurrency": 0}')


@pytest.mark.parametrize(("name", "bounds"), sorted(RuntimeLimits.BOUNDS.items()))
def test_each_bounded_limit_is_refused_just_outside_its_range_with_the_range_named(
    name: str, bounds: tuple[int, int]
) -> None:
    # GIVEN a limit's bounds, as the console shows them beside its field
    lo, hi = bounds

    # WHEN / THEN each edge is accepted and one past it is refused, the message naming the range
    assert getattr(RuntimeLimits().with_changes(**{name: lo}), name) == lo
    assert getattr(RuntimeLimits().with_changes(**{name: hi}), name) == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ConfigError) as info:
            RuntimeLimits().with_changes(**{name: bad})
        assert str(info.value) == f"{name} must be a whole number from {lo} to {hi}, got {bad}"


def test_every_numeric_limit_has_bounds_the_console_can_show() -> None:
    # GIVEN / WHEN / THEN every limit but the on/off switches has a range
    assert set(RuntimeLimits.BOUNDS) == set(RuntimeLimits.model_fields) - {"adaptive_concurrency", "auto_workers"}
    assert RuntimeLimits.BOUNDS["max_concurrency"] == (1, 1000)


@pytest.mark.parametrize("switch", ["adaptive_concurrency", "auto_workers"])
@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_switch_is_true_or_false_only(value: Any, switch: str) -> None:
    # GIVEN / WHEN / THEN a switch given as anything but a JSON boolean is refused
    with pytest.raises(ConfigError, match=f"{switch} must be true or false"):
        RuntimeLimits.from_json({switch: value})


def test_limits_are_frozen_and_changed_only_through_with_changes() -> None:
    # GIVEN limits in force
    limits = RuntimeLimits(max_concurrency=8)

    # WHEN / THEN they cannot be changed in place
    with pytest.raises(ValidationError):
        limits.max_concurrency = 9  # type: ignore[misc]

    # AND with_changes gives new, checked limits, leaving the old ones as they were
    assert limits.with_changes(max_concurrency=9, adaptive_concurrency=True) == RuntimeLimits(
        max_concurrency=9, adaptive_concurrency=True
    )
    assert limits.max_concurrency == 8
    with pytest.raises(ConfigError, match="max_concurrency"):
        limits.with_changes(max_concurrency=0)
    with pytest.raises(TypeError, match="max_concurency"):
        limits.with_changes(max_concurency=9)


def test_limits_missing_from_the_parameter_take_the_configured_defaults() -> None:
    # GIVEN a worker configured for 40 calls per invocation (MAX_CONCURRENCY) and a parameter
    # that does not name max_concurrency
    defaults = WorkerConfig.from_env({**REQUIRED_ENV, "MAX_CONCURRENCY": "40"}).default_limits

    # WHEN it is read with the configured defaults
    limits = RuntimeLimits.from_json('{"rpm_limit": 600}', defaults=defaults)

    # THEN the parameter's values are used and the missing one is the configured default, not 16
    assert (limits.max_concurrency, limits.rpm_limit) == (40, 600)
    assert RuntimeLimits.from_json('{"max_concurrency": 5}', defaults=defaults).max_concurrency == 5
    assert RuntimeLimits.from_json("{}", defaults=defaults) == defaults


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "null", '"16"'])
def test_limits_that_are_not_a_json_object_are_a_config_error(raw: str) -> None:
    # GIVEN / WHEN / THEN a parameter that is not a JSON object is refused as configuration
    with pytest.raises(ConfigError, match="limits"):
        RuntimeLimits.from_json(raw)


class FakeSsm:
    """Powertools' SSM provider, answering with the values given, in turn."""

    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.forced: list[bool] = []

    def get(self, name: str, max_age: int, force_fetch: bool = False) -> str:
        self.forced.append(force_fetch)
        return self.values.pop(0)


def test_the_limits_source_fills_what_the_parameter_does_not_name_from_the_configured_defaults() -> None:
    # GIVEN a worker configured for 40 calls per invocation, whose limits parameter names only
    # an RPM limit, then holds an out-of-range value
    config = WorkerConfig.from_env({**REQUIRED_ENV, "MAX_CONCURRENCY": "40", "LIMITS_PARAMETER": "/s/limits"})
    source = LimitsSource(config)
    ssm = FakeSsm('{"rpm_limit": 600, "added_later": 1}', '{"max_concurrency": 0}')
    source._ssm = lambda: ssm  # type: ignore[method-assign]

    # WHEN the limits are read, twice
    first, second = source(), source()

    # THEN the first has the configured concurrency with the parameter's RPM limit, and the
    # refused second read leaves it in force
    assert first == RuntimeLimits(max_concurrency=40, rpm_limit=600)
    assert second == first


def test_limits_read_at_init_are_read_afresh_by_the_first_invocation() -> None:
    # GIVEN a container whose init read the limits (warm), and an operator who changes them
    # before its first invocation
    config = WorkerConfig.from_env({**REQUIRED_ENV, "LIMITS_PARAMETER": "/s/limits"})
    source = LimitsSource(config)
    ssm = FakeSsm('{"rpm_limit": 600}', '{"rpm_limit": 900}', '{"rpm_limit": 900}')
    source._ssm = lambda: ssm  # type: ignore[method-assign]
    source.warm()

    # WHEN the invocations read them
    first, second = source(), source()

    # THEN the first bypasses the cache the init filled, the next ones may use it
    assert ssm.forced == [False, True, False]
    assert first.rpm_limit == second.rpm_limit == 900


# --------------------------------------------------------------------------------------------
# WorkerConfig
# --------------------------------------------------------------------------------------------


def test_the_worker_config_takes_defaults_for_everything_optional() -> None:
    # GIVEN only the required variables
    # WHEN the config is read
    config = WorkerConfig.from_env(dict(REQUIRED_ENV))

    # THEN the required values are used and the rest are the documented defaults
    assert (config.jobs_table, config.results_table, config.endpoint_url) == ("jobs", "results", "http://model/v1")
    assert config.endpoint_name == "default"
    assert config.endpoint_api_key_ref == ""
    assert config.call_timeout_s == 60.0
    assert config.default_limits == RuntimeLimits(max_concurrency=16)
    assert config.counter_shards == 8
    assert (config.max_attempts, config.log_payloads, config.payload_bucket) == (8, False, "")


def test_the_worker_config_reads_every_variable_the_template_sets() -> None:
    # GIVEN a full environment, as template.yaml gives the function
    env = {
        **REQUIRED_ENV,
        "ENDPOINT_NAME": "vllm",
        "ENDPOINT_API_KEY_REF": "ssm:/llmbatch/key",
        "CALL_TIMEOUT_S": "45",
        "WRITE_RESERVE_S": "8",
        "MIN_CALL_S": "1.5",
        "COUNTER_SHARDS": "4",
        "LIMITS_PARAMETER": "/stack/limits",
        "LIMITS_MAX_AGE_S": "7",
        "MAX_CONCURRENCY": "32",
        "REQUEST_QUEUE_URL": "http://sqs/q",
        "DEAD_LETTER_QUEUE_URL": "http://sqs/dlq",
        "RETRY_BASE_S": "3",
        "RETRY_MAX_S": "120",
        "MAX_ATTEMPTS": "5",
        "PAYLOAD_BUCKET": "payloads",
        "LOG_PAYLOADS": "true",
    }

    # WHEN the config is read
    config = WorkerConfig.from_env(env)

    # THEN every value arrives, numbers as numbers
    assert config.endpoint_name == "vllm"
    assert config.endpoint_api_key_ref == "ssm:/llmbatch/key"
    assert (config.call_timeout_s, config.write_reserve_s, config.min_call_s) == (45.0, 8.0, 1.5)
    assert config.counter_shards == 4
    assert (config.limits_parameter, config.limits_max_age_s) == ("/stack/limits", 7.0)
    assert config.default_limits.max_concurrency == 32
    assert (config.request_queue_url, config.dead_letter_queue_url) == ("http://sqs/q", "http://sqs/dlq")
    assert (config.retry_base_s, config.retry_max_s) == (3.0, 120.0)
    assert (config.max_attempts, config.payload_bucket, config.log_payloads) == (5, "payloads", True)


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_missing_required_variable_is_a_config_error_naming_it(missing: str, how: str) -> None:
    # GIVEN an environment without one required variable (or with it empty)
    env = dict(REQUIRED_ENV)
    if how == "absent":
        del env[missing]
    else:
        env[missing] = ""

    # WHEN / THEN reading the config fails, naming the variable
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_env(env)
    assert missing in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("CALL_TIMEOUT_S", "sixty"), ("MAX_CONCURRENCY", "0")])
def test_a_bad_number_is_a_config_error(name: str, value: str) -> None:
    # GIVEN a variable that is not a number (or out of range)
    env = {**REQUIRED_ENV, name: value}

    # WHEN / THEN the config is refused
    with pytest.raises(ConfigError):
        WorkerConfig.from_env(env)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("CALL_TIMEOUT_S", "sixty", "CALL_TIMEOUT_S must be a number above 0, got 'sixty'"),
        ("CALL_TIMEOUT_S", "0", "CALL_TIMEOUT_S must be a number above 0"),
        ("MAX_CONCURRENCY", "1001", "MAX_CONCURRENCY must be a whole number from 1 to 1000, got '1001'"),
        ("COUNTER_SHARDS", "4.5", "COUNTER_SHARDS must be a whole number of at least 1"),
        ("MAX_ATTEMPTS", "0", "MAX_ATTEMPTS must be a whole number of at least 1, got '0'"),
        ("RETRY_BASE_S", "-1", "RETRY_BASE_S must be a number of at least 0"),
        ("LOG_PAYLOADS", "maybe", "LOG_PAYLOADS must be true or false, got 'maybe'"),
    ],
)
def test_a_refused_variable_is_named_with_what_it_allows(name: str, value: str, reason: str) -> None:
    # GIVEN / WHEN / THEN the message names the variable, what it allows and what it got
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_env({**REQUIRED_ENV, name: value})
    assert str(info.value).startswith(f"environment variable {reason}")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("True", True)])
def test_log_payloads_is_a_switch(value: str, expected: bool) -> None:
    # GIVEN / WHEN / THEN LOG_PAYLOADS reads as the template's "true"/"false"
    assert WorkerConfig.from_env({**REQUIRED_ENV, "LOG_PAYLOADS": value}).log_payloads is expected


def test_the_worker_config_is_frozen() -> None:
    # GIVEN / WHEN / THEN a setting cannot change once read
    config = WorkerConfig.from_env(dict(REQUIRED_ENV))
    with pytest.raises(ValidationError):
        config.max_attempts = 3  # type: ignore[misc]


def template_worker_env(**parameters: str) -> dict[str, str]:
    """The Worker's environment as the template resolves it, for the given parameter values."""
    template = load_template(TEMPLATE_PATH)
    resolver = Resolver(template, parameter_values(template, parameters), {"AWS::StackName": "s"})
    for name in template["Resources"]:  # stand-ins for what CloudFormation would create
        resolver.refs[name] = f"s-{name}"
    return {
        k: str(v) for k, v in resolver.resolve(function_spec(template, "Worker")["Environment"]["Variables"]).items()
    }


#: Variables the template sets on the Worker that others read: Powertools, the console's
#: prices, and ENDPOINTS (parsed into ``endpoints``).
READ_ELSEWHERE = {"PRICES", "ENDPOINTS"}


@pytest.mark.parametrize("edge", ["MinValue", "Default", "MaxValue"])
def test_the_worker_reads_every_variable_the_template_sets_at_any_value_its_parameters_allow(edge: str) -> None:
    # GIVEN the template's numeric parameters at the edge of what they allow
    template = load_template(TEMPLATE_PATH)
    numbers = {name: p for name, p in template["Parameters"].items() if p["Type"] == "Number"}
    env = template_worker_env(**{name: str(p.get(edge, p["Default"])) for name, p in numbers.items()})

    # WHEN the worker reads its environment
    config = WorkerConfig.from_env(env)

    # THEN every variable is a setting (or read elsewhere), and each arrives as set
    settings = {name.upper(): name for name in WorkerConfig.model_fields}
    unread = {v for v in env if v not in settings and v not in READ_ELSEWHERE and not v.startswith("POWERTOOLS_")}
    assert unread == set()
    for variable, value in env.items():
        if variable in settings and value:  # numbers as numbers ("8" as 8.0), "false" as False
            assert str(getattr(config, settings[variable])) in (value, f"{value}.0", value.capitalize())
