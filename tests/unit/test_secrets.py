"""Endpoint API keys come from Secrets Manager or an SSM SecureString, never plain config."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from shared.errors import ConfigError
from shared.secrets import resolve_api_key


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
