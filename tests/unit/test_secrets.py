"""Endpoint API keys come from Secrets Manager or an SSM SecureString, never plain config."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import pytest
from moto import mock_aws

from llmbatch.local.simulator import SimulatorConfig, start_simulator
from shared.endpoints.base import EndpointReply
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.errors import ConfigError, PermanentError, TransientError
from shared.secrets import ApiKey, resolve_api_key


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        yield


def test_a_key_is_read_from_an_ssm_secure_string(aws: None) -> None:
    # GIVEN a SecureString parameter
    boto3.client("ssm").put_parameter(Name="/llmbatch/key", Value="sk-ssm-123", Type="SecureString")
    # WHEN the reference names it
    # THEN the decrypted value comes back
    assert resolve_api_key("ssm:/llmbatch/key") == "sk-ssm-123"


def test_a_key_is_read_from_secrets_manager(aws: None) -> None:
    boto3.client("secretsmanager").create_secret(Name="endpoint-key", SecretString="sk-sm-456")
    assert resolve_api_key("secretsmanager:endpoint-key") == "sk-sm-456"


def test_no_reference_means_no_key(aws: None) -> None:
    assert resolve_api_key("") is None


@pytest.mark.parametrize("ref", ["plain-text-key", "env:KEY", "ssm:"])
def test_anything_but_a_store_reference_is_refused(aws: None, ref: str) -> None:
    with pytest.raises(ConfigError):
        resolve_api_key(ref)


# --------------------------------------------------------------------------------------------
# Rotation: a key changed in its store is picked up when the endpoint refuses the old one
# --------------------------------------------------------------------------------------------

OLD, NEW = "sk-old-0f3a", "sk-new-9c1b"


def rotate(name: str, value: str) -> None:
    boto3.client("secretsmanager").put_secret_value(SecretId=name, SecretString=value)


class CountingResolver:
    """resolve_api_key, counting the reads that bypass the cache."""

    def __init__(self) -> None:
        self.fresh_reads = 0

    def __call__(self, ref: str, *, fresh: bool = False) -> str | None:
        self.fresh_reads += fresh
        return resolve_api_key(ref, fresh=fresh)


def test_a_fresh_read_bypasses_the_cache(aws: None) -> None:
    # GIVEN a key read once (now cached), then rotated in Secrets Manager
    boto3.client("secretsmanager").create_secret(Name="rotating", SecretString=OLD)
    assert resolve_api_key("secretsmanager:rotating") == OLD
    rotate("rotating", NEW)

    # WHEN it is read again, from the cache and fresh
    # THEN the cache still holds the old key, and a fresh read returns the new one
    assert resolve_api_key("secretsmanager:rotating") == OLD
    assert resolve_api_key("secretsmanager:rotating", fresh=True) == NEW
    assert resolve_api_key("secretsmanager:rotating") == NEW  # and the cache is refreshed


def test_a_fresh_read_of_an_ssm_key_bypasses_the_cache(aws: None) -> None:
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/k", Value=OLD, Type="SecureString")
    assert resolve_api_key("ssm:/k") == OLD
    ssm.put_parameter(Name="/k", Value=NEW, Type="SecureString", Overwrite=True)
    assert resolve_api_key("ssm:/k") == OLD
    assert resolve_api_key("ssm:/k", fresh=True) == NEW


async def test_after_a_refusal_the_rotated_key_is_returned_and_one_read_serves_a_burst(aws: None) -> None:
    # GIVEN a key read at start-up, then rotated
    boto3.client("secretsmanager").create_secret(Name="burst", SecretString=OLD)
    resolver = CountingResolver()
    key = ApiKey("secretsmanager:burst", resolver)
    rotate("burst", NEW)

    # WHEN five calls refused with the old key ask at once which key to use
    refused_at = time.monotonic()
    answers = await asyncio.gather(*(key.after_refusal(OLD, refused_at) for _ in range(5)))

    # THEN each is told the new key, from one read of the store (all were refused before it began)
    assert answers == [NEW] * 5
    assert key.value == NEW
    assert resolver.fresh_reads == 1


async def test_a_refusal_of_the_key_the_store_still_holds_is_final(aws: None) -> None:
    # GIVEN a key that is simply wrong: the store holds it unchanged
    boto3.client("secretsmanager").create_secret(Name="wrong", SecretString=OLD)
    resolver = CountingResolver()
    key = ApiKey("secretsmanager:wrong", resolver)

    # WHEN a call refused with it asks for another, twice, at different times
    first = await key.after_refusal(OLD, time.monotonic())
    second = await key.after_refusal(OLD, time.monotonic())

    # THEN there is none: the refusal is the answer; each refusal was judged on a read made after it
    assert (first, second) == (None, None)
    assert resolver.fresh_reads == 2


async def test_a_call_refused_with_an_older_key_gets_the_current_one_without_a_read(aws: None) -> None:
    boto3.client("secretsmanager").create_secret(Name="late", SecretString=OLD)
    resolver = CountingResolver()
    key = ApiKey("secretsmanager:late", resolver)
    rotate("late", NEW)
    refused_at = time.monotonic()
    assert await key.after_refusal(OLD, refused_at) == NEW
    # A call that was sent with the old key before the read, and refused before it began,
    # is given the new key at once.
    assert await key.after_refusal(OLD, refused_at) == NEW
    assert resolver.fresh_reads == 1


async def test_a_fixed_key_or_no_key_has_no_store_to_read() -> None:
    assert await ApiKey.fixed("sk-given").after_refusal("sk-given", time.monotonic()) is None
    assert await ApiKey("").after_refusal(None, time.monotonic()) is None
    assert ApiKey("").value is None


def test_an_api_key_never_shows_its_value(aws: None) -> None:
    boto3.client("secretsmanager").create_secret(Name="shown", SecretString=OLD)
    key = ApiKey("secretsmanager:shown")
    assert OLD not in repr(key) and OLD not in str(key)


# --------------------------------------------------------------------------------------------
# End to end: an OpenAI-compatible endpoint whose key was rotated
# --------------------------------------------------------------------------------------------


async def call(endpoint: OpenAIHttpEndpoint, custom_id: str) -> Any:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        return await endpoint.call("/v1/chat/completions", body, timeout_s=10.0, custom_id=custom_id)
    except Exception as e:
        return e


async def test_a_rotated_key_is_used_after_one_refusal_and_calls_succeed(
    aws: None, llmbatch_logs: pytest.LogCaptureFixture
) -> None:
    # GIVEN an endpoint whose key was read from Secrets Manager, and a server that now takes
    # only the new key (the key was rotated after the container read it)
    boto3.client("secretsmanager").create_secret(Name="endpoint", SecretString=OLD)
    resolver = CountingResolver()
    key = ApiKey("secretsmanager:endpoint", resolver)
    rotate("endpoint", NEW)
    server = await start_simulator(SimulatorConfig(api_key=NEW, base_latency_s=0.0, jitter_s=0.0))
    try:
        async with aiohttp.ClientSession() as session:
            endpoint = OpenAIHttpEndpoint("default", session, server.url, api_key=key)

            # WHEN it makes a call, and then another
            with llmbatch_logs.at_level("DEBUG", logger="llmbatch"):
                first = await call(endpoint, "after-rotation")
                second = await call(endpoint, "next")
            stats = server.simulator.stats()
    finally:
        await server.close()

    # THEN both are answered: the first after one refusal and one fresh read, the second at once
    assert isinstance(first, EndpointReply) and first.status_code == 200
    assert isinstance(second, EndpointReply) and second.status_code == 200
    assert resolver.fresh_reads == 1
    assert stats["calls_by_custom_id"] == {"after-rotation": 2, "next": 1}
    # ... and our logs noted the rotation without either key
    ours = [r.getMessage() for r in llmbatch_logs.records if r.name.startswith("llmbatch")]
    assert any("changed" in m for m in ours)
    assert not any(OLD in m or NEW in m for m in ours)


async def test_a_key_the_server_refuses_and_the_store_still_holds_is_a_permanent_401(aws: None) -> None:
    # GIVEN a key in Secrets Manager that the server does not take
    boto3.client("secretsmanager").create_secret(Name="bad", SecretString=OLD)
    resolver = CountingResolver()
    server = await start_simulator(SimulatorConfig(api_key=NEW, base_latency_s=0.0, jitter_s=0.0))
    try:
        async with aiohttp.ClientSession() as session:
            endpoint = OpenAIHttpEndpoint(
                "default", session, server.url, api_key=ApiKey("secretsmanager:bad", resolver)
            )

            # WHEN it calls
            error = await call(endpoint, "refused")
            stats = server.simulator.stats()
    finally:
        await server.close()

    # THEN the 401 is permanent, judged after one fresh read, with the call not repeated
    assert isinstance(error, PermanentError) and not isinstance(error, TransientError)
    assert error.status_code == 401
    assert resolver.fresh_reads == 1
    assert stats["calls_by_custom_id"] == {"refused": 1}


async def test_a_store_that_cannot_be_read_after_a_401_makes_the_call_transient() -> None:
    # GIVEN a key whose store fails when read again
    def failing(ref: str, *, fresh: bool = False) -> str | None:
        if fresh:
            raise ConnectionError("secrets manager unreachable")
        return OLD

    server = await start_simulator(SimulatorConfig(api_key=NEW, base_latency_s=0.0, jitter_s=0.0))
    try:
        async with aiohttp.ClientSession() as session:
            endpoint = OpenAIHttpEndpoint("default", session, server.url, api_key=ApiKey("secretsmanager:x", failing))
            error = await call(endpoint, "unverified")
    finally:
        await server.close()

    # THEN the 401 is not judged yet: the request is retried later
    assert isinstance(error, TransientError)
    assert error.code == "api_key_unreadable"
