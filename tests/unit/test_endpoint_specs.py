"""Tests of named endpoint configuration (shared/endpoints/specs.py) and how the worker's
config reads it from ``ENDPOINTS`` beside the original single endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.config import WorkerConfig
from shared.endpoints.specs import BedrockSpec, OpenAISpec, SageMakerSpec, parse_endpoints
from shared.errors import ConfigError

BASE_ENV = {"JOBS_TABLE": "jobs", "RESULTS_TABLE": "results", "ENDPOINT_URL": "http://sim/v1"}


def config_error(raw: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_endpoints(raw)
    return str(info.value)


def test_each_kind_is_read_with_its_own_settings_and_the_common_limits() -> None:
    # GIVEN one endpoint of each kind
    raw = json.dumps(
        {
            "vllm": {
                "kind": "openai",
                "url": "https://vllm.internal/v1",
                "api_key_ref": "ssm:/keys/vllm",
                "rpm_limit": 600,
            },
            "claude": {
                "kind": "bedrock",
                "region": "eu-west-1",
                "default_model": "anthropic.claude-3-haiku-20240307-v1:0",
                "tpm_limit": 200000,
            },
            "llama": {"kind": "sagemaker", "endpoint_name": "llama-3-8b", "mapping": "tgi", "max_inputs_per_call": 8},
        }
    )

    # WHEN they are parsed
    specs = parse_endpoints(raw)

    # THEN each has its kind's type and every setting given, the rest at their defaults
    vllm, claude, llama = specs["vllm"], specs["claude"], specs["llama"]
    assert isinstance(vllm, OpenAISpec) and (vllm.url, vllm.api_key_ref, vllm.rpm_limit) == (
        "https://vllm.internal/v1",
        "ssm:/keys/vllm",
        600,
    )
    assert isinstance(claude, BedrockSpec)
    assert (claude.region, claude.default_model, claude.tpm_limit, claude.endpoint_url) == (
        "eu-west-1",
        "anthropic.claude-3-haiku-20240307-v1:0",
        200000,
        None,
    )
    assert isinstance(llama, SageMakerSpec)
    assert (llama.endpoint_name, llama.mapping, llama.max_inputs_per_call, llama.region) == (
        "llama-3-8b",
        "tgi",
        8,
        None,
    )


def test_empty_text_is_no_endpoints() -> None:
    # GIVEN / WHEN / THEN the template's default ("") defines nothing
    assert parse_endpoints("") == {} == parse_endpoints("  ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", ["ENDPOINTS", "not valid JSON"]),
        ('["a"]', ["ENDPOINTS", "JSON object"]),
        ('{"a": "openai"}', ["'a'", "object with a 'kind'"]),
        ('{"a": {"kind": "vertex"}}', ["'a'", "'kind'", "openai, bedrock, sagemaker", "vertex"]),
        ('{"a": {"kind": "openai"}}', ["'a'", "'url'", "required"]),
        ('{"a": {"kind": "openai", "url": "ftp://x"}}', ["'a'", "'url'"]),
        ('{"a": {"kind": "openai", "url": "http://x", "api_key": "sk-1"}}', ["'a'", "unknown field 'api_key'"]),
        ('{"a": {"kind": "openai", "url": "http://x", "api_key_ref": "sk-1"}}', ["'a'", "'api_key_ref'"]),
        ('{"s": {"kind": "sagemaker", "endpoint_name": "e", "mapping": "vllm"}}', ["'s'", "'mapping'"]),
        ('{"s": {"kind": "sagemaker", "mapping": "tgi"}}', ["'s'", "'endpoint_name'", "required"]),
        ('{"b": {"kind": "bedrock", "rpm_limit": 0}}', ["'b'", "'rpm_limit'"]),
        ('{"b": {"kind": "bedrock", "defaultModel": "x"}}', ["'b'", "unknown field 'defaultModel'"]),
        ('{"bad name!": {"kind": "bedrock"}}', ["'bad name!'", "letters, digits"]),
    ],
    ids=[
        "not-json",
        "not-object",
        "spec-not-object",
        "unknown-kind",
        "missing-url",
        "bad-url",
        "plain-key",
        "bad-key-ref",
        "bad-mapping",
        "missing-endpoint-name",
        "zero-limit",
        "misspelt-field",
        "bad-name",
    ],
)
def test_a_bad_spec_is_a_config_error_naming_the_endpoint_and_field(raw: str, expected: list[str]) -> None:
    # GIVEN / WHEN a bad ENDPOINTS value is parsed
    message = config_error(raw)

    # THEN the error names where the problem is
    for part in expected:
        assert part in message, message


# --------------------------------------------------------------------------------------------
# WorkerConfig.from_env
# --------------------------------------------------------------------------------------------


def test_without_endpoints_the_original_single_endpoint_is_the_only_one() -> None:
    # GIVEN the original variables only, as before named endpoints existed
    env = {**BASE_ENV, "ENDPOINT_NAME": "vllm", "ENDPOINT_API_KEY_REF": "ssm:/k"}

    # WHEN the config is read
    config = WorkerConfig.from_env(env)

    # THEN that endpoint is there, an openai one, under its name
    assert list(config.endpoints) == ["vllm"]
    spec = config.endpoints["vllm"]
    assert isinstance(spec, OpenAISpec) and (spec.url, spec.api_key_ref) == ("http://sim/v1", "ssm:/k")


def test_endpoints_are_added_beside_the_original_one() -> None:
    # GIVEN ENDPOINTS naming a Bedrock endpoint
    env = {**BASE_ENV, "ENDPOINTS": json.dumps({"claude": {"kind": "bedrock", "default_model": "m.x"}})}

    # WHEN the config is read
    config = WorkerConfig.from_env(env)

    # THEN both are there
    assert set(config.endpoints) == {"default", "claude"}
    assert isinstance(config.endpoints["default"], OpenAISpec)
    assert isinstance(config.endpoints["claude"], BedrockSpec)


def test_endpoints_may_redefine_the_original_endpoint_and_then_need_no_url() -> None:
    # GIVEN ENDPOINTS defining "default" itself, and no ENDPOINT_URL at all
    env: dict[str, Any] = {k: v for k, v in BASE_ENV.items() if k != "ENDPOINT_URL"}
    env["ENDPOINTS"] = json.dumps({"default": {"kind": "bedrock", "default_model": "m.x"}})

    # WHEN the config is read
    config = WorkerConfig.from_env(env)

    # THEN ENDPOINTS' definition wins
    assert list(config.endpoints) == ["default"]
    assert isinstance(config.endpoints["default"], BedrockSpec)


def test_a_bad_endpoints_variable_stops_the_worker_config() -> None:
    # GIVEN / WHEN / THEN an invalid ENDPOINTS is a ConfigError naming the endpoint
    with pytest.raises(ConfigError, match="'claude'"):
        WorkerConfig.from_env({**BASE_ENV, "ENDPOINTS": '{"claude": {"kind": "bedrock", "region": ""}}'})
